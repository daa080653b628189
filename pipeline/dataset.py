"""The extraction folder: its typed manifest, the check of its files, and the one reader of its tables.

:class:`Manifest` and :class:`LayerEntry` are the only place that spells the manifest's keys
(:func:`read_manifest` still returns the plain dict for callers that index it). Every stage that
reads a folder (verify, load, export) calls :func:`check_files` first, so a deleted, truncated or
edited Parquet file is named in one clear error instead of surfacing as a pyarrow traceback or,
worse, as a silently smaller graph; then reads its tables with :func:`edge_batches` and
:func:`node_batches`, which skip row groups by their id statistics when only some ids are wanted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import schema, storage
from pipeline.errors import ModelError, OutputError
from pipeline.progress import NULL, Progress
from pipeline.spec import ModelSpec

#: How to skip the check on the command line (named in the error message).
NO_CHECK = "--no-check"
#: Rows per batch the readers yield by default (pipeline.extract.CHUNK_EDGES: ~21 bytes per edge).
BATCH_ROWS = 4_000_000


@dataclass
class LayerEntry:
    """One layer of a manifest: what it is, its counts, id range, checksums and files."""

    index: int
    name: str
    type: str
    output_shape: list[int]
    params: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    inbound: list[str] = field(default_factory=list)
    boundary: bool = False
    nodes: int = 0
    edges: int = 0
    id_start: int = 0
    id_stop: int = 0
    activation: str = "linear"
    node_checksum: str = f"{0:016x}"
    edge_checksum: str = f"{0:016x}"
    node_files: list[str] = field(default_factory=list)
    edge_files: list[str] = field(default_factory=list)
    node_file_sha256: list[str] = field(default_factory=list)
    edge_file_sha256: list[str] = field(default_factory=list)
    #: Keys this version does not know (kept, so a manifest round-trips).
    extra: dict[str, Any] = field(default_factory=dict)

    _KEYS = (
        "index", "name", "type", "output_shape", "params", "config", "inbound", "boundary", "nodes", "edges",
        "id_start", "id_stop", "activation", "node_checksum", "edge_checksum", "node_files", "edge_files",
        "node_file_sha256", "edge_file_sha256",
    )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LayerEntry:
        """Read one entry of a manifest's ``layers`` (older manifests lack some keys)."""
        known = {k: data[k] for k in cls._KEYS if k in data and data[k] is not None}
        return cls(**known, extra={k: v for k, v in data.items() if k not in cls._KEYS})

    def to_json(self) -> dict[str, Any]:
        """The entry as the manifest's JSON object (keys in their historical order)."""
        return {**{k: getattr(self, k) for k in self._KEYS}, **self.extra}

    def files(self) -> list[tuple[str, str | None]]:
        """(relative path, recorded sha256 or None) of the entry's node files, then its edge files."""
        out: list[tuple[str, str | None]] = []
        for names, digests in ((self.node_files, self.node_file_sha256), (self.edge_files, self.edge_file_sha256)):
            out += [(name, digests[i] if i < len(digests) else None) for i, name in enumerate(names)]
        return out


