"""Load speed: bulk vs online vs a plain UNWIND baseline vs one transaction per row.

    CNNGRAPH_HOME=/tmp/x CNNGRAPH_NEO4J_PORT=17695 python benchmarks/load.py [--dir EXTRACTION]
        [--quick] [--input-types csv,parquet] [--plain-rows 500000] [--sample 2000]
        [--writers N] [--kills 20]

Uses an extracted slice (default: extracts VGG16 at 32x32x3, no top, layers
block1_pool:block2_conv1 = 114,688 neurons and 17.4 M relationships; --quick: a 0.47 M-edge toy
model; --dir: an existing extraction), then on the MANAGED server (it replaces the database!
point CNNGRAPH_HOME at a scratch home): bulk import with each input type, the online loader, a
plain UNWIND-of-row-maps baseline (batches of 10k, MATCH by (model, id), no checkpoints, no
prefetch; on the first --plain-rows edges, rate extrapolated) and one auto-commit transaction per
row (--sample rows); the online loader with 1 and with --writers N writers (default min(4, the
server's cores)); then --kills SIGKILL trials: a subprocess loading the 0.47 M-edge toy model with N
writers is killed once it has committed a random number of batches, the load is rerun, and the counts per layer and the absence
of duplicate (source, target) relationships are checked. Prints where the bulk time goes, store
bytes per relationship and the server's memory. The last line is the summary.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SLICE = ("vgg16", (32, 32, 3), "block1_pool:block2_conv1")


def build(out: Path, quick: bool) -> Path:
    import keras

    from pipeline.extract import extract
    from pipeline.model import randomize_biases, walk

    keras.utils.set_random_seed(0)
    if quick:
        model = keras.Sequential([
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(8, name="fc"),
        ], name="bench")
        randomize_biases(model, 0)
        extract(walk(model), out)
        return out
    import subprocess

    name, shape, layers = SLICE
    subprocess.run([sys.executable, "-m", "pipeline", "extract", name, "--input-shape",
                    ",".join(map(str, shape)), "--no-top", "--layers", layers, "--out", str(out)],
                   check=True, cwd=Path(__file__).resolve().parents[1])
    return out


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def edge_rows(dir: Path, limit: int):
    """The first ``limit`` edges as a pyarrow table (kind as plain strings)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline import schema

    parts, n = [], 0
    for path in sorted((dir / schema.EDGES_DIR).rglob("*.parquet"), reverse=True):
        pf = pq.ParquetFile(path)
        for g in range(pf.num_row_groups):
            t = pf.read_row_group(g).slice(0, limit - n)
            t = t.set_column(3, schema.KIND, t.column(schema.KIND).cast(pa.string()))
            parts.append(t)
            n += t.num_rows
            if n >= limit:
                return pa.concat_tables(parts)
    return pa.concat_tables(parts)


def admin_seconds(log: str) -> float:
    """neo4j-admin's own import time from its log ("IMPORT DONE in 1m 17s 999ms")."""
    m = re.findall(r"IMPORT DONE in (?:(\d+)m )?(\d+)s (\d+)ms", log)[-1]
    return int(m[0] or 0) * 60 + int(m[1]) + int(m[2]) / 1000


KILLED = """
import sys
from pipeline.neo4j import loader
loader.load(sys.argv[1], "online", sys.argv[2], writers=int(sys.argv[3]), batch_size=int(sys.argv[4]),
            check=False)
"""


def done_batches(drv, model: str) -> int:
    """Batches committed so far by an online load of ``model`` (its checkpoints)."""
    records, _, _ = drv.execute_query(
        "OPTIONAL MATCH (s:LoadState {model: $m}) OPTIONAL MATCH (w:LoadWriter {model: $m}) "
        "WITH s, sum(size(w.done)) AS writers RETURN coalesce(size(s.done), 0) + writers AS n", m=model)
    return int(records[0]["n"] or 0)


