"""Generate docs/support.md from real runs: every keras.applications model is built at its smallest
no-top input, planned and replayed against Keras (``pipeline.replay.verify``); layer types come
from the translator registry; VGG16's channel-level counts come from the plan.

    .venv/bin/python scripts/support_table.py [--models a,b] [--timeout 300] [--out docs/support.md]
    .venv/bin/python scripts/support_table.py --torchvision [--models resnet18,vgg11] [--timeout 900]

Each model runs in its own process (a hung or huge one cannot stop the table); a model that
fails shows its one-line error. ``--torchvision`` (needs ``pip install 'cnngraph[torch]'``) runs
only the torchvision classification CNNs (``torchvision:NAME``: seeded random weights, exported to
ONNX, replayed against onnxruntime) and rewrites only the torchvision section of the file; a Keras
run keeps the torchvision section the file has.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = (32, 75, 224)  # tried in order: the first input keras.applications accepts
TORCH_SIZES = (32, 64, 224)  # tried in order: the first input the torchvision model exports at
#: torchvision's classification CNNs in the table (``torchvision:NAME``).
TORCHVISION_MODELS = ("resnet18", "resnet50", "vgg11", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
                      "densenet121", "squeezenet1_1", "googlenet", "regnet_y_400mf", "convnext_tiny")
TORCH_HEADING = "## torchvision models"


def run_one(name: str) -> dict:
    """Build, plan and verify one model (in this process); a dict for the table."""
    from pipeline.errors import CnnGraphError
    from pipeline.model import ModelSpec, build
    from pipeline.plan import plan
    from pipeline.replay import verify

    last = ""
    for size in SIZES:
        t0 = time.perf_counter()
        try:
            model, graph = build(ModelSpec(name, (size, size, 3), include_top=False))
        except CnnGraphError as err:
            last = str(err)
            if "cannot be built with input shape" in last:
                continue
            return {"model": name, "input": size, "status": "unsupported", "error": last}
        p = plan(graph)
        res = verify(model, graph, samples=1)
        types = sorted({s.type for s in graph.layers})
        return {
            "model": name, "input": size, "status": "exact" if res.ok else "MISMATCH", "nodes": p.nodes,
            "edges": p.edges, "worst": res.worst, "seconds": round(time.perf_counter() - t0, 1), "types": types,
        }
    return {"model": name, "input": None, "status": "unsupported", "error": last}


def _short(err: Exception) -> str:
    """An error's message without the list of supported ONNX ops (the table has one line per model)."""
    import re

    return re.sub(r"; supported ONNX ops: [^;)]*", "", str(err))


def run_one_torch(name: str) -> dict:
    """Build ``torchvision:NAME``, export, plan and verify it against onnxruntime (in this process)."""
    from pipeline.errors import CnnGraphError
    from pipeline.model import ModelSpec, build
    from pipeline.plan import plan
    from pipeline.replay import verify
    from pipeline.torch import export_error, torchvision_module

    last = ""
    smaller: dict[int, str] = {}  # why the smaller inputs did not export
    for size in TORCH_SIZES:
        t0 = time.perf_counter()
        spec = ModelSpec(f"torchvision:{name}", (size, size, 3))
        try:
            model, graph = build(spec)
        except CnnGraphError as err:
            last = _short(err)
            if "cannot be exported with input shape" in last:
                smaller[size] = last
                continue
            return {"model": name, "input": size, "status": "unsupported", "error": last}
        p = plan(graph)
        res = verify(model, graph, samples=1)
        module, x = torchvision_module(spec)  # the same seeded weights: the exporter against torch itself
        return {
            "model": name, "input": size, "status": "exact" if res.ok else "MISMATCH", "nodes": p.nodes,
            "edges": p.edges, "worst": res.worst, "export": export_error(module, model.walked.proto, x),
            "seconds": round(time.perf_counter() - t0, 1), "smaller": smaller,
        }
    return {"model": name, "input": None, "status": "unsupported", "error": last}