@dataclass
class Manifest:
    """A folder's ``manifest.json``: the model it came from, the granularity, and its layers."""

    model: dict[str, Any]
    layers: list[LayerEntry]
    granularity: str = schema.NEURON
    aggregate: str | None = None  # channel granularity: how edge weights summarise kernel slices
    options: dict[str, Any] = field(default_factory=dict)
    nodes: int = 0
    edges: int = 0
    seconds: float = 0.0
    format: str = schema.FORMAT
    complete: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    _KEYS = ("format", "complete", "model", "granularity", "aggregate", "options", "nodes", "edges", "seconds", "layers")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        """Read a manifest's JSON object (older manifests lack some keys)."""
        return cls(
            model=dict(data.get("model") or {}),
            layers=[LayerEntry.from_json(e) for e in data.get("layers", [])],
            granularity=data.get("granularity", schema.NEURON),
            aggregate=data.get("aggregate"),
            options=dict(data.get("options") or {}),
            nodes=data.get("nodes", 0),
            edges=data.get("edges", 0),
            seconds=data.get("seconds", 0.0),
            format=data.get("format", schema.FORMAT),
            complete=bool(data.get("complete", False)),
            extra={k: v for k, v in data.items() if k not in cls._KEYS},
        )

    def to_json(self) -> dict[str, Any]:
        """The manifest as JSON: ``aggregate`` only at the coarser granularities, as always."""
        out: dict[str, Any] = {"format": self.format, "complete": self.complete, "model": self.model,
                               "granularity": self.granularity}
        if self.granularity != schema.NEURON:
            out["aggregate"] = self.aggregate
        out.update(options=self.options, nodes=self.nodes, edges=self.edges, seconds=self.seconds,
                   layers=[e.to_json() for e in self.layers])
        return {**out, **self.extra}

    def layer(self, name: str) -> LayerEntry:
        """The entry of the layer called name (KeyError if there is none)."""
        for entry in self.layers:
            if entry.name == name:
                return entry
        raise KeyError(name)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a complete extraction folder; OutputError when absent or incomplete."""
    path = Path(folder) / schema.MANIFEST
    if not path.exists():
        raise OutputError(
            f"{folder} has no {schema.MANIFEST}: it is not a complete extraction (rerun `cnngraph extract`)"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise OutputError(f"{path} is corrupt: {err}; rerun `cnngraph extract`") from err
    if data.get("format") != schema.FORMAT or not data.get("complete"):
        raise OutputError(f"{path} is not a complete {schema.FORMAT} manifest; rerun `cnngraph extract`")
    return data


def load_manifest(folder: str | Path) -> Manifest:
    """The typed manifest of a complete extraction folder (OutputError as :func:`read_manifest`)."""
    return Manifest.from_json(read_manifest(folder))


def spec_from_manifest(manifest: dict[str, Any], folder: str | Path | None = None, check: bool = True) -> ModelSpec:
    """The ModelSpec that rebuilds the model a manifest was extracted from (new and old manifests).

    With ``check``, the model and weights files it names must still have their recorded sha256
    (ModelError otherwise). A folder of an in-memory model cannot be rebuilt: the error says how
    to pass the model. ``folder`` only names the folder in messages.
    """
    from pipeline.model_files import IN_MEMORY_WEIGHTS, MODEL_FILE_WEIGHTS, check_provenance

    m = dict(manifest["model"])
    weights = str(m.get("weights") or "")
    where = folder if folder is not None else "this folder"
    if weights == IN_MEMORY_WEIGHTS:
        name = m.get("name") or m.get("source") or "model"
        raise ModelError(
            f"{where} was extracted from an in-memory model ({name}), which its manifest cannot rebuild: "
            f"save it (model.save('{name}.keras')) and run `cnngraph verify {name}.keras --folder {where}`, "
            f"or in Python: verify(model, walk(model), folder='{where}')"
        )
    if weights.startswith("random(") or weights == MODEL_FILE_WEIGHTS:
        m["weights"] = None
    if check:
        check_provenance(m, folder)
    return ModelSpec.from_json(m)


def _entries(manifest: dict[str, Any] | Manifest) -> list[LayerEntry]:
    if isinstance(manifest, Manifest):
        return manifest.layers
    return [LayerEntry.from_json(e) for e in manifest.get("layers", [])]


def listed_files(manifest: dict[str, Any] | Manifest) -> list[tuple[str, str | None]]:
    """(relative path, recorded sha256 or None) of every file a manifest lists."""
    return [f for entry in _entries(manifest) for f in entry.files()]


def check_files(folder: str | Path, manifest: dict[str, Any] | Manifest, progress: Progress = NULL) -> int:
    """Check that every file the manifest lists exists and has its recorded sha256; return the count.

    Raises OutputError naming the first missing or changed file (~2 GB/s: seconds for most
    folders; pass ``--no-check`` on the command line to skip it for huge ones).
    """
    root = Path(folder)
    files = listed_files(manifest)
    progress.start(len(files), "files", "check")
    try:
        for rel, digest in files:
            path = root / rel
            if not path.is_file():
                raise OutputError(f"{path} is missing: the extraction folder {root} is damaged; "
                                  "rerun `cnngraph extract` into it")
            if digest is not None and storage.sha256(path) != digest:
                raise OutputError(f"{path} has changed since it was written (sha256 differs from the "
                                  f"manifest): the extraction folder {root} is damaged; rerun `cnngraph "
                                  f"extract` into it ({NO_CHECK} skips this check)")
            progress.advance(1)
    finally:
        progress.finish()
    return len(files)


def _as_entry(entry: LayerEntry | dict[str, Any]) -> LayerEntry:
    return entry if isinstance(entry, LayerEntry) else LayerEntry.from_json(entry)


def read_batches(
    folder: str | Path, files: list[str], column: str | None = None, wanted: np.ndarray | None = None,
    columns: list[str] | None = None, batch_size: int = BATCH_ROWS,
) -> Iterator[pa.Table]:
    """The rows of Parquet files under folder, as one-chunk tables of at most batch_size rows.

    With ``wanted`` (sorted ids), row groups whose ``column`` statistics (min, max) hold none of
    them are skipped; the rows of the others are not filtered (callers keep what they need).
    """
    import pyarrow.parquet as pq

    root = Path(folder)
    for rel in files:
        pf = pq.ParquetFile(root / rel)
        names = pf.schema_arrow.names
        for g in range(pf.num_row_groups):
            if wanted is not None and column is not None:
                stats = pf.metadata.row_group(g).column(names.index(column)).statistics
                if stats is not None and stats.has_min_max:
                    lo, hi = np.searchsorted(wanted, [stats.min, stats.max + 1])
                    if lo == hi:
                        continue
            for batch in pf.iter_batches(batch_size, row_groups=[g], columns=columns):
                yield pa.Table.from_batches([batch])


def edge_batches(
    folder: str | Path, entry: LayerEntry | dict[str, Any], columns: list[str] | None = None,
    targets: np.ndarray | None = None, sources: np.ndarray | None = None, batch_size: int = BATCH_ROWS,
) -> Iterator[pa.Table]:
    """A layer's edge rows, as tables; with sorted ``targets`` (else ``sources``) ids, only the row
    groups that can hold them (a superset: filter the rows)."""
    column, wanted = (schema.TARGET, targets) if targets is not None else (schema.SOURCE, sources)
    yield from read_batches(folder, _as_entry(entry).edge_files, column, wanted, columns, batch_size)


def node_batches(
    folder: str | Path, entry: LayerEntry | dict[str, Any], columns: list[str] | None = None,
    ids: np.ndarray | None = None, batch_size: int = BATCH_ROWS,
) -> Iterator[pa.Table]:
    """A layer's node rows, as tables; with sorted ``ids``, only the row groups that can hold them."""
    yield from read_batches(folder, _as_entry(entry).node_files, schema.ID, ids, columns, batch_size)
