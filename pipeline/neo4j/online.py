"""The online loader: columnar batches over Bolt, each committed with its checkpoint.

Each batch commits together with its checkpoint (a ``(:LoadState {model, run})`` node holding the
ids of done batches), so a rerun after a crash continues where it stopped and never duplicates a
node or relationship. Each batch also checks, in its transaction, that the checkpoint and the
``:Model`` still carry this load's run id and fingerprint: a load whose model was dropped or
replaced meanwhile stops instead of attaching relationships to another load's nodes (internal
node ids are reused). Entry point: :func:`pipeline.neo4j.loader.load` with ``mode="online"``.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import errors, schema
from pipeline.neo4j import db
from pipeline.neo4j import writers as parallel
from pipeline.neo4j.common import (
    LoadResult,
    finish,
    layer_files,
    layer_type,
    open_driver,
    replaced_error,
    run_batch,
)
from pipeline.progress import NULL, Progress

if TYPE_CHECKING:
    import neo4j

    from pipeline.neo4j.server import Connection

#: Rows per online transaction (measured on a 17 M-edge VGG16 slice; docs/graph-model.md).
BATCH_SIZE = 100_000
#: Which query form the online loader uses for relationships (see :func:`edge_batch`).
EDGE_QUERY = "id"


def _column(name: str, values: np.ndarray | pa.ChunkedArray, params: dict) -> str:
    """Put a column into ``params``; a scalar when constant. Returns the Cypher expression."""
    if isinstance(values, pa.ChunkedArray):
        uniq = pc.unique(values.cast(pa.string()) if pa.types.is_dictionary(values.type)
                         else values)
        if len(uniq) == 1:
            params[name] = uniq[0].as_py()
            return f"${name}"
        values = values.cast(pa.string()) if pa.types.is_dictionary(values.type) else values
        params[name] = values.to_pylist()
        return f"${name}[i]"
    params[name] = values.tolist()
    return f"${name}[i]"


def _extra_columns(table: pa.Table, names: tuple[str, ...], params: dict) -> list[str]:
    """Cypher properties for the coarse-granularity columns ``table`` has (lists stay lists)."""
    props = []
    for name in names:
        if name in table.column_names:
            params[name] = table.column(name).to_pylist()
            props.append(f"{name}: ${name}[i]")
    return props


def node_batch(table: pa.Table, model: str) -> tuple[str, dict]:
    """(query, parameters) creating the neurons of ``table`` (one layer type)."""
    params: dict = {"model": model, "id": table.column(schema.ID).to_numpy().tolist()}
    props = ["model: $model", "id: $id[i]"]
    props.append(f"layer: {_column('layer', table.column(schema.LAYER), params)}")
    for pos in schema.POSITION:
        arr = table.column(pos).to_numpy()
        absent = arr == -1
        if absent.all():
            continue
        if absent.any():
            params[pos] = [None if a else int(v) for v, a in zip(arr.tolist(), absent, strict=True)]
        else:
            params[pos] = arr.tolist()
        props.append(f"{pos}: ${pos}[i]")
    props.append(f"bias: {_column('bias', table.column(schema.BIAS).to_numpy(), params)}")
    props.append(f"activation: {_column('act', table.column(schema.ACTIVATION), params)}")
    props += _extra_columns(table, schema.EXTRA_NODE_COLUMNS, params)
    labels = db.neuron_labels(layer_type(table))
    query = (f"UNWIND range(0, size($id) - 1) AS i CREATE (n{labels} {{{', '.join(props)}}})")
    return query, params


class NeuronIds:
    """Neuron id -> the node's internal id, for one model, kept client-side in a numpy array.

    Relationships are then created by ``MATCH (a) WHERE id(a) = ...`` (a direct record lookup)
    instead of an index seek on ``(model, id)`` per endpoint: measured ~2x faster.
    """

    def __init__(self, base: int, size: int):
        self.base = base
        self.ids = np.full(max(size, 0), -1, np.int64)

    @classmethod
    def fetch(cls, session: neo4j.Session, manifest: dict, model: str) -> NeuronIds:
        """Read every neuron's internal id of ``model`` (one query per layer, two lists each)."""
        got = []
        for la in manifest["layers"]:
            if not la["nodes"]:
                continue
            record = session.run(
                "MATCH (n:Neuron {model: $model, layer: $layer}) "
                "RETURN collect(n.id) AS id, collect(id(n)) AS nid",
                model=model, layer=la["name"],
            ).single()
            got.append((np.asarray(record["id"], np.int64), np.asarray(record["nid"], np.int64)))
        if not got or not sum(len(i) for i, _ in got):
            return cls(0, 0)
        base = min(int(i.min()) for i, _ in got if len(i))
        top = max(int(i.max()) for i, _ in got if len(i))
        out = cls(base, top - base + 1)
        for ids, nids in got:
            out.ids[ids - base] = nids
        return out

    def __call__(self, neuron_ids: np.ndarray) -> np.ndarray:
        k = neuron_ids - self.base
        bad = (k < 0) | (k >= len(self.ids))
        nid = self.ids[np.where(bad, 0, k)] if len(self.ids) else np.full(len(k), -1)
        missing = bad | (nid < 0)
        if missing.any():
            raise errors.Neo4jError(
                f"neuron {int(neuron_ids[missing][0])} of a relationship is not in the database; "
                "drop the model and reload it (--replace)"
            )
        return nid


