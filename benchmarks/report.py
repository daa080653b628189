"""Report speed and memory, as a ratio against the analysis alone measured in the same run.

    python benchmarks/report.py [--quick]

Measures ``analyze`` of VGG16 at 224x224 with its top and one class as the target (``--quick``:
32x32, still with its top), then ``report`` of the same model and target (which runs that
analysis and draws the page), each in a fresh process (peak RSS: the largest of the process and
its workers). The report's own cost is the difference: reading the tables a batch at a time and
drawing. Machines are noisy: read the ratio.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_rss() -> int:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) * 1024


def child(args: argparse.Namespace) -> None:
    """One job in this process; prints JSON with its seconds and peak RSS."""
    from pipeline.model import ModelSpec

    spec = ModelSpec("vgg16", (args.size, args.size, 3), include_top=True)
    with tempfile.TemporaryDirectory(prefix="cnngraph-bench-") as tmp:
        t0 = time.perf_counter()
        if args.child == "analyze":
            from pipeline.analyze import analyze

            res = analyze(spec, Path(tmp) / "a", klass=0)
            out = {"edges": res.edges, "seconds": time.perf_counter() - t0, "parts": res.seconds}
        else:
            from pipeline.report import report

            rep = report(spec, Path(tmp) / "r", klass=0)
            out = {"seconds": time.perf_counter() - t0, "parts": rep.seconds, "pictures": len(rep.pictures),
                   "png_bytes": sum((Path(tmp) / "r" / p).stat().st_size for p in rep.pictures)}
    out["rss"] = peak_rss()
    print(json.dumps(out))


def run_child(job: str, size: int) -> dict:
    cmd = [sys.executable, __file__, "--child", job, "--size", str(size)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="VGG16 at 32x32 with its top (minutes, not hours).")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=224, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    size, what = (32, "quick (32x32 with top)") if args.quick else (224, "full")
    an = run_child("analyze", size)
    print(f"analyze, vgg16 {what}, class 0: {an['edges']:,} edges in {an['seconds']:.1f} s, "
          f"peak RSS {an['rss'] / 1e6:.0f} MB")
    rep = run_child("report", size)
    drawing = {k: round(v, 1) for k, v in rep["parts"].items() if k not in ("analysis", "total")}
    print(f"report, vgg16 {what}, class 0: {rep['seconds']:.1f} s (analysis {rep['parts']['analysis']:.1f} s; "
          f"{drawing}), {rep['pictures']} pictures ({rep['png_bytes'] / 1e6:.1f} MB), peak RSS {rep['rss'] / 1e6:.0f} MB")
    print(f"report: vgg16 {what} {rep['seconds']:.0f} s ({rep['seconds'] / an['seconds']:.1f}x analyze); "
          f"peak RSS {rep['rss'] / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
