"""The online loader with several writers, against the real Neo4j server (no mocks).

A parallel load must equal the single-writer load, its concurrent batches must share no neuron,
and a SIGKILL at any point followed by a rerun must give every relationship exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from pipeline import schema
from pipeline.neo4j import db, loader, writers
from tests.test_neo4j_load import assert_round_trip, db_edges, duplicate_relationships, extract_tiny

ROOT = Path(__file__).resolve().parents[1]
BATCH = 150  # rows per batch: the model below makes ~60 batches


@pytest.fixture(scope="module")
def wide_dir(tmp_path_factory) -> Path:
    """Conv2D on 10x10x3 (5,184 edges), pooling, dense: enough batches for several rounds."""
    return extract_tiny(tmp_path_factory.mktemp("par") / "wide", 3, "wide", shape=(10, 10, 3),
                        filters=8)


def layer_counts(driver, model: str) -> dict:
    return db.layer_counts(driver, model)


def test_grid_cells_of_a_round_share_no_neuron(wide_dir):
    edges = pd.read_parquet(wide_dir / schema.EDGES_DIR)
    src, dst = edges[schema.SOURCE].to_numpy(), edges[schema.TARGET].to_numpy()
    for parts in (1, 2, 3, 4):
        rounds = writers.grid(src, dst, parts)
        assert len(rounds) == parts and all(len(cells) == parts for cells in rounds)
        rows = np.concatenate([c for cells in rounds for c in cells])
        assert np.array_equal(np.sort(rows), np.arange(len(src)))  # every edge exactly once
        for cells in rounds:
            for i, a in enumerate(cells):
                for b in cells[i + 1:]:
                    assert not set(src[a]) & set(src[b]) and not set(dst[a]) & set(dst[b])
    # the conv layer's diagonal round holds most edges, split evenly: the writers get equal work
    sizes = [len(c) for c in writers.grid(src, dst, 2)[0]]
    assert min(sizes) > 0.3 * len(src)


def test_parallel_load_equals_single_writer(neo4j_conn, neo4j_driver, wide_dir):
    for name in ("one", "many"):
        loader.drop(neo4j_conn, name)
    one = loader.load(wide_dir, "online", "one", conn=neo4j_conn, batch_size=BATCH, writers=1)
    many = loader.load(wide_dir, "online", "many", conn=neo4j_conn, batch_size=BATCH, writers=3)
    assert many.batches_done >= one.batches_done > 30
    assert layer_counts(neo4j_driver, "many") == layer_counts(neo4j_driver, "one")
    a, b = db_edges(neo4j_driver, "one"), db_edges(neo4j_driver, "many")
    for col in ("source", "target", "weight", "kind"):
        assert (a[col].to_numpy() == b[col].to_numpy()).all(), col
    assert_round_trip(neo4j_driver, wide_dir, "many")
    assert duplicate_relationships(neo4j_driver, "many") == 0
    records, _, _ = neo4j_driver.execute_query(
        "MATCH (w:LoadWriter) WHERE w.model IN ['one', 'many'] RETURN count(w) AS n")
    assert records[0]["n"] == 0  # the writers' checkpoints go with the load's
    for name in ("one", "many"):
        loader.drop(neo4j_conn, name)


KILLER = textwrap.dedent("""
    import os, signal, sys, threading
    import neo4j
    from pipeline.neo4j import loader
    from pipeline.neo4j.server import Connection
    uri, user, password, where, n, directory, batch = sys.argv[1:8]
    n = int(n)
    commits = [0]
    lock = threading.Lock()
    real_commit = neo4j.Transaction.commit
    def commit(self):
        with lock:
            commits[0] += 1
            mine = commits[0]
        if where == "before-commit" and mine == n:
            os.kill(os.getpid(), signal.SIGKILL)
        out = real_commit(self)
        if where == "after-commit" and mine == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    neo4j.Transaction.commit = commit
    loader.load(directory, "online", "pkilled", conn=Connection(uri, user, password),
                batch_size=int(batch), writers=3)
    print("finished")
