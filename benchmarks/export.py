"""Export speed and memory, as ratios against baselines measured in the same run.

    python benchmarks/export.py [--quick]

Data: one slice of VGG16 (32x32 input, no top, seeded random weights): ``block5_conv1`` (4.2 M
edges), or ``block1_conv1`` (1.7 M) with --quick. Measures

* GraphML: ``write_graphml`` (edges made from the model on the fly) against
  ``networkx.write_graphml`` of the same graph (already built, so only its writing is timed);
* Neo4j -> NetworkX: ``to_networkx("neo4j:NAME")`` against the naive path (one row per edge
  through the driver, ``Result.to_df()``, ``networkx.from_pandas_edgelist``), on the slice loaded
  online into the managed server (started and stopped here when not already running);
* RSS growth per edge of the resulting DiGraph, in a fresh process.

The machine is shared and noisy: read the ratios. The last line sums it up.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "bench_export"


def _spec():
    from pipeline.model import ModelSpec

    return ModelSpec("vgg16", (32, 32, 3), include_top=False)


def rss_per_edge(layers: str) -> float:
    """Bytes of RSS per edge that the DiGraph adds (fresh process, graph kept alive)."""
    code = f"""
import gc, psutil, sys
sys.path.insert(0, {str(ROOT)!r})
from pipeline.export import ModelSource, to_networkx
from pipeline.model import ModelSpec, build
src = ModelSource(build(ModelSpec("vgg16", (32, 32, 3), include_top=False))[1])
to_networkx(src, layers="block1_pool:block1_pool"); gc.collect()  # warm up allocators and imports
before = psutil.Process().memory_info().rss
G = to_networkx(src, layers={layers!r}); gc.collect()
print((psutil.Process().memory_info().rss - before) / G.number_of_edges())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return float(out.stdout.strip().splitlines()[-1])


def naive_neo4j(driver, layers_ids: tuple[int, int]):
    import networkx as nx

    with driver.session() as session:
        df = session.run(
            "MATCH (b:Neuron {model: $m}) WHERE b.id >= $lo AND b.id < $hi "
            "MATCH (a)-[r:CONNECTS]->(b) RETURN a.id AS source, b.id AS target, r.weight AS weight, "
            "r.kind AS kind", m=MODEL, lo=layers_ids[0], hi=layers_ids[1]).to_df()
    return nx.from_pandas_edgelist(df, edge_attr=["weight", "kind"], create_using=nx.DiGraph)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller slice (1.7 M edges)")
    args = ap.parse_args()
    layer = "block1_conv1" if args.quick else "block5_conv1"
    layers = f"{layer}:{layer}"

    import networkx as nx

    from pipeline.export import ModelSource, to_networkx, write_graphml
    from pipeline.extract import extract
    from pipeline.model import build

    graph = build(_spec())[1]
    src = ModelSource(graph)
    tmp = Path(tempfile.mkdtemp(prefix="cnngraph-bench-export-"))
    try:
        t0 = time.perf_counter()
        res = write_graphml(src, tmp / "ours.graphml", layers=layers)
        ours = time.perf_counter() - t0
        edges = res.edges
        print(f"graphml (ours): {edges:,} edges in {ours:.2f} s = {edges / ours / 1e6:.2f} M edges/s, "
              f"{res.bytes / edges:.0f} bytes/edge")
        G = to_networkx(src, layers=layers)
        t0 = time.perf_counter()
        nx.write_graphml(G, tmp / "nx.graphml")
        theirs = time.perf_counter() - t0
        print(f"networkx.write_graphml: {theirs:.2f} s = {edges / theirs / 1e6:.2f} M edges/s")
        del G
        gc.collect()
        (tmp / "nx.graphml").unlink()

        # Neo4j
        from pipeline.neo4j import loader
        from pipeline.neo4j.server import ManagedServer, driver

        server = ManagedServer()
        started = not server.is_running() and not os.environ.get("NEO4J_URI")
        conn = server.start() if started else None
        try:
            from pipeline.neo4j.server import connection

            conn = conn or connection()
            extract(graph, tmp / "x", layers=layers)
            t0 = time.perf_counter()
            loader.load(tmp / "x", mode="online", model_name=MODEL, replace=True, conn=conn)
            print(f"(online load of the slice: {time.perf_counter() - t0:.1f} s)")
            t0 = time.perf_counter()
            H = to_networkx(f"neo4j:{MODEL}", conn=conn, layers=layers)
            fast = time.perf_counter() - t0
            assert H.number_of_edges() == edges
            del H
            gc.collect()
            spec = graph.layer(layer).output
            drv = driver(conn)
            try:
                t0 = time.perf_counter()
                N = naive_neo4j(drv, (spec.offset, spec.offset + spec.size))
                naive = time.perf_counter() - t0
                assert N.number_of_edges() == edges
                del N
            finally:
                drv.close()
            print(f"neo4j -> networkx (ours): {fast:.2f} s = {edges / fast / 1e3:.0f} k edges/s; "
                  f"naive: {naive:.2f} s = {edges / naive / 1e3:.0f} k edges/s")
            loader.drop(conn, MODEL)
        finally:
            if started:
                server.stop()
        per_edge = rss_per_edge(layers)
        print(f"DiGraph RSS: {per_edge:.0f} bytes/edge")
        print(f"export: graphml {edges / ours / 1e6:.1f} M edges/s ({theirs / ours:.1f}x networkx); "
              f"neo4j->networkx {edges / fast / 1e3:.0f} k edges/s ({naive / fast:.1f}x naive); "
              f"{per_edge:.0f} bytes/edge")
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
