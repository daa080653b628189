"""GDS on a bulk-loaded model: projection rate, PageRank and weighted degree, heap; PageRank against
scipy's sparse power iteration of the same formula on the same edges.

    CNNGRAPH_HOME=/tmp/x CNNGRAPH_NEO4J_PORT=17697 CNNGRAPH_NEO4J_HTTP_PORT=17698 \\
        python benchmarks/gds.py [--layers A:B] [--quick] [--dir EXTRACTION]

Extracts VGG16 at 32x32 without its top (247 M relationships; --layers a slice; --quick: block 5,
12.6 M), bulk-loads it into the MANAGED server (it replaces the database: point CNNGRAPH_HOME at a
scratch home; the model stays there), projects it (cypher/gds_project.cypher), runs PageRank (as many iterations as the
graph is deep, no tolerance: the exact fixed point) and weighted degree, and reads the heap GDS
reports for the projection. scipy runs the same number of iterations of the same formula on the
Parquet edges. The last line is the summary.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODEL = "gdsbench"


def extract(out: Path, layers: str | None) -> Path:
    import subprocess

    cmd = [sys.executable, "-m", "pipeline", "extract", "vgg16", "--input-shape", "32,32,3", "--no-top",
           "--out", str(out), "-s"]
    subprocess.run(cmd + (["--layers", layers] if layers else []), check=True, cwd=Path(__file__).resolve().parents[1])
    return out


def scipy_pagerank(folder: Path, iterations: int) -> tuple[float, int]:
    """Seconds of ``iterations`` sparse power-iteration steps of GDS's formula on |w| (matrix
    build excluded), and the edge count."""
    import numpy as np
    import pyarrow.dataset as ds
    import scipy.sparse as sp

    from pipeline import schema

    table = ds.dataset(folder / schema.EDGES_DIR, format="parquet").to_table(
        columns=[schema.SOURCE, schema.TARGET, schema.WEIGHT])
    src, dst = table.column(schema.SOURCE).to_numpy(), table.column(schema.TARGET).to_numpy()
    w = np.abs(table.column(schema.WEIGHT).to_numpy().astype(np.float64))
    n = int(max(src.max(), dst.max())) + 1
    out = np.bincount(src, w, n)
    m = sp.csr_matrix((w / out[src], (dst, src)), shape=(n, n))
    pr = np.full(n, 0.15)
    t0 = time.perf_counter()
    for _ in range(iterations):
        pr = 0.15 + 0.85 * (m @ pr)
    return time.perf_counter() - t0, len(w)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", default=None)
    ap.add_argument("--quick", action="store_true", help="block 5 only (12.6 M relationships)")
    ap.add_argument("--dir", type=Path, default=None, help="an existing extraction to load")
    args = ap.parse_args()
    from pipeline.neo4j import gds, loader, server
    from pipeline.neo4j.query import run_query
    from pipeline.plan import human_bytes

    layers = "block5_conv1:block5_pool" if args.quick else args.layers
    with tempfile.TemporaryDirectory(prefix="cnngraph-gds-") as tmp:
        folder = args.dir or extract(Path(tmp) / "ext", layers)
        conn = server.connection()
        t0 = time.perf_counter()
        loader.load(folder, "bulk", MODEL, replace=True, conn=server.connection())
        print(f"bulk load {time.perf_counter() - t0:.1f} s", flush=True)
        conn = server.connection()
        gds.drop(conn, MODEL)
        mem = gds.memory(conn, MODEL)
        info = gds.project(conn, MODEL)
        rels, seconds = info["relationships"], info["millis"] / 1000
        _, rows = run_query("CALL gds.graph.list($g) YIELD sizeInBytes RETURN sizeInBytes", {"g": MODEL}, conn=conn)
        heap = int(rows[0][0])
        print(f"projection: {rels:,} relationships in {seconds:.1f} s ({rels / seconds / 1e6:.2f} M rels/s); "
              f"GDS reports {human_bytes(heap)}, cnngraph's figure {human_bytes(mem['needed_bytes'])} "
              f"({heap / max(rels, 1):.1f} B/relationship)", flush=True)
        depth = len(run_query("MATCH (l:Layer {model: $m}) RETURN l.name", {"m": MODEL}, conn=conn)[1])
        t0 = time.perf_counter()
        gds.pagerank(conn, MODEL, iterations=depth + 1, tolerance=0.0)
        pr_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        gds.strength(conn, MODEL)
        degree_seconds = time.perf_counter() - t0
        gds.drop(conn, MODEL)
        scipy_seconds, _ = scipy_pagerank(folder, depth + 1)
        print(f"pagerank ({depth + 1} iterations, streamed back): {pr_seconds:.1f} s; scipy {scipy_seconds:.1f} s; "
              f"weighted degree in+out {degree_seconds:.1f} s", flush=True)
    print(f"gds: project {rels / seconds / 1e6:.2f} M rels/s; pagerank {pr_seconds:.1f} s "
          f"({pr_seconds / scipy_seconds:.1f}x scipy); heap {heap / (1 << 30):.2f} GiB")


if __name__ == "__main__":
    main()
