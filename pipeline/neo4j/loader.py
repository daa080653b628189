"""Load an extraction folder into Neo4j: ``load(dir, mode="bulk"|"online", model_name)``; ``drop``.

* **bulk** (:mod:`pipeline.neo4j.bulk`) rewrites the Parquet dataset into neo4j-admin import files
  (one file at a time, bounded memory), stops the managed server, runs ``neo4j-admin database
  import full`` (which replaces the whole database), starts the server and applies the schema.
  Managed server only.
* **online** (:mod:`pipeline.neo4j.online`) sends columnar batches over Bolt, each committed with
  its checkpoint, so a rerun after a crash continues where it stopped; any server. Several
  writers (``writers=N``) run batches that share no node, each with its own checkpoint.

Both first check the extraction's files against the sha256 sums in its manifest
(:func:`pipeline.dataset.check_files`; ``check=False`` skips it), before anything is written.

Both end by counting neurons and relationships per layer in the database and comparing them with
the manifest (:class:`~pipeline.errors.LoadMismatch` when they differ).

This module only dispatches; the names the loaders share (:class:`LoadResult`,
:func:`read_manifest`, ...) live in :mod:`pipeline.neo4j.common` and are importable from here too.
"""

from __future__ import annotations

from pathlib import Path

from pipeline import dataset, errors
from pipeline.neo4j import bulk, db
from pipeline.neo4j.common import (
    INPUT_TYPE,
    MODES,
    LoadResult,
    finish,
    layer_files,
    layer_type,
    managed_only,
    manifest_and_name,
    open_driver,
    read_manifest,
    remove,
    temp_dir,
)
from pipeline.neo4j.online import BATCH_SIZE, EDGE_QUERY, NeuronIds, edge_batch, load_online, node_batch
from pipeline.neo4j.server import Connection
from pipeline.progress import NULL, Progress

__all__ = [
    "BATCH_SIZE", "EDGE_QUERY", "INPUT_TYPE", "MODES", "LoadResult", "NeuronIds", "drop",
    "edge_batch", "finish", "layer_files", "layer_type", "load", "load_online", "managed_only",
    "manifest_and_name", "node_batch", "open_driver", "read_manifest", "remove", "temp_dir",
]


def load(
    dir: str | Path,
    mode: str = "bulk",
    model_name: str | None = None,
    replace: bool = False,
    progress: Progress = NULL,
    *,
    conn: Connection | None = None,
    batch_size: int = BATCH_SIZE,
    retry_time: float = 60.0,
    input_type: str = INPUT_TYPE,
    work_dir: str | Path | None = None,
    check: bool = True,
    writers: int | None = 1,
) -> LoadResult:
    """Load the extraction folder ``dir`` into Neo4j as model ``model_name``.

    Parameters
    ----------
    dir : extraction folder (``manifest.json`` with ``"complete": true``).
    mode : ``"bulk"`` (neo4j-admin import into the managed server; replaces the database) or
        ``"online"`` (Bolt batches; any server; resumable and idempotent).
    model_name : name of the ``:Model`` (default: the Keras model's name); must match
        ``db.NAME_PATTERN``.
    replace : bulk: allow discarding everything in the database; online: drop an existing model
        of the same name first.
    conn : a ``pipeline.neo4j.server.Connection`` (default: ``server.connection()``).
    batch_size : rows per online transaction. A resumed load keeps its first batch size.
    retry_time : seconds an online batch keeps retrying transient errors before giving up.
    input_type : bulk import files: ``"parquet"``, ``"csv"`` or ``"csv.gz"``.
    work_dir : where bulk import files are written (default: the system temp folder).
    check : first check every listed file against the manifest's sha256 (nothing is written
        when one is missing or changed).
    writers : online: concurrent transactions (None: ``writers.default_writers()``, min(4, the server's
        cores)); their batches share no node (:mod:`pipeline.neo4j.writers`). A resumed load
        keeps its first partitioning.

    Returns
    -------
    LoadResult with counts and timings.

    Raises
    ------
    UsageError (bad name or mode, bulk onto a non-empty database without ``replace``, a model
    being dropped), OutputError (incomplete or damaged extraction), Neo4jUnavailable (server
    down; rerun to resume), Neo4jError (also: the model was dropped or replaced during an online
    load), LoadMismatch (database counts differ from the manifest).
    """
    if mode not in MODES:
        raise errors.UsageError(f"unknown load mode {mode!r}; use one of {', '.join(MODES)}")
    dir = Path(dir)
    manifest, name = manifest_and_name(dir, model_name)
    if check:
        dataset.check_files(dir, manifest, progress)
    if mode == "bulk":
        return bulk.load_bulk(dir, manifest, name, replace, progress, conn=conn,
                              input_type=input_type, work_dir=work_dir)
    return load_online(dir, manifest, name, replace, progress, conn=conn,
                       batch_size=batch_size, retry_time=retry_time, writers=writers)


def drop(conn: Connection | None = None, name: str = "", progress: Progress = NULL) -> dict[str, int]:
    """Remove model ``name`` (its neurons, relationships, layers) in bounded batches."""
    db.validate_name(name)
    conn, driver = open_driver(conn, progress)
    try:
        with db.translate(conn.uri, f"drop of {name!r}"):
            return db.drop_model(driver, name, progress)
    finally:
        driver.close()

