"""Several online writers at once: batches that share no node, and a checkpoint per writer.

Creating a relationship locks both its endpoints, so two transactions that share a neuron wait for
each other or deadlock. As in Neo4j's parallel Spark loader ("mix and batch"), the edges of one
row group are split into a P x P grid by source and target id range (quantiles of the rows, so a
conv layer's diagonal cells hold equal shares) and round r runs the P cells (i, (i + r) mod P)
at once: no two of them share a source range or a target range, hence no node. A layer's sources
and targets are different layers, and rounds never overlap. Neurons have no such conflict: each
node batch is a cell of its own.

Each writer appends its batch ids to its own ``(:LoadWriter {model, run, writer})`` node in the
batch's transaction; the shared ``:LoadState`` is only read, twice: before the batch and, after its
endpoints are locked, just before the commit (a drop or a takeover committed meanwhile is seen,
and no node a batch has locked can be deleted before it commits). A load first takes the
checkpoint over (:func:`claim`), waiting for the batches of any earlier loader of the same model.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import errors, schema
from pipeline.neo4j import db
from pipeline.neo4j.common import layer_files, replaced_error, run_batch

if TYPE_CHECKING:
    import neo4j

UNIT = 1_000_000  # batch id = file number * UNIT + batch number within the file

#: One batch of a cell: (batch id, rows); a cell's batches run in order on one writer.
Cell = list[tuple[int, pa.Table]]


def default_writers(driver: neo4j.Driver | None = None) -> int:
    """Writers to use when none are asked for: min(4, the server's CPU cores).

    The server's cores come from its JVM (``dbms.queryJmx``); where that is not allowed (a user
    without the privilege, a hosted service), this machine's cores are used instead.
    """
    return max(1, min(4, (server_cores(driver) if driver is not None else None)
                      or os.cpu_count() or 1))


def server_cores(driver: neo4j.Driver) -> int | None:
    """The CPU cores the Neo4j server's JVM sees, or None when the server does not say."""
    from neo4j.exceptions import Neo4jError

    try:
        records, _, _ = driver.execute_query(
            "CALL dbms.queryJmx('java.lang:type=OperatingSystem') YIELD attributes "
            "RETURN attributes.AvailableProcessors.value AS cores")
    except Neo4jError:
        return None
    cores = records[0]["cores"] if records else None
    return int(cores) if isinstance(cores, int) and cores > 0 else None


def grid(src: np.ndarray, dst: np.ndarray, parts: int) -> list[list[np.ndarray]]:
    """Row indices of the P x P cells, as rounds: ``out[r][i]`` = rows with source range i and
    target range (i + r) mod P (rows keep their order inside a cell; empty cells are empty)."""
    if parts == 1:
        return [[np.arange(len(src))]]
    q = np.linspace(0, 1, parts + 1)[1:-1]
    sb = np.searchsorted(np.quantile(src, q), src, side="right")
    tb = np.searchsorted(np.quantile(dst, q), dst, side="right")
    key = ((tb - sb) % parts) * parts + sb
    order = np.argsort(key, kind="stable")
    cuts = np.searchsorted(key[order], np.arange(1, parts * parts))
    cells = np.split(order, cuts)
    return [cells[r * parts:(r + 1) * parts] for r in range(parts)]


def rounds(dir: Path, manifest: dict, kind: str, batch_size: int, parts: int,
           done: set[int]) -> Iterator[tuple[list[Cell], int]]:
    """Yield (cells of one round, rows already done) for ``kind`` ("nodes" or "edges").

    Batch ids depend only on the data, ``batch_size`` and ``parts`` (with ``parts=1`` they are the
    single-writer loader's: each row group sliced in order), so a resumed load that keeps both
    finds its done batches. Done batches are left out of the cells.
    """
    node_files = layer_files(dir, manifest, "node_files")
    files = node_files + layer_files(dir, manifest, "edge_files")
    span = range(len(node_files)) if kind == "nodes" else range(len(node_files), len(files))
    for f in span:
        pf = pq.ParquetFile(files[f][1])
        k = 0
        for g in range(pf.num_row_groups):
            table = pf.read_row_group(g)  # memory: one row group at a time
            if kind == "nodes":
                groups = [[np.arange(table.num_rows)]]
            else:
                groups = grid(table.column(schema.SOURCE).to_numpy(),
                              table.column(schema.TARGET).to_numpy(), parts)
            for cells in groups:
                out, skipped = [], 0
                for rows in cells:
                    part = table if parts == 1 or kind == "nodes" else table.take(rows)
                    cell = []
                    for start in range(0, len(rows), batch_size):
                        unit, k = f * UNIT + k, k + 1
                        piece = part.slice(start, batch_size)
                        if unit in done:
                            skipped += piece.num_rows
                        elif kind == "nodes":
                            out.append([(unit, piece)])  # node batches never conflict
                        else:
                            cell.append((unit, piece))
                    if cell:
                        out.append(cell)
                yield out, skipped
            del table


def claim(session: neo4j.Session, model: str, run: str, writers: int, parts: int,
          resumed_edges: bool) -> tuple[str, int, set[int]]:
    """Take the model's checkpoint over for this process: (owner token, partitions, done ids).

    Locks every ``:LoadWriter`` of the model, then the ``:LoadState`` (so batches of an earlier
    loader of this load finish first and its later ones stop), stores the partition count on
    first use (a resumed load keeps it; one resumed from a single-writer checkpoint that already
    wrote edges keeps 1), removes writer nodes of other runs and makes this load's ``writers``.
    """
    token = uuid.uuid4().hex
    return token, *session.execute_write(_claim_tx, model, run, writers, parts, resumed_edges,
                                         token)