def run_all(models: list[str], timeout: int, torch: bool = False) -> list[dict]:
    rows = []
    for name in models:
        cmd = [sys.executable, __file__, "--one-torch" if torch else "--one", name]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
            line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
            row = json.loads(line) if line.startswith("{") else {
                "model": name, "status": "error", "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}
        except subprocess.TimeoutExpired:
            row = {"model": name, "status": "not run", "error": f"verify took over {timeout} s on this machine"}
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    return rows


def channel_counts(name: str = "vgg16") -> dict:
    from pipeline.model import ModelSpec, build
    from pipeline.plan import plan

    _, graph = build(ModelSpec(name, (224, 224, 3), include_top=True))
    return {g: (p.nodes, p.edges) for g in ("neuron", "channel", "layer") for p in [plan(graph, None, g)]}


def render(rows: list[dict], counts: dict) -> str:
    from pipeline.layers import registry
    from pipeline.layers.channels import ChannelGraph  # noqa: F401  (channel rules live there)

    used = {t for r in rows for t in r.get("types", [])}
    out = [
        "# Support",
        "",
        "Generated by `scripts/support_table.py` from real runs; do not edit by hand.",
        "",
        "## keras.applications models",
        "",
        "Built with seeded random weights at the smallest no-top input keras.applications accepts "
        f"(tried {', '.join(map(str, SIZES))}), planned, and replayed over the edges against Keras "
        "(`pipeline.replay.verify`, 1 sample). Worst: the largest relative error of any layer.",
        "",
        "| model | input | status | nodes | edges | worst replay error | seconds |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "edges" in r:
            out.append(f"| {r['model']} | {r['input']} | {r['status']} | {r['nodes']:,} | {r['edges']:,} | "
                       f"{r['worst']:.1e} | {r['seconds']} |")
        else:
            out.append(f"| {r['model']} | {r.get('input') or '-'} | {r['status']} | | | {r.get('error', '')} | |")
    out += [
        "",
        "## Layer types",
        "",
        "Every Keras class with a translator (`pipeline/layers/registry.py`); `used` counts the models "
        "above that contain it. Anything else fails with `UnsupportedLayerError` naming the layer.",
        "",
        "| layer type | translator | used by models |",
        "|---|---|---:|",
    ]
    for t in registry.supported():
        n = sum(t in r.get("types", []) for r in rows)
        out.append(f"| {t} | {type(registry.get(t)).__name__} | {n} |")
    missing = sorted(used - set(registry.supported()))
    if missing:
        out += ["", "Unsupported types met: " + ", ".join(missing)]
    out += [
        "",
        "## Granularities: VGG16 at 224x224 with top",
        "",
        "From `cnngraph plan vgg16 --granularity G` (exact, nothing generated).",
        "",
        "| granularity | nodes | edges |",
        "|---|---:|---:|",
        *(f"| {g} | {n:,} | {e:,} |" for g, (n, e) in counts.items()),
        "",
    ]
    return "\n".join(out)


def render_torch(rows: list[dict]) -> str:
    """The torchvision section of docs/support.md (up to the next section)."""
    out = [
        TORCH_HEADING,
        "",
        "`torchvision:NAME` (docs/torch.md): built with seeded random weights (and random BatchNorm "
        f"statistics) at the smallest input that exports (tried {', '.join(map(str, TORCH_SIZES))}), "
        "exported to ONNX by `torch.onnx.export` (TorchScript exporter, opset 17, eval mode), planned, and "
        "replayed over the edges against onnxruntime (`pipeline.replay.verify`, 1 sample). Worst: the "
        "largest relative error of any layer; export: torch's output against onnxruntime's (the exporter "
        "itself). Generated by `scripts/support_table.py --torchvision`.",
        "",
        "| model | input | status | nodes | edges | worst replay error | export error | seconds |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "edges" in r:
            out.append(f"| {r['model']} | {r['input']} | {r['status']} | {r['nodes']:,} | {r['edges']:,} | "
                       f"{r['worst']:.1e} | {r['export']:.1e} | {r['seconds']} |")
        else:
            error = r.get("error", "").replace("|", "\\|")
            out.append(f"| {r['model']} | {r.get('input') or '-'} | {r['status']} | | | {error} | | |")
    notes = [f"- {r['model']} at {size}: {why}" for r in rows for size, why in r.get("smaller", {}).items()]
    if notes:
        out += ["", "Smaller inputs that did not export:", "", *notes]
    return "\n".join(out) + "\n"


def torch_section(text: str) -> str | None:
    """The torchvision section of a support.md text (heading to the next section), or None."""
    start = text.find(TORCH_HEADING + "\n")
    if start < 0:
        return None
    end = text.find("\n## ", start + len(TORCH_HEADING))
    return text[start:] if end < 0 else text[start : end + 1]


def with_torch_section(text: str, section: str | None) -> str:
    """text with its torchvision section replaced by section (appended when it has none)."""
    if section is None:
        return text
    old = torch_section(text)
    if old is None:
        return text.rstrip("\n") + "\n\n" + section
    return text.replace(old, section.rstrip("\n") + ("\n\n" if old.endswith("\n\n") else "\n"))


def application_classes() -> list[str]:
    """keras.applications constructors by their class names (ConvNeXtTiny, ResNet50, ...)."""
    from pipeline.model_files import quiet_tensorflow

    quiet_tensorflow()
    import keras

    return sorted(a for a in dir(keras.applications) if a[:1].isupper() and callable(getattr(keras.applications, a)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="Comma-separated names (default: every keras.applications model).")
    ap.add_argument("--timeout", type=int, default=None, help="Seconds per model (default 300; 900 with --torchvision).")
    ap.add_argument("--out", default=str(ROOT / "docs" / "support.md"))
    ap.add_argument("--torchvision", action="store_true",
                    help="Only the torchvision models (--models: torchvision names); rewrite only their section.")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--one-torch", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    if args.one_torch:
        print(json.dumps(run_one_torch(args.one_torch)))
        return
    out = Path(args.out)
    old = out.read_text() if out.exists() else ""
    if args.torchvision:
        models = args.models.split(",") if args.models else list(TORCHVISION_MODELS)
        rows = run_all(models, args.timeout or 900, torch=True)
        base = old or render([], {})
        out.write_text(with_torch_section(base, render_torch(rows)))
    else:
        models = args.models.split(",") if args.models else application_classes()
        rows = run_all(models, args.timeout or 300)
        out.write_text(with_torch_section(render(rows, channel_counts()), torch_section(old)))
    print(f"wrote {out}: {sum(r['status'] == 'exact' for r in rows)}/{len(rows)} models exact")


if __name__ == "__main__":
    main()
