"""Analysis speed and memory, as ratios against baselines measured in the same run.

    python benchmarks/analyze.py [--quick]

Measures: the null-sink extraction of full VGG16 at 224x224 with its top (``--quick``: 64x64 without
it), then ``analyze`` of the same model with strength, PageRank and influence on one class (the
strongest path too) in one call, each in a fresh process (peak RSS: the largest of the process and
its workers); and scipy's sparse PageRank (the same formula, power iteration to convergence) on a
slice against ``analyze`` of that slice. Machines are noisy: read the ratios.
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

import numpy as np


def peak_rss() -> int:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) * 1024


def child(args: argparse.Namespace) -> None:
    """One job in this process; prints JSON with its seconds and peak RSS."""
    from pipeline.model import ModelSpec

    spec = ModelSpec("vgg16", (args.size, args.size, 3), include_top=args.top)
    if args.child == "null":
        from pipeline.extract import extract
        from pipeline.model_store import isolated_graph

        with isolated_graph(spec) as graph:
            res = extract(graph, None, workers=None)
        out = {"edges": res.edges, "seconds": res.seconds}
    else:
        from pipeline.analyze import analyze

        with tempfile.TemporaryDirectory(prefix="cnngraph-bench-") as tmp:
            t0 = time.perf_counter()
            res = analyze(spec, Path(tmp) / "a", klass=0 if args.top else None,
                          target=None if args.top else "block5_pool:0,0,0")
            out = {"edges": res.edges, "seconds": time.perf_counter() - t0, "passes": res.seconds}
    out["rss"] = peak_rss()
    print(json.dumps(out))


def run_child(job: str, size: int, top: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", job, "--size", str(size)] + (["--top"] if top else [])
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def scipy_ratio(layers: str) -> tuple[float, float, float]:
    """(scipy seconds, analyze seconds, worst relative difference) of PageRank on a VGG16 slice."""
    import pandas as pd
    import scipy.sparse as sp

    from pipeline.analyze import analyze, columns
    from pipeline.export import ModelSource, layer_range
    from pipeline.model import ModelSpec, build

    _, graph = build(ModelSpec("vgg16", (32, 32, 3), include_top=False))
    src = ModelSource(graph)
    chosen = layer_range(src, layers)
    with tempfile.TemporaryDirectory(prefix="cnngraph-bench-") as tmp:
        t0 = time.perf_counter()
        analyze(graph, Path(tmp) / "a", layers=layers, thresholds="0")
        ours = time.perf_counter() - t0
        got = pd.read_parquet(Path(tmp) / "a" / columns.NEURONS_FILE, columns=[columns.ID, columns.PAGERANK])
    t0 = time.perf_counter()
    s, t, w = [], [], []
    for la in chosen:
        for e in src.edges(la):
            s.append(e.source)
            t.append(e.target)
            w.append(np.abs(e.weight))
    n = graph.total_neurons
    m = sp.csr_matrix((np.concatenate(w).astype(np.float64), (np.concatenate(t), np.concatenate(s))), shape=(n, n))
    out = np.asarray(m.sum(axis=0)).ravel()
    pr = np.ones(n)
    for _ in range(100):
        q = np.divide(pr, out, out=np.zeros(n), where=out > 0)
        nxt = 0.15 + 0.85 * (m @ q)
        done = np.max(np.abs(nxt - pr)) < 1e-12
        pr = nxt
        if done:
            break
    theirs = time.perf_counter() - t0
    ids = got[columns.ID].to_numpy()
    diff = float(np.max(np.abs(got[columns.PAGERANK].to_numpy() - pr[ids]) / pr[ids]))
    return theirs, ours, diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="VGG16 at 64x64 without its top (a few minutes).")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=224, help=argparse.SUPPRESS)
    ap.add_argument("--top", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    size, top = (64, False) if args.quick else (224, True)
    what = "64x64 no top" if args.quick else "full"
    null = run_child("null", size, top)
    print(f"null sink, vgg16 {what}: {null['edges']:,} edges in {null['seconds']:.1f} s, peak RSS {null['rss'] / 1e6:.0f} MB")
    an = run_child("analyze", size, top)
    print(f"analyze, vgg16 {what}: {an['edges']:,} edges in {an['seconds']:.1f} s (passes: {an['passes']}), "
          f"peak RSS {an['rss'] / 1e6:.0f} MB")
    layers = "block1_conv1:block1_conv2" if args.quick else "block1_conv1:block2_conv2"
    theirs, ours, diff = scipy_ratio(layers)
    print(f"pagerank on vgg16 32x32 {layers}: scipy power iteration {theirs:.1f} s, analyze (all measures) "
          f"{ours:.1f} s, worst relative difference {diff:.1e}")
    print(f"analyze: vgg16 {what} {an['seconds']:.0f} s ({an['seconds'] / null['seconds']:.1f}x null sink); "
          f"peak RSS {an['rss'] / 1e6:.0f} MB; pagerank vs scipy {theirs / ours:.1f}x")


if __name__ == "__main__":
    main()
