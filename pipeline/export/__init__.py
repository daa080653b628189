"""The export stage: select a subgraph of a model's neuron graph and hand it to a sink.

Sources (:func:`open_source`): a model (a keras.applications name, a ``.keras`` file, a
:class:`~pipeline.model.ModelSpec` or a walked :class:`~pipeline.model.ModelGraph`; edges are made
on the fly by the layer translators), a folder written by ``cnngraph extract`` (read from its
Parquet files), or ``neo4j:NAME`` (a model loaded into Neo4j).

Selections (all optional, combinable):

* ``layers="A:B"``: edges whose *target* neuron is in a layer from A to B (model order, names or
  indexes, inclusive; either side may be empty).
* ``min_abs_weight=T``: edges with ``|weight| >= T``.
* ``top_k_in=K``: per target neuron, its K incoming edges of largest ``|weight|`` (ties: smaller
  source id first), after ``min_abs_weight``.
* ``upstream_of=`` / ``downstream_of="LAYER:INDEX"`` (or a list), with ``depth=K``: the cone of
  these neurons in the graph the filters above define: every edge into (upstream) or out of
  (downstream) a neuron less than K steps from them, i.e. the edges a depth-K breadth-first
  search crosses. ``depth=None``: no limit. INDEX is a position ``h,w,c`` or a flat unit number.
  Both given: the union of the two cones.
* ``cypher="..."`` (Neo4j only): the relationships a query returns; the other filters (not the
  cones) then apply to them.

The exported graph holds the selected edges (each once) and their endpoints (plus the cone
seeds), with node attributes ``layer``, ``layer_type``, ``d``, ``h``, ``w``, ``c``, ``bias``,
``activation`` and edge attributes ``weight`` and ``kind``. Sinks: :func:`to_networkx`,
:func:`to_pandas` (two DataFrames), :func:`write_graphml`, :func:`write_parquet`. Each refuses a
selection over its size limit (:data:`LIMITS`) with :class:`ExportTooLarge` unless
``force=True``; :func:`iter_frames` streams any selection as pandas frames, layer by layer, in
bounded memory. ``weight`` is signed: NetworkX's weighted algorithms want
``to_networkx(..., abs_weight=True)`` and ``weight="abs_weight"`` (``write_graphml`` too).

Inside: :mod:`~pipeline.export.edges` (edge batches, id sets, kinds), :mod:`~pipeline.export.base`
(the Source interface), :mod:`~pipeline.export.sources` (model and folder sources,
:func:`open_source`), :mod:`~pipeline.export.neo4j_source`, :mod:`~pipeline.export.select`
(selections, the engine, the size guard), :mod:`~pipeline.export.frames` (the session every sink
opens, :class:`Export`, and the pandas sinks); the writers are in :mod:`pipeline.sinks`. This
module chains them: open the source, check the size, stream the edges into a sink, then the nodes.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from pipeline import schema
from pipeline.errors import OutputError, UsageError, disk_full_as, is_disk_full
from pipeline.export.base import LayerInfo, Source, concat_nodes
from pipeline.export.edges import CHUNK_EDGES, KINDS, Edges, IdSet, batch_runs, kind_array, kind_code, runs
from pipeline.export.frames import (
    LIMITS,
    PANDAS_BYTES_PER_EDGE,
    PANDAS_BYTES_PER_NODE,
    Export,
    iter_frames,
    node_tables,
    to_pandas,
)
from pipeline.export.neo4j_source import Neo4jSource
from pipeline.export.select import Engine, ExportTooLarge, Selection, layer_range, neuron_id
from pipeline.export.sources import NEO4J_PREFIX, FolderSource, ModelSource, open_source
from pipeline.plan import BYTES_PER_EDGE, BYTES_PER_NODE, human_bytes
from pipeline.progress import NULL, Progress
from pipeline.sinks.networkx import ABS_WEIGHT
from pipeline.sinks.parquet import EXPORT_FORMAT, EXPORT_KIND

if TYPE_CHECKING:
    import networkx as nx

__all__ = [
    "ABS_WEIGHT", "BYTES_PER_EDGE", "BYTES_PER_NODE", "CHUNK_EDGES", "EXPORT_FORMAT", "EXPORT_KIND", "KINDS",
    "LIMITS", "NEO4J_PREFIX", "PANDAS_BYTES_PER_EDGE", "PANDAS_BYTES_PER_NODE", "Edges", "Engine", "Export", "ExportResult", "ExportTooLarge", "FolderSource",
    "IdSet", "LayerInfo", "ModelSource", "Neo4jSource", "OutputError", "Selection", "Source", "UsageError",
    "batch_runs", "check_out", "concat_nodes", "export", "human_bytes", "iter_frames", "kind_array",
    "kind_code", "layer_range", "neuron_id", "open_source", "runs", "to_networkx", "to_pandas",
    "write_graphml", "write_parquet",
]


@dataclass
class ExportResult:
    """What an export wrote."""

    path: Path | None
    format: str
    nodes: int
    edges: int
    seconds: float
    bytes: int = 0


def _source_paths(source) -> list[Path]:
    """The files and folders a source reads (a model file, a weights file, an extraction folder)."""
    from pipeline.model import ModelSpec

    if isinstance(source, ModelSpec):
        paths = [source.source, source.weights]
    elif isinstance(source, FolderSource):
        paths = [source.folder]
    elif isinstance(source, (str, os.PathLike)) and not str(source).startswith(NEO4J_PREFIX):
        paths = [source]
    else:
        paths = []
    return [Path(p).resolve() for p in paths if isinstance(p, (str, os.PathLike)) and Path(p).exists()]


def check_out(source, out: Path) -> None:
    """Refuse an output that is, holds, or lies inside what the source reads."""
    target = out.resolve()
    for path in _source_paths(source):
        if target == path or path in target.parents or target in path.parents:
            raise OutputError(f"{out} would write over the source {path}; nothing was written; choose "
                              "another --out")


def to_networkx(source, *, force: bool = False, limit: int | None = None, progress: Progress = NULL,
                conn=None, check: bool = True, abs_weight: bool = False, **selection) -> nx.DiGraph:
    """The selected subgraph as a ``networkx.DiGraph``.

    Parameters
    ----------
    source : model name or file, ModelSpec, ModelGraph, extraction folder, or ``"neo4j:NAME"``.
    force : build it even when it exceeds ``limit`` (default ``LIMITS["networkx"]`` edges).
    check : for a folder, verify its files against the manifest's sha256 first.
    abs_weight : also give every edge ``abs_weight`` = ``|weight|`` (a float). Weights are signed
        (an inhibitory edge is negative), and NetworkX's weighted algorithms assume non-negative
        weights: ``pagerank`` (and ``hits``, which always reads ``weight``) normalise by sums that
        cancel, Dijkstra (shortest paths, weighted betweenness) refuses or misleads, and
        ``dag_longest_path`` reads ``weight`` by default. Pass ``weight="abs_weight"`` instead.
    **selection : ``layers``, ``upstream_of``, ``downstream_of``, ``depth``, ``min_abs_weight``,
        ``top_k_in``, ``cypher`` (see the module docstring).

    Returns
    -------
    networkx.DiGraph with int node keys (neuron ids), node attributes ``layer``, ``layer_type``,
    ``d``, ``h``, ``w``, ``c``, ``bias``, ``activation`` and edge attributes ``weight``, ``kind``
    (and ``abs_weight``; plus the coarse columns of a channel- or layer-level source, as lists).

    Raises
    ------
    ExportTooLarge, UsageError (bad selection), ModelError, OutputError, Neo4jError.

    Examples
    --------
    >>> import networkx as nx
    >>> from pipeline.model import ModelSpec
    >>> G = to_networkx(ModelSpec("vgg16", (32, 32, 3), include_top=False), layers="block1_conv1:block1_conv1",
    ...                 abs_weight=True)
    >>> G.number_of_edges()
    1696512
    >>> rank = nx.pagerank(G, weight="abs_weight")  # not the signed "weight"
    """
    import networkx as nx

    from pipeline.sinks import networkx as nx_sink

    with Export(source, selection, "networkx", limit, force, progress, conn, check) as ex:
        ex.start()
        src = ex.src
        parts, data = [], []
        for e in ex.edges():  # attribute dicts made while a Neo4j source reads ahead
            parts.append(e)
            data.append(nx_sink.edge_data(e.weight, e.kind, KINDS, e.extra, abs_weight=abs_weight))
        edges = Edges.concat(parts)
        del parts
        data = list(chain.from_iterable(data))
        ids = ex.ids()
        keys = np.empty(len(ids), dtype=object)
        keys[:] = ids.tolist()
        G = nx.DiGraph(name=src.name)
        G.add_nodes_from(keys.tolist())  # id order; attributes come below
        with ThreadPoolExecutor(1, thread_name_prefix="cnngraph-export") as pool:
            tables = pool.submit(lambda: list(node_tables(src, ids)))  # read while edges go in
            for lo in range(0, len(edges), CHUNK_EDGES):
                e = edges.take(slice(lo, lo + CHUNK_EDGES))
                nx_sink.add_edges(G, ids, keys, e.source, e.target, data[lo : lo + CHUNK_EDGES])
            del data
            for t in tables.result():
                nx_sink.add_nodes(G, t)
    return G


def write_graphml(source, path: str | Path, *, force: bool = False, overwrite: bool = False,
                  limit: int | None = None, progress: Progress = NULL, conn=None, check: bool = True,
                  abs_weight: bool = False, **selection) -> ExportResult:
    """Write the selected subgraph as a directed GraphML file (streaming, bounded memory).

    Same source and selection as :func:`to_networkx`; readable by ``networkx.read_graphml``
    (``node_type=int`` gives int keys) and ``igraph.Graph.Read_GraphML``. Weights are written so
    they read back to the same float32. ``abs_weight=True`` adds the edge attribute
    ``abs_weight`` = ``|weight|`` (a ``double`` key, read as a float by NetworkX and igraph): the
    weight to give weighted algorithms, since ``weight`` is signed (see :func:`to_networkx`).
    The file appears only when complete; an existing file is replaced only with
    ``overwrite=True``, and never the source itself.
    """
    from pipeline.sinks.graphml import (
        GraphMLWriter,
        check_target,
        graphml_value,
        graphml_value_type,
        graphml_values,
    )

    t0 = time.perf_counter()
    path = Path(path)
    check_out(source, path)
    check_target(path, overwrite)
    with Export(source, selection, "graphml", limit, force, progress, conn, check) as ex:
        ex.start()
        src = ex.src
        # Coarse columns: lists become JSON text ("[0.25, -1.5]"), GraphML has no list type.
        node_attrs = [(f.name, graphml_value_type(f.type)) for f in schema.node_schema(src.granularity)
                      if f.name != schema.ID]
        edge_attrs = [(schema.WEIGHT, pa.float32()), (schema.KIND, pa.string()),
                      *([(ABS_WEIGHT, pa.float32())] if abs_weight else []),
                      *((f.name, graphml_value_type(f.type)) for f in src.extra_edge_columns)]
        with disk_full_as(Path(path).parent, "the GraphML export", f"no file was left at {path}; free "
                          "some space or choose another --out"), GraphMLWriter(path, node_attrs, edge_attrs, overwrite) as writer:
            for e in ex.edges():
                magnitude = {ABS_WEIGHT: np.abs(e.weight)} if abs_weight else {}
                writer.edges(e.source, e.target, {schema.WEIGHT: e.weight, schema.KIND: kind_array(e.kind),
                                                  **magnitude, **{k: graphml_value(v) for k, v in e.extra.items()}})
            ids = ex.ids()
            writer.close(graphml_values(t) for t in node_tables(src, ids))
    return ExportResult(Path(path), "graphml", len(ids), ex.count, time.perf_counter() - t0, writer.bytes)


def write_parquet(source, folder: str | Path, *, force: bool = False, limit: int | None = None,
                  progress: Progress = NULL, conn=None, check: bool = True, **selection) -> ExportResult:
    """Write the selected subgraph as Parquet in the extraction schema: ``FOLDER/edges/*.parquet``,
    ``FOLDER/nodes/*.parquet`` and ``FOLDER/selection.json``.

    Built in a fresh temporary folder beside FOLDER and renamed when complete; an existing FOLDER
    is replaced only when it is provably an earlier export of ours (ownership marker), never the
    source.
    """
    from pipeline.sinks.parquet import ParquetExportWriter, check_folder

    t0 = time.perf_counter()
    out = Path(folder)
    check_out(source, out)
    check_folder(out)
    with Export(source, selection, "parquet", limit, force, progress, conn, check) as ex, \
            disk_full_as(out.parent, "the Parquet export", f"nothing new was written to {out}; free some space "
                         "or choose another --out"):
        ex.start()
        try:
            with ParquetExportWriter(out, ex.src.granularity) as writer:
                for e in ex.edges():
                    writer.edges(e.table())
                ids = ex.ids()
                writer.close(node_tables(ex.src, ids), {"model": ex.src.name, "selection": selection,
                                                        "nodes": int(len(ids)), "edges": int(ex.count)})
        except OSError as err:
            if is_disk_full(err):
                raise
            raise OutputError(f"cannot write {out}: {err.strerror or err}; nothing new was written; "
                              "choose another --out") from err
    return ExportResult(out, "parquet", len(ids), ex.count, time.perf_counter() - t0)


def export(source, out: str | Path, format: str = "graphml", **kwargs: Any) -> ExportResult:
    """Write the selection to ``out`` in ``format`` (``graphml`` or ``parquet``)."""
    if format == "graphml":
        return write_graphml(source, out, **kwargs)
    if format == "parquet":
        return write_parquet(source, out, **kwargs)
    raise UsageError(f"unknown export format {format!r}; use graphml or parquet")