def _claim_tx(tx, model, run, writers, parts, resumed_edges, token):
    tx.run("MATCH (w:LoadWriter {model: $model}) SET w._lock = true REMOVE w._lock",
           model=model).consume()
    record = tx.run(
        "MATCH (s:LoadState {model: $model}) WHERE s.run = $run "
        "SET s.owner = $token, s.partitions = coalesce(s.partitions, $parts) "
        "RETURN s.partitions AS parts, s.done AS done",
        model=model, run=run, token=token, parts=1 if resumed_edges else parts).single()
    if record is None:
        raise replaced_error(model, "before its first batch")
    tx.run("MATCH (w:LoadWriter {model: $model}) WHERE w.run <> $run DELETE w",
           model=model, run=run).consume()
    tx.run("UNWIND range(0, $n - 1) AS k MERGE (w:LoadWriter {model: $model, run: $run, writer: k}) "
           "ON CREATE SET w.done = []", model=model, run=run, n=writers).consume()
    mine = tx.run("MATCH (w:LoadWriter {model: $model, run: $run}) UNWIND w.done AS u "
                  "RETURN collect(u) AS done", model=model, run=run).single()["done"]
    return int(record["parts"]), set(record["done"]) | set(mine)


def write_parallel(session: neo4j.Session, model: str, unit: int, query: str, params: dict,
                   run: str, fingerprint: str, token: str, writer: int) -> bool:
    """Run one batch and append it to writer ``writer``'s checkpoint, in one transaction.

    False when it was already done (a retry after a commit whose answer was lost). Raises
    Neo4jError when the model was dropped or replaced or another loader took the load over,
    checked before the batch and again after its nodes are locked, right before the commit.
    """
    check = ("MATCH (w:LoadWriter {model: $model, run: $run, writer: $writer}) SET w.lock = $unit "
             "WITH w OPTIONAL MATCH (s:LoadState {model: $model}) "
             "OPTIONAL MATCH (m:Model {name: $model}) "
             "WITH w, s, m, m IS NOT NULL AND m.load_run = $run AND m.fingerprint = $fp AS mine "
             "RETURN mine AND s IS NOT NULL AND s.run = $run AND m.status <> $dropping AS ours, "
             "mine AND s IS NULL AND m.status = $complete AS finished, "
             "s.owner = $token AS owner, $unit IN w.done AS done")
    keys = {"model": model, "run": run, "writer": writer, "unit": unit, "fp": fingerprint,
            "token": token, "dropping": db.DROPPING, "complete": db.COMPLETE}
    with session.begin_transaction() as tx:
        record = tx.run(check, keys).single()
        if record is None:  # the writer node went: a later load of another run removed it
            raise replaced_error(model, f"before batch {unit}")
        if record["finished"]:
            return False  # another loader of this same load finished it
        _owned(record, model, unit)
        if record["done"]:
            return False
        run_batch(tx, model, unit, query, params)
        record = tx.run(check, keys).single()  # fresh reads: what committed meanwhile
        _owned(record, model, unit)
        tx.run("MATCH (w:LoadWriter {model: $model, run: $run, writer: $writer}) "
               "SET w.done = w.done + $unit", keys).consume()
        tx.commit()
    return True


def _owned(record, model: str, unit: int) -> None:
    if not record["ours"]:
        raise replaced_error(model, f"at batch {unit}")
    if not record["owner"]:
        raise taken_over_error(model, unit)


def taken_over_error(model: str, unit: int) -> errors.Neo4jError:
    """The error of an online load whose checkpoint another loader of the same load took over."""
    return errors.Neo4jError(
        f"another online load of model {model!r} took this load over, so this one stopped at "
        f"batch {unit}; let that one finish (both load the same extraction)")


def run_rounds(items: Iterator[tuple[list[Cell], int]], writers: int,
               work: Callable[[int, int, pa.Table], None], skipped: Callable[[int], None]) -> None:
    """Run each round's cells on ``writers`` threads (``work(writer index, batch id, rows)`` for
    each batch of a cell, in order), a round only after the previous one has ended;
    ``skipped(rows)`` gets the rows of done batches. The first error stops the load (the other
    writers finish their current batch) and is raised."""
    local = threading.local()
    count = iter(range(writers))
    lock = threading.Lock()
    stop = threading.Event()

    def index() -> int:
        if not hasattr(local, "index"):
            with lock:
                local.index = next(count)
        return local.index

    def run(cell: Cell) -> None:
        try:
            for unit, table in cell:
                if stop.is_set():
                    return
                work(index(), unit, table)
        except BaseException:
            stop.set()
            raise

    with ThreadPoolExecutor(max_workers=writers, thread_name_prefix="cnngraph-writer") as pool:
        for cells, rows in items:
            skipped(rows)
            # Big cells first: a round lasts as long as its slowest writer.
            cells = sorted(cells, key=lambda c: -sum(t.num_rows for _, t in c))
            done, _ = wait([pool.submit(run, c) for c in cells], return_when=FIRST_EXCEPTION)
            for fut in done:
                if fut.exception() is not None:
                    stop.set()
                    raise fut.exception()