def edge_batch(table: pa.Table, model: str, nids: NeuronIds | None = None,
               form: str | None = None) -> tuple[str, dict]:
    """(query, parameters) creating the CONNECTS relationships of ``table``.

    ``form`` (default :data:`EDGE_QUERY`): ``"key"`` matches each endpoint by ``(model, id)``
    (an index seek); ``"id"`` by internal id per row; ``"distinct"`` looks up the batch's distinct
    endpoints once by internal id and indexes the list (edges are local: a 50k-row conv batch has
    a few thousand distinct endpoints). ``"id"`` and ``"distinct"`` need ``nids``.
    """
    form = form or EDGE_QUERY
    params: dict = {"w": table.column(schema.WEIGHT).to_numpy().tolist()}
    kind = _column("kind", table.column(schema.KIND), params)
    props = ", ".join(["weight: $w[i]", f"kind: {kind}", *_extra_columns(table, schema.EXTRA_EDGE_COLUMNS, params)])
    create = f"CREATE (a)-[:CONNECTS {{{props}}}]->(b)"
    src = table.column(schema.SOURCE).to_numpy()
    dst = table.column(schema.TARGET).to_numpy()
    if form == "key" or nids is None:
        params.update(model=model, s=src.tolist(), t=dst.tolist())
        return ("UNWIND range(0, size($w) - 1) AS i "
                "MATCH (a:Neuron {model: $model, id: $s[i]}) "
                "MATCH (b:Neuron {model: $model, id: $t[i]}) " + create), params
    if form == "id":
        params.update(s=nids(src).tolist(), t=nids(dst).tolist())
        return ("UNWIND range(0, size($w) - 1) AS i "
                "MATCH (a) WHERE id(a) = $s[i] MATCH (b) WHERE id(b) = $t[i] " + create), params
    if form != "distinct":
        raise errors.UsageError(f"unknown edge query form {form!r}")
    both = np.concatenate([src, dst])
    uniq, inverse = np.unique(both, return_inverse=True)
    params.update(n=nids(uniq).tolist(), s=inverse[:len(src)].tolist(),
                  t=inverse[len(src):].tolist())
    # The size check makes a missing node create nothing (caught by the count check) rather
    # than shift the list and connect the wrong neurons.
    return ("UNWIND $n AS x MATCH (v) WHERE id(v) = x "
            "WITH collect(v) AS v WHERE size(v) = size($n) "
            "UNWIND range(0, size($w) - 1) AS i "
            "WITH v[$s[i]] AS a, v[$t[i]] AS b, i " + create), params


