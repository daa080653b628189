"""Export sources without a server: a walked model (edges made on the fly by the layer
translators) and an extraction folder (read from its Parquet files); :func:`open_source` picks
the source for what the user named, ``neo4j:NAME`` included."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from pipeline import schema
from pipeline.dataset import check_files, edge_batches, node_batches, read_manifest
from pipeline.export.base import LayerInfo, Source, concat_nodes
from pipeline.export.edges import CHUNK_EDGES, Edges, kind_code
from pipeline.extract.tables import node_table

if TYPE_CHECKING:
    from pipeline.spec import ModelGraph

__all__ = ["NEO4J_PREFIX", "FolderSource", "LayerInfo", "ModelSource", "Source", "model_spec_of", "open_source"]

NEO4J_PREFIX = "neo4j:"


class ModelSource(Source):
    """Edges generated on the fly from a walked model (no database, no files)."""

    def __init__(self, graph: ModelGraph):
        from pipeline.layers import registry

        self.graph = graph
        self.name = graph.name
        self.registry = registry
        self.layers = [
            LayerInfo(s.index, s.name, s.type, s.output.offset, tuple(s.output.shape), s.makes_neurons,
                      registry.get(s.type, s.name).count_edges(s),
                      [(t.offset, t.offset + t.size) for t in s.inputs])
            for s in graph.layers
        ]

    def edges(self, layer: LayerInfo, targets: np.ndarray | None = None,
              sources: np.ndarray | None = None) -> Iterator[Edges]:
        """Only the translator rows that can reach ``targets`` or come from ``sources`` are made
        (the translator says which: ``rows_touched``)."""
        spec = self.graph.layers[layer.index]
        tr = self.registry.get(spec.type, spec.name)
        for lo, hi in tr.rows_touched(spec, targets, sources):
            for chunk in tr.edges(spec, lo, hi, CHUNK_EDGES):
                yield Edges.of(chunk.source, chunk.target, chunk.weight, chunk.kind)

    def nodes(self, ids: np.ndarray) -> pa.Table:
        tables = []
        owner = self.owner(ids)
        for k in np.unique(owner):
            la = self.owners[k]
            tables.append(node_table(self.graph.layers[la.index], ids[owner == k] - la.offset))
        return concat_nodes(tables)


class FolderSource(Source):
    """An extraction folder: edges and nodes read through :mod:`pipeline.dataset` (the one reader
    of its tables), row groups skipped by their statistics when only some targets or sources are
    wanted."""

    def __init__(self, folder: str | Path, check: bool = True):
        self.folder = Path(folder)
        self.manifest = read_manifest(folder)
        # Files are checked against their sha256 when a layer is first read, so a cone of a huge
        # folder hashes only the layers it touches; a damaged file is still named before use.
        self._unchecked = {e["index"] for e in self.manifest["layers"]} if check else set()
        self.name = self.manifest["model"].get("name", self.folder.name)
        self.granularity = self.manifest.get("granularity", schema.NEURON)
        entries = sorted(self.manifest["layers"], key=lambda e: e["index"])
        by_name = {e["name"]: e for e in entries}
        self.entries = {e["index"]: e for e in entries}
        self.layers = [
            LayerInfo(e["index"], e["name"], e["type"], e["id_start"], tuple(e["output_shape"]),
                      e["nodes"] > 0, 0 if e.get("boundary") else e["edges"],
                      [(by_name[n]["id_start"], by_name[n]["id_stop"]) for n in e.get("inbound", []) if n in by_name])
            for e in entries
        ]

    def _entry(self, index: int) -> dict:
        """A layer's manifest entry, its files checked on first use (see __init__)."""
        entry = self.entries[index]
        if index in self._unchecked:
            check_files(self.folder, {"layers": [entry]})
            self._unchecked.discard(index)
        return entry

    def edges(self, layer: LayerInfo, targets: np.ndarray | None = None,
              sources: np.ndarray | None = None) -> Iterator[Edges]:
        entry = self._entry(layer.index)
        for table in edge_batches(self.folder, entry, targets=targets, sources=sources, batch_size=CHUNK_EDGES):
            kind = table.column(schema.KIND).combine_chunks()
            lut = np.array([kind_code(k) for k in kind.dictionary.to_pylist()], np.uint8)
            yield Edges(table.column(schema.SOURCE).to_numpy(), table.column(schema.TARGET).to_numpy(),
                        table.column(schema.WEIGHT).to_numpy(), lut[kind.indices.to_numpy()],
                        {f.name: table.column(f.name).combine_chunks() for f in self.extra_edge_columns})

    def nodes(self, ids: np.ndarray) -> pa.Table:
        owner = self.owner(ids)
        tables = []
        for k in np.unique(owner):
            la = self.owners[k]
            mine = ids[owner == k]
            for table in node_batches(self.folder, self._entry(la.index), ids=mine, batch_size=CHUNK_EDGES):
                keep = np.isin(table.column(schema.ID).to_numpy(), mine, assume_unique=True)
                if keep.any():
                    tables.append(table.filter(pa.array(keep)))
        table = concat_nodes(tables, self.granularity)
        return table.take(np.argsort(table.column(schema.ID).to_numpy(), kind="stable"))


def model_spec_of(source):
    """The :class:`~pipeline.model.ModelSpec` ``source`` names (a ModelSpec, or a model name or file:
    neither a folder nor ``neo4j:NAME``), else None: what a stage builds in a child process."""
    from pipeline.model import ModelSpec

    if isinstance(source, ModelSpec):
        return source
    if isinstance(source, (str, Path)) and not str(source).startswith(NEO4J_PREFIX) and not Path(source).is_dir():
        return ModelSpec(str(source))
    return None


def open_source(source, conn=None, check: bool = True) -> Source:
    """A :class:`Source` for a model name or file, a ModelSpec, a ModelGraph, an extraction
    folder or ``neo4j:NAME`` (``conn``: a ``pipeline.neo4j.server.Connection``); ``check``:
    verify a folder's files against its manifest's sha256 (each layer's before it is read)."""
    from pipeline.model import ModelGraph, ModelSpec, build

    if isinstance(source, Source):
        return source
    if isinstance(source, ModelGraph):
        return ModelSource(source)
    if isinstance(source, ModelSpec):
        return ModelSource(build(source)[1])
    text = str(source)
    if text.startswith(NEO4J_PREFIX):
        from pipeline.export.neo4j_source import Neo4jSource

        return Neo4jSource(text[len(NEO4J_PREFIX):], conn)
    path = Path(text)
    if path.is_dir():
        return FolderSource(path, check)
    return ModelSource(build(ModelSpec(text))[1])

