"""What the online and bulk loaders share: the manifest, a layer's files, the result, the ending.

Both loaders read the same manifest (:func:`manifest_and_name`), open the driver the same way
(:func:`open_driver`), end with the same count check (:func:`finish`) and return a
:class:`LoadResult`; this module holds those so neither loader imports the other.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import errors, extract, schema
from pipeline.neo4j import db, server
from pipeline.progress import NULL, Progress

if TYPE_CHECKING:
    import neo4j

MODES = ("bulk", "online")
#: Bulk input format; "csv" measured fastest on neo4j-admin 5.26.19 (see docs/graph-model.md).
INPUT_TYPE = "csv"


@dataclass
class LoadResult:
    """What a load did. Timings in seconds."""

    model: str
    mode: str
    nodes: int
    relationships: int
    layers: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    batches_done: int = 0
    batches_skipped: int = 0
    skipped: bool = False  # the model was already loaded from the same extraction

    @property
    def rels_per_second(self) -> float:
        """Relationships loaded per second of the whole load."""
        return self.relationships / self.seconds if self.seconds else 0.0


def read_manifest(dir: str | Path) -> dict:
    """The extraction manifest, layers in model order, every label validated before any query."""
    manifest = extract.read_manifest(dir)
    manifest["layers"] = sorted(manifest["layers"], key=lambda la: la["index"])
    for la in manifest["layers"]:
        if la["nodes"]:
            db.neuron_labels(la["type"])
    return manifest


def manifest_and_name(dir: str | Path, model_name: str | None) -> tuple[dict, str]:
    """The complete extraction's manifest and the validated model name (default: the Keras name)."""
    manifest = read_manifest(dir)
    return manifest, db.validate_name(manifest["model"]["name"] if model_name is None else model_name)


def layer_files(dir: Path, manifest: dict, key: str) -> list[tuple[dict, Path]]:
    """(layer entry, path) of every file listed under ``key`` (``"node_files"``/``"edge_files"``),
    layers in manifest order."""
    return [(la, dir / rel) for la in manifest["layers"] for rel in la.get(key, [])]


def layer_type(table: pa.Table) -> str:
    """The one layer type of a node table (its neurons' label); OutputError when it mixes types."""
    types = pc.unique(table.column(schema.LAYER_TYPE).cast(pa.string())).to_pylist()
    if len(types) != 1:
        raise errors.OutputError(f"a node file mixes layer types {types}")
    return types[0]


def open_driver(conn: server.Connection | None = None,
                progress: Progress = NULL) -> tuple[server.Connection, neo4j.Driver]:
    """(Connection, neo4j.Driver) for ``conn`` or the default connection."""
    if conn is None:
        conn = server.connection(progress=progress)
    # No notifications: the loaders' queries are known, and id() lookups are deprecated (but
    # ~2x faster than index seeks); users should not see warnings about our own queries.
    return conn, server.driver(conn, notifications_min_severity="OFF")


def run_batch(tx, model: str, unit: int, query: str, params: dict) -> None:
    """Run one batch's query in ``tx``; Neo4jError (so the caller rolls back rather than commit
    a partial batch) when it created fewer nodes or relationships than it has rows."""
    summary = tx.run(query, params).consume()
    want = len(params.get("w") or params.get("id") or [])
    made = summary.counters.relationships_created + summary.counters.nodes_created
    if made != want:  # a missing endpoint
        raise errors.Neo4jError(
            f"batch {unit} of model {model!r} created {made} of {want} nodes or "
            "relationships (an endpoint is missing); drop the model and reload it (--replace)")


def replaced_error(model: str, when: str) -> errors.Neo4jError:
    """The error of an online load whose model was dropped or replaced while it ran."""
    return errors.Neo4jError(
        f"model {model!r} was dropped or replaced by another command while this online load ran, "
        f"so the load stopped {when} (nothing of it reached the other model); rerun the load if "
        f"{model!r} should hold this extraction (--replace if another one holds the name now)"
    )


def finish(driver: neo4j.Driver, manifest: dict, name: str, mode: str, uri: str,
           run: str | None = None) -> dict:
    """Verify counts against the manifest, then mark the model complete (online: ``run``, only
    while the model is still this load's) and remove its checkpoint."""
    with db.translate(uri, "verification"):
        counts = db.verify_counts(driver, manifest, name)
        if not db.set_status(driver, name, db.COMPLETE, run):
            raise replaced_error(name, "before it was marked complete")
        driver.execute_query("MATCH (s:LoadState {model: $name}) WHERE $run IS NULL OR s.run = $run "
                             "DELETE s", name=name, run=run)
    return counts


def temp_dir(work_dir: str | Path | None) -> Path:
    """A fresh folder for bulk import files, under ``work_dir`` (created) or the system temp folder."""
    base = None
    if work_dir:
        base = Path(work_dir)
        base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="cnngraph-import-", dir=base))


def remove(path: Path) -> None:
    """Remove a temporary folder and everything in it (errors ignored)."""
    shutil.rmtree(path, ignore_errors=True)


def managed_only() -> None:
    """Bulk import needs the managed server: refuse when NEO4J_URI points elsewhere."""
    uri = os.environ.get("NEO4J_URI")
    if uri and not server.is_managed_uri(uri):
        raise errors.UsageError(
            f"bulk load runs neo4j-admin on the managed server's files, but NEO4J_URI={uri} "
            "points to another server; use --mode online (or unset NEO4J_URI)"
        )
