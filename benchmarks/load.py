"""Load speed: bulk vs online vs a plain UNWIND baseline vs one transaction per row.

    python benchmarks/load.py [--quick] [--keep]

Extracts one CNN slice (default ~16 M edges: Conv2D 32 filters on 64x64x16 plus pooling and
a Dense layer; --quick: ~0.4 M edges), then on the MANAGED server (it replaces the database!):
bulk import with each input type (parquet, csv, csv.gz), the online loader, a plain
UNWIND-of-maps baseline (batches of 10k, MATCH by (model, id), no checkpoints, no prefetch) and
one auto-commit transaction per row on a sample (rate extrapolated). Prints store bytes per
relationship and the server's resident memory. The last line is the summary.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build(out: Path, quick: bool) -> Path:
    import keras

    from pipeline.extract import extract
    from pipeline.model import randomize_biases, walk

    keras.utils.set_random_seed(0)
    shape, filters = ((32, 32, 3), 16) if quick else ((64, 64, 16), 32)
    model = keras.Sequential([
        keras.Input(shape),
        keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name="conv"),
        keras.layers.MaxPooling2D(2, name="pool"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(8, name="fc"),
    ], name="bench")
    randomize_biases(model, 0)
    extract(walk(model), out)
    return out


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def wipe(drv) -> None:
    """Drop every model in bounded batches (relationships first)."""
    from pipeline.neo4j import graph

    for m in graph.models(drv):
        graph.drop_model(drv, m["name"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a ~0.4 M edge slice")
    ap.add_argument("--input-types", default="csv,csv.gz,parquet",
                    help="bulk input types to measure (comma-separated)")
    ap.add_argument("--sample", type=int, default=2000, help="rows for the per-row baseline")
    args = ap.parse_args()
    if os.environ.get("NEO4J_URI"):
        sys.exit("benchmarks/load.py needs the managed server (bulk import): unset NEO4J_URI")

    import psutil
    import pyarrow.parquet as pq

    from pipeline import schema
    from pipeline.neo4j import loader, server

    tmp = Path(tempfile.mkdtemp(prefix="cnngraph-bench-"))
    t = time.perf_counter()
    dir = build(tmp / "ext", args.quick)
    manifest = loader.read_manifest(dir)
    edges = int(manifest["edges"])
    print(f"extracted {manifest['nodes']:,} nodes, {edges:,} edges in "
          f"{time.perf_counter() - t:.1f}s", flush=True)
    managed = server.ManagedServer()

    bulk_rate = {}
    for input_type in args.input_types.split(","):
        r = loader.load(dir, "bulk", "benchbulk", replace=True, input_type=input_type)
        files_import = r.timings["write_files"] + r.timings["import"]
        bulk_rate[input_type] = edges / files_import
        print(f"bulk {input_type:8s}: write files {r.timings['write_files']:.1f}s, import "
              f"{r.timings['import']:.1f}s (incl. JVM start/stop), total with restart and "
              f"verification {r.seconds:.1f}s -> {bulk_rate[input_type]:,.0f} rels/s", flush=True)
    store = dir_bytes(managed.home / "data" / "databases" / "neo4j")
    print(f"store: {store:,} bytes = {store / edges:.1f} bytes per relationship "
          "(nodes included)")

    conn = server.connection()
    drv = server.driver(conn)
    wipe(drv)
    r = loader.load(dir, "online", "benchon", replace=True, conn=conn)
    online = edges / r.timings["write"]
    print(f"online: {r.timings['write']:.1f}s writing ({r.batches_done} batches) -> "
          f"{online:,.0f} rels/s (nodes included); verification {r.timings['verify']:.1f}s",
          flush=True)
    rss = psutil.Process(managed.pid()).memory_info().rss
    print(f"server RSS {rss / 2**20:,.0f} MiB (heap {managed.heap}, page cache "
          f"{managed.pagecache})")

    # Plain baseline: list of maps, 10k per transaction, same endpoints (new relationship type).
    t = time.perf_counter()
    for path in sorted((dir / schema.EDGES_DIR).rglob("*.parquet")):
        table = pq.read_table(path)
        table = table.set_column(3, schema.KIND, table.column(schema.KIND).cast("string"))
        for batch in table.to_batches(10_000):
            drv.execute_query(
                "UNWIND $rows AS row "
                "MATCH (a:Neuron {model: 'benchon', id: row.source}) "
                "MATCH (b:Neuron {model: 'benchon', id: row.target}) "
                "CREATE (a)-[:PLAIN {weight: row.weight, kind: row.kind}]->(b)",
                rows=batch.to_pylist(),
            )
    plain = edges / (time.perf_counter() - t)
    print(f"plain UNWIND of maps: {plain:,.0f} rels/s", flush=True)

    sample = pq.read_table(next((dir / schema.EDGES_DIR).rglob("*.parquet"))).slice(0, args.sample)
    rows = sample.to_pylist()
    t = time.perf_counter()
    for row in rows:
        drv.execute_query(
            "MATCH (a:Neuron {model: 'benchon', id: $source}) "
            "MATCH (b:Neuron {model: 'benchon', id: $target}) "
            "CREATE (a)-[:ROW {weight: $weight, kind: $kind}]->(b)", **row)
    per_row = len(rows) / (time.perf_counter() - t)
    print(f"one transaction per row: {per_row:,.0f} rels/s ({len(rows)} rows)", flush=True)
    wipe(drv)
    drv.close()
    loader.remove(tmp)
    best = max(bulk_rate, key=bulk_rate.get)
    print(f"load: bulk {bulk_rate[best]:,.0f} rels/s ({best}); online {online:,.0f} rels/s; "
          f"online vs plain UNWIND {online / plain:.1f}x; vs per-row {online / per_row:.1f}x")


if __name__ == "__main__":
    main()
