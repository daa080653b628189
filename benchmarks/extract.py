"""Extraction speed and memory, as ratios against a naive per-edge loop measured in the same run.

    python benchmarks/extract.py [--quick]

Measures: a naive per-edge Python loop on a small slice (rate extrapolated), the vectorised engine
to a null sink (count + checksum), and to Parquet (rate, bytes per edge on conv layers), plus peak
RSS of whole extraction runs in fresh processes for two model sizes. Machines are noisy: read the
ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def naive_conv_rate(graph, layer_name: str, seconds: float = 3.0) -> float:
    """Edges per second of a plain Python loop emitting one conv edge at a time."""
    spec = graph.layer(layer_name)
    (h, w, cin), (oh, ow, cout) = spec.inputs[0].shape, spec.output.shape
    kernel = spec.weights["kernel"]
    kh, kw = kernel.shape[:2]
    sh, sw = spec.config["strides"]
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    src_off, tgt_off = spec.inputs[0].offset, spec.output.offset
    n, t0 = 0, time.perf_counter()
    out: list = []
    for y in range(oh):
        for x in range(ow):
            for dy in range(kh):
                for dx in range(kw):
                    iy, ix = y * sh - ph + dy, x * sw - pw + dx
                    if not (0 <= iy < h and 0 <= ix < w):
                        continue
                    for ci in range(cin):
                        for co in range(cout):
                            out.append((src_off + (iy * w + ix) * cin + ci, tgt_off + (y * ow + x) * cout + co,
                                        float(kernel[dy, dx, ci, co]), "conv"))
                            n += 1
                    if len(out) > 100_000:
                        out.clear()
            if time.perf_counter() - t0 > seconds:
                return n / (time.perf_counter() - t0)
    return n / (time.perf_counter() - t0)


def child(args: argparse.Namespace) -> None:
    """Run one extraction in this process and print JSON with its rate and peak RSS."""
    from pipeline.extract import extract
    from pipeline.model import ModelSpec, build

    _, graph = build(ModelSpec("vgg16", (args.size, args.size, 3), include_top=False))
    res = extract(graph, args.out or None, layers=args.layers, workers=args.workers)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"edges": res.edges, "seconds": res.seconds, "rss": rss}))


def run_child(size: int, out: str | None, layers: str | None = None, workers: int = 1) -> dict:
    cmd = [sys.executable, __file__, "--child", "--size", str(size), "--workers", str(workers)]
    if out:
        cmd += ["--out", out]
    if layers:
        cmd += ["--layers", layers]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Small run (a few minutes).")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=32, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--layers", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    from pipeline.model import ModelSpec, build

    _, graph = build(ModelSpec("vgg16", (32, 32, 3), include_top=False))
    naive = naive_conv_rate(graph, "block1_conv2", 2.0 if args.quick else 5.0)
    print(f"naive per-edge loop: {naive / 1e6:.3f} M edges/s (block1_conv2, extrapolated)")

    null = run_child(32, None)
    null_rate = null["edges"] / null["seconds"]
    print(f"null sink, vgg16 32x32: {null['edges']:,} edges in {null['seconds']:.1f} s = {null_rate / 1e6:.1f} M edges/s, peak RSS {null['rss'] / 1e6:.0f} MB")

    tmp = Path(tempfile.mkdtemp(prefix="cnngraph-bench-"))
    try:
        conv_layers = "block1_conv1:block2_conv2" if args.quick else None
        pq = run_child(32, str(tmp / "pq"), layers=conv_layers)
        pq_rate = pq["edges"] / pq["seconds"]
        manifest = json.loads((tmp / "pq" / "manifest.json").read_text())
        conv_bytes = conv_edges = 0
        for entry in manifest["layers"]:
            if entry["type"] == "Conv2D" and not entry["boundary"]:
                conv_edges += entry["edges"]
                conv_bytes += sum((tmp / "pq" / f).stat().st_size for f in entry["edge_files"])
        bpe = conv_bytes / conv_edges
        print(f"parquet, vgg16 32x32 ({conv_layers or 'all layers'}): {pq['edges']:,} edges in {pq['seconds']:.1f} s = {pq_rate / 1e6:.1f} M edges/s; conv layers {bpe:.3f} bytes/edge; peak RSS {pq['rss'] / 1e6:.0f} MB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    big = 64 if args.quick else 128
    large = run_child(big, None)
    print(f"null sink, vgg16 {big}x{big}: {large['edges']:,} edges in {large['seconds']:.1f} s = {large['edges'] / large['seconds'] / 1e6:.1f} M edges/s, peak RSS {large['rss'] / 1e6:.0f} MB")
    peak = max(null["rss"], pq["rss"], large["rss"])
    print(f"cores: {os.cpu_count()}; numpy {np.__version__}")
    print(f"speedup vs naive: {null_rate / naive:.1f}x; parquet: {pq_rate / 1e6:.1f} M edges/s; {bpe:.2f} bytes/edge; peak RSS: {peak / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