def kill_trials(dir: Path, trials: int, writers: int, batch_size: int, drv) -> tuple[int, int]:
    """SIGKILL a loading subprocess once it has committed a random number of batches, rerun the
    load, check it. Returns (trials exact, trials killed mid-load)."""
    from pipeline.neo4j import loader

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-c", KILLED, str(dir)]
    total = loader.load(dir, "online", "benchkillfull", writers=writers, batch_size=batch_size,
                        check=False).batches_done
    loader.drop(None, "benchkillfull")
    rng = random.Random(14)
    exact = killed_count = 0
    for trial in range(trials):
        name = f"benchkill{trial}"
        target = rng.randint(1, max(1, total - 1))
        proc = subprocess.Popen([*cmd, name, str(writers), str(batch_size)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and done_batches(drv, name) < target:
            time.sleep(0.05)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        try:
            r = loader.load(dir, "online", name, writers=writers, batch_size=batch_size,
                            check=False)
            records, _, _ = drv.execute_query(
                "MATCH (a:Neuron {model: $m})-[r:CONNECTS]->(b) WITH a, b, count(r) AS n "
                "RETURN count(*) AS pairs, sum(n) AS rels, sum(CASE WHEN n > 1 THEN 1 END) AS dups",
                m=name)
            ok = not records[0]["dups"] and records[0]["rels"] == r.relationships
        except Exception as err:  # noqa: BLE001 - reported, counted as not exact
            print(f"  trial {trial}: {type(err).__name__}: {err}", flush=True)
            ok = False
        loader.drop(None, name)
        exact += ok
        killed_count += killed
        print(f"  kill trial {trial}: {'killed after batch ' + str(target) if killed else 'finished before the kill'}"
              f" of {total}, resumed {'exact' if ok else 'WRONG'}", flush=True)
    return exact, killed_count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, help="an existing extraction folder to load")
    ap.add_argument("--quick", action="store_true", help="a 0.47 M-edge toy slice")
    ap.add_argument("--input-types", default="csv",
                    help="bulk input types to measure (comma-separated: csv,csv.gz,parquet)")
    ap.add_argument("--plain-rows", type=int, default=500_000,
                    help="edges for the plain UNWIND baseline")
    ap.add_argument("--sample", type=int, default=2000, help="rows for the per-row baseline")
    ap.add_argument("--writers", type=int, default=None,
                    help="online writers (default min(4, cores))")
    ap.add_argument("--kills", type=int, default=20, help="SIGKILL trials")
    args = ap.parse_args()
    if os.environ.get("NEO4J_URI"):
        sys.exit("benchmarks/load.py needs the managed server (bulk import): unset NEO4J_URI")

    import psutil

    from pipeline.neo4j import loader, server, writers

    tmp = Path(tempfile.mkdtemp(prefix="cnngraph-bench-"))
    t = time.perf_counter()
    dir = args.dir or build(tmp / "ext", args.quick)
    manifest = loader.read_manifest(dir)
    edges = int(manifest["edges"])
    print(f"slice {dir}: {manifest['nodes']:,} nodes, {edges:,} edges "
          f"({time.perf_counter() - t:.1f}s to extract or read)", flush=True)
    managed = server.ManagedServer()
    print(f"server: heap {managed.heap}, page cache {managed.pagecache}", flush=True)

    bulk_rate, end_rate, admin_rate = {}, {}, {}
    for input_type in args.input_types.split(","):
        r = loader.load(dir, "bulk", "benchbulk", replace=True, input_type=input_type,
                        work_dir=tmp)
        files_import = r.timings["write_files"] + r.timings["import"]
        bulk_rate[input_type] = edges / files_import
        end_rate[input_type] = edges / r.seconds
        split = ", ".join(f"{k} {v:.1f}s" for k, v in r.timings.items())
        print(f"bulk {input_type:8s}: {split} (import = server stop + neo4j-admin + start); "
              f"files + import {files_import:.1f}s -> {bulk_rate[input_type]:,.0f} rels/s; "
              f"end to end {r.seconds:.1f}s -> {edges / r.seconds:,.0f} rels/s", flush=True)
        log = (managed.home / "logs" / "import.log").read_text(errors="replace")
        stages = [line.strip() for line in log.splitlines()
                  if "COMPLETED in" in line or "IMPORT DONE" in line]
        print("  neo4j-admin: " + "; ".join(stages), flush=True)
        admin_rate[input_type] = edges / admin_seconds(log)
        command = r.timings["import_neo4j_admin"]
        print(f"  neo4j-admin alone: {admin_seconds(log):.1f}s import ({admin_rate[input_type]:,.0f} rels/s), "
              f"{command:.1f}s the whole command (JVM included); end to end = "
              f"{end_rate[input_type] / admin_rate[input_type]:.2f}x the import's rate, "
              f"{command / r.seconds:.2f}x the command's", flush=True)
    store = dir_bytes(managed.home / "data" / "databases" / "neo4j")
    print(f"store after bulk: {store:,} bytes = {store / edges:.1f} bytes per relationship "
          "(nodes and indexes included)", flush=True)

    managed.reset_database(restart=True)  # faster than dropping 17 M relationships
    conn = server.connection()
    drv = server.driver(conn, notifications_min_severity="OFF")
    r = loader.load(dir, "online", "benchon", replace=True, conn=conn)
    online = edges / r.timings["write"]
    print(f"online: {r.timings['write']:.1f}s writing ({r.batches_done} batches of "
          f"{loader.BATCH_SIZE:,}, query form {loader.EDGE_QUERY!r}, internal ids fetched in "
          f"{r.timings.get('node_ids', 0):.1f}s) -> {online:,.0f} rels/s (nodes included); "
          f"verification {r.timings['verify']:.1f}s", flush=True)
    rss = psutil.Process(managed.pid()).memory_info().rss
    store = dir_bytes(managed.home / "data" / "databases" / "neo4j")
    tx = dir_bytes(managed.home / "data" / "transactions" / "neo4j")
    print(f"after online: store {store / edges:.1f} bytes per relationship, transaction logs "
          f"{tx / 2**20:,.0f} MiB; server RSS {rss / 2**20:,.0f} MiB", flush=True)

    # Plain baseline: list of maps, 10k per transaction, endpoints by (model, id) key.
    plain_table = edge_rows(dir, args.plain_rows)
    t = time.perf_counter()
    for batch in plain_table.to_batches(10_000):
        drv.execute_query(
            "UNWIND $rows AS row "
            "MATCH (a:Neuron {model: 'benchon', id: row.source}) "
            "MATCH (b:Neuron {model: 'benchon', id: row.target}) "
            "CREATE (a)-[:PLAIN {weight: row.weight, kind: row.kind}]->(b)",
            rows=batch.to_pylist(),
        )
    plain = plain_table.num_rows / (time.perf_counter() - t)
    print(f"plain UNWIND of maps (10k rows/tx, {plain_table.num_rows:,} edges): "
          f"{plain:,.0f} rels/s", flush=True)

    rows = edge_rows(dir, args.sample).to_pylist()
    t = time.perf_counter()
    for row in rows:
        drv.execute_query(
            "MATCH (a:Neuron {model: 'benchon', id: $source}) "
            "MATCH (b:Neuron {model: 'benchon', id: $target}) "
            "CREATE (a)-[:ROW {weight: $weight, kind: $kind}]->(b)", **row)
    per_row = len(rows) / (time.perf_counter() - t)
    print(f"one transaction per row: {per_row:,.0f} rels/s ({len(rows)} rows)", flush=True)
    n = args.writers or writers.default_writers(drv)
    drv.close()

    managed.reset_database(restart=True)
    conn = server.connection()
    drv = server.driver(conn, notifications_min_severity="OFF")
    r = loader.load(dir, "online", "benchpar", replace=True, conn=conn, writers=n)
    parallel = edges / r.timings["write"]
    print(f"online, {n} writers: {r.timings['write']:.1f}s writing ({r.batches_done} batches) -> "
          f"{parallel:,.0f} rels/s (nodes included; {parallel / online:.2f}x one writer, "
          f"{parallel / plain:.1f}x plain UNWIND); end to end {r.seconds:.1f}s -> "
          f"{edges / r.seconds:,.0f} rels/s", flush=True)

    managed.reset_database(restart=True)
    toy = build(tmp / "toy", quick=True)
    exact, killed = kill_trials(toy, args.kills, n, 20_000, drv) if args.kills else (0, 0)
    drv.close()
    managed.reset_database(restart=True)
    loader.remove(tmp)
    best = max(end_rate, key=end_rate.get)
    print(f"  (also: online 1 writer {online:,.0f} rels/s, {online / plain:.1f}x plain UNWIND; "
          f"per-row {per_row:,.0f} rels/s)", flush=True)
    print(f"load: bulk {end_rate[best]:,.0f} rels/s end to end ({end_rate[best] / admin_rate[best]:.2f}x "
          f"neo4j-admin alone); online {parallel:,.0f} rels/s ({parallel / plain:.1f}x plain UNWIND, "
          f"{n} writers); kills {exact}/{args.kills} resumed exact ({killed} killed mid-load)")


if __name__ == "__main__":
    main()