def _prefetch(iterator, depth: int = 3):
    """Run ``iterator`` in a thread (Parquet reading and list building overlap the server)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = object()

    def work():
        try:
            for item in iterator:
                q.put(item)
            q.put(stop)
        except BaseException as err:  # handed to the consumer
            q.put(err)

    threading.Thread(target=work, daemon=True).start()
    while True:
        item = q.get()
        if item is stop:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def _retryable(err: BaseException) -> bool:
    from neo4j.exceptions import DriverError, Neo4jError, ServiceUnavailable, SessionExpired

    if isinstance(err, (ServiceUnavailable, SessionExpired, ConnectionError)):
        return True
    if isinstance(err, (Neo4jError, DriverError)):
        return err.is_retryable()
    return False


def write_batch(session: neo4j.Session, model: str, unit: int, query: str, params: dict, run: str,
                fingerprint: str, token: str | None = None) -> bool:
    """Run one batch and its checkpoint in one transaction. False if it was already done.

    ``run`` and ``fingerprint`` are the load's (:func:`load_online` passes them for every batch).

    The transaction first locks the checkpoint (so two loaders of one model cannot both write a
    batch) and checks that it and the ``:Model`` still belong to this load (``run``,
    ``fingerprint``; a drop deletes the checkpoint first, under the same lock): otherwise the
    internal node ids this load holds may be another model's, and it stops. With ``token`` it
    also stops when another loader took the checkpoint over (:func:`pipeline.neo4j.writers.claim`).
    """
    with session.begin_transaction() as tx:
        record = tx.run(
            "OPTIONAL MATCH (s:LoadState {model: $model}) SET s.writer = $unit "
            "WITH s OPTIONAL MATCH (m:Model {name: $model}) "
            "RETURN s IS NOT NULL AS checkpoint, s.run AS run, $unit IN s.done AS done, "
            "m.load_run AS model_run, m.fingerprint AS fingerprint, m.status AS status, "
            "s.owner AS owner",
            model=model, unit=unit,
        ).single()
        ours = record["model_run"] == run and record["fingerprint"] == fingerprint
        if not record["checkpoint"] and ours and record["status"] == db.COMPLETE:
            return False  # another loader of this same load finished it
        if not (record["checkpoint"] and record["run"] == run and ours
                and record["status"] != db.DROPPING):
            raise replaced_error(model, f"before batch {unit}")
        if token is not None and record["owner"] != token:
            raise parallel.taken_over_error(model, unit)
        if record["done"]:
            return False
        run_batch(tx, model, unit, query, params)
        tx.run("MATCH (s:LoadState {model: $model}) SET s.done = s.done + $unit",
               model=model, unit=unit).consume()
        tx.commit()
    return True


def load_online(dir: Path, manifest: dict, name: str, replace: bool = False,
                progress: Progress = NULL, *, conn: Connection | None = None,
                batch_size: int = BATCH_SIZE, retry_time: float = 60.0,
                writers: int | None = 1) -> LoadResult:
    """The online loader (see :func:`pipeline.neo4j.loader.load`): ``manifest`` and ``name`` are
    already validated (:func:`pipeline.neo4j.common.manifest_and_name`). ``writers`` (None:
    :func:`pipeline.neo4j.writers.default_writers`) concurrent transactions write batches that
    share no node (:mod:`pipeline.neo4j.writers`)."""
    if writers is not None and writers < 1:
        raise errors.UsageError(f"--writers must be at least 1, not {writers}")
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    conn, driver = open_driver(conn, progress)
    uri = conn.uri
    try:
        with db.translate(uri, f"online load of {name!r}"):
            db.apply_schema(driver)
            info = db.model_info(driver, name)
            fp = db.fingerprint(manifest)
            if info is not None and info.get("status") == db.DROPPING and not replace:
                raise errors.UsageError(db.dropping_message(name))
            if info is not None and replace:
                progress.message(f"dropping model {name!r} first (--replace)")
                db.drop_model(driver, name, progress)
                info = None
            if info is not None and info.get("fingerprint") != fp:
                raise errors.UsageError(
                    f"model {name!r} already holds a different extraction; pass --replace to "
                    "overwrite it or choose another --model-name"
                )
            if info is not None and info.get("status") == "complete":
                db.verify_counts(driver, manifest, name)
                return LoadResult(name, "online", int(manifest["nodes"]),
                                  int(manifest["edges"]), len(manifest["layers"]),
                                  time.perf_counter() - t0, skipped=True)
            if writers is None:
                writers = parallel.default_writers(driver)
                progress.message(f"{writers} writers (the server's cores, at most 4)")
            state = db.write_model(driver, manifest, name, "online", db.LOADING,
                                      {"batch_size": batch_size, "run": uuid.uuid4().hex})
            batch_size, run = int(state["batch_size"]), state["run"]
            first_edge = len(layer_files(dir, manifest, "node_files")) * parallel.UNIT
            with driver.session() as session:
                token, parts, done = parallel.claim(
                    session, name, run, writers, writers,
                    any(u >= first_edge for u in state["done"]))
        timings["prepare"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        total = int(manifest["nodes"]) + int(manifest["edges"])
        progress.start(total, "row", f"online load {name}")
        lock = threading.Lock()
        counts = {"written": 0, "skipped": len(done)}
        sessions: dict[int, neo4j.Session] = {}
        nids: NeuronIds | None = None
        stage = {"kind": "nodes"}

        def advance(rows: int) -> None:
            with lock:
                progress.advance(rows)

        def work(writer: int, unit: int, table: pa.Table) -> None:
            query, params = (node_batch(table, name) if stage["kind"] == "nodes"
                             else edge_batch(table, name, nids))
            if writer not in sessions:
                sessions[writer] = driver.session()
            if writers == 1:
                write, owner = write_batch, (run, fp, token)
            else:
                write, owner = parallel.write_parallel, (run, fp, token, writer)
            with lock:
                written = counts["written"]
            new = _run_with_retry(write, sessions[writer], name, unit, query, params, owner,
                                  retry_time, uri, written, progress, writers)
            with lock:
                counts["written" if new else "skipped"] += 1
                progress.advance(table.num_rows)

        try:
            for kind in ("nodes", "edges"):
                stage["kind"] = kind
                if kind == "edges" and EDGE_QUERY != "key":
                    t = time.perf_counter()
                    with db.translate(uri, f"online load of {name!r}"), driver.session() as s:
                        nids = NeuronIds.fetch(s, manifest, name)
                    timings["node_ids"] = time.perf_counter() - t
                parallel.run_rounds(
                    _prefetch(parallel.rounds(dir, manifest, kind, batch_size, parts, done)),
                    writers, work, advance)
        finally:
            for session in sessions.values():
                session.close()
        progress.finish()
        timings["write"] = time.perf_counter() - t1

        t2 = time.perf_counter()
        with db.translate(uri, f"online load of {name!r}"):
            finish(driver, manifest, name, "online", uri, run)
            driver.execute_query("MATCH (w:LoadWriter {model: $name, run: $run}) DELETE w",
                                 name=name, run=run)
        timings["verify"] = time.perf_counter() - t2
    finally:
        driver.close()
    return LoadResult(name, "online", int(manifest["nodes"]), int(manifest["edges"]),
                      len(manifest["layers"]), time.perf_counter() - t0, timings,
                      batches_done=counts["written"], batches_skipped=counts["skipped"])


def _run_with_retry(write, session, name, unit, query, params, owner, retry_time, uri, written,
                    progress, writers=1):
    """``write(session, name, unit, query, params, *owner)``, transient errors (deadlocks, a
    lost connection, a restarting server) retried with backoff for ``retry_time`` seconds."""
    deadline = time.monotonic() + retry_time
    delay = 0.2
    while True:
        try:
            return write(session, name, unit, query, params, *owner)
        except Exception as err:  # noqa: BLE001 - classified just below
            if not _retryable(err):
                with db.translate(uri, f"online load of {name!r}"):
                    raise
            if time.monotonic() + delay > deadline:
                hint = (f"; if it keeps failing with deadlocks, rerun with fewer --writers "
                        f"(now {writers})" if writers > 1 else "")
                raise errors.Neo4jUnavailable(
                    f"Neo4j at {uri} failed during the online load of {name!r} after "
                    f"{written} new batches ({type(err).__name__}: {err}); the load is "
                    f"checkpointed: start the server and rerun the same command to resume{hint}"
                ) from err
            progress.message(f"retrying batch {unit} in {delay:.1f}s: {type(err).__name__}")
            time.sleep(delay * (0.5 + np.random.random()))  # jitter: writers do not retry in step
            delay = min(delay * 2, 5.0)