""")


def done_batches(driver, model: str) -> int:
    records, _, _ = driver.execute_query(
        "OPTIONAL MATCH (s:LoadState {model: $m}) OPTIONAL MATCH (w:LoadWriter {model: $m}) "
        "WITH s, sum(size(w.done)) AS writers RETURN coalesce(size(s.done), 0) + writers AS n",
        m=model)
    return records[0]["n"]


def test_sigkill_during_parallel_load_then_resume(neo4j_conn, neo4j_driver, wide_dir):
    loader.drop(neo4j_conn, "pkilled")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(14)
    seen = []
    # Kill at a few random commits (counted from each run's start: later runs resume).
    for n in sorted(rng.sample(range(3, 14), 3)):
        where = rng.choice(["before-commit", "after-commit"])
        proc = subprocess.run(
            [sys.executable, "-c", KILLER, neo4j_conn.uri, neo4j_conn.username,
             neo4j_conn.password, where, str(n), str(wide_dir), str(BATCH)],
            env=env, capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        seen.append(done_batches(neo4j_driver, "pkilled"))
        assert duplicate_relationships(neo4j_driver, "pkilled") == 0
    assert seen == sorted(seen) and seen[0] > 0  # each run kept what the previous committed
    result = loader.load(wide_dir, "online", "pkilled", conn=neo4j_conn, batch_size=BATCH,
                         writers=2)
    assert result.batches_skipped == seen[-1] and result.batches_done > 0
    assert_round_trip(neo4j_driver, wide_dir, "pkilled")
    assert duplicate_relationships(neo4j_driver, "pkilled") == 0
    loader.drop(neo4j_conn, "pkilled")


def test_resume_keeps_the_partitioning(neo4j_conn, neo4j_driver, wide_dir):
    """A load begun with 3 writers and resumed with 1 (or more) keeps its 3 partitions."""
    loader.drop(neo4j_conn, "parts")
    info = loader.load(wide_dir, "online", "parts", conn=neo4j_conn, batch_size=BATCH, writers=3)
    assert info.batches_done > 0
    # a new model: leave it loading after its nodes and a few edge batches, then resume
    loader.drop(neo4j_conn, "parts")
    import neo4j

    real, calls = neo4j.Transaction.commit, [0]

    def commit(self):
        calls[0] += 1
        if calls[0] > 12:
            raise KeyboardInterrupt
        return real(self)

    neo4j.Transaction.commit = commit
    try:
        with pytest.raises(KeyboardInterrupt):
            loader.load(wide_dir, "online", "parts", conn=neo4j_conn, batch_size=BATCH, writers=3)
    finally:
        neo4j.Transaction.commit = real
    records, _, _ = neo4j_driver.execute_query(
        "MATCH (s:LoadState {model: 'parts'}) RETURN s.partitions AS p")
    assert records[0]["p"] == 3
    before = done_batches(neo4j_driver, "parts")
    result = loader.load(wide_dir, "online", "parts", conn=neo4j_conn, batch_size=BATCH, writers=1)
    assert result.batches_skipped == before > 0
    assert_round_trip(neo4j_driver, wide_dir, "parts")
    assert duplicate_relationships(neo4j_driver, "parts") == 0
    loader.drop(neo4j_conn, "parts")


def test_cli_writers(neo4j_conn, neo4j_driver, wide_dir, monkeypatch):
    from pipeline.cli import cli

    if os.environ.get("NEO4J_URI"):
        monkeypatch.setenv("NEO4J_PASSWORD", neo4j_conn.password)
    runner = CliRunner()
    out = runner.invoke(cli, ["load", str(wide_dir), "--writers", "2"])
    assert out.exit_code == 2 and "--writers belongs to --mode online" in out.output
    loader.drop(neo4j_conn, "cliwriters")
    out = runner.invoke(cli, ["load", str(wide_dir), "--mode", "online", "--writers", "2",
                               "--model-name", "cliwriters", "--batch-size", "500", "-s"])
    assert out.exit_code == 0, out.output
    assert "counts match" in out.output
    assert duplicate_relationships(neo4j_driver, "cliwriters") == 0
    assert_round_trip(neo4j_driver, wide_dir, "cliwriters")
    loader.drop(neo4j_conn, "cliwriters")


def test_default_writers_follow_the_servers_cores(neo4j_driver):
    """The server says how many cores its JVM has; the default is that, at most 4."""
    cores = writers.server_cores(neo4j_driver)
    assert isinstance(cores, int) and cores >= 1
    if not os.environ.get("NEO4J_URI"):  # the managed test server runs on this machine
        assert cores == len(os.sched_getaffinity(0))
    assert writers.default_writers(neo4j_driver) == min(4, cores)
