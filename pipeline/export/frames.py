"""pandas views of an export, and the session every sink opens.

:func:`to_pandas` hands back the whole selection as two DataFrames (nodes, edges);
:func:`iter_frames` hands it out layer by layer in bounded chunks, for graphs too big to hold.
Both take the same sources and selections as :func:`pipeline.export.to_networkx`.

The session (:class:`Export`) is shared by every sink (this module's and those in
:mod:`pipeline.export`): it opens the source, checks the selection against the sink's size limit
(:data:`LIMITS`) and streams each selected edge once. The selection engine yields an edge that
lies in both an upstream and a downstream cone twice; :meth:`Export.edges` runs the two cones
one after the other and drops from the downstream one the edges the upstream one already gave
(an edge into a neuron of the upstream cone is in it), so parallel edges a model really has
(``Add()([x, x])``) are kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from pipeline import schema
from pipeline.errors import UsageError
from pipeline.export.base import LayerInfo, Source, concat_nodes
from pipeline.export.edges import CHUNK_EDGES, KINDS, Edges, IdSet
from pipeline.export.select import Engine, ExportTooLarge, Selection
from pipeline.export.sources import open_source
from pipeline.plan import BYTES_PER_EDGE, BYTES_PER_NODE
from pipeline.progress import NULL, Progress

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LIMITS", "PANDAS_BYTES_PER_EDGE", "PANDAS_BYTES_PER_NODE", "Export", "edge_frame", "iter_frames",
           "node_frame", "node_tables", "to_pandas"]

#: Largest number of edges each sink accepts without ``force=True``.
LIMITS = {"networkx": 20_000_000, "graphml": 200_000_000, "parquet": 2_000_000_000, "pandas": 100_000_000}

#: Bytes of a pandas edge and node row (the plan's figures, which the size guard uses).
PANDAS_BYTES_PER_EDGE = BYTES_PER_EDGE["pandas"]
PANDAS_BYTES_PER_NODE = BYTES_PER_NODE["pandas"]


class Export:
    """One export: its source, checked selection and size guard, and the selected edges.

    ``sink`` names the entry of :data:`LIMITS` (``limit`` overrides it); the selection is refused
    with :class:`~pipeline.export.select.ExportTooLarge` before any work unless ``force``.
    Closing it closes a source it opened and finishes the progress.
    """

    def __init__(self, source, selection: dict, sink: str, limit: int | None = None, force: bool = False,
                 progress: Progress = NULL, conn=None, check: bool = True):
        self.sel = Selection.make(**selection)
        self.src: Source = open_source(source, conn, check)
        self._owned = self.src is not source
        self.sink, self.force, self.progress = sink, force, progress
        self.limit = LIMITS[sink] if limit is None else limit
        self.count = 0
        try:
            self.engine = Engine(self.src, self.sel, self.limit, sink, progress)
            self._engines = [self.engine]
            self.engine.check_size(force)
        except BaseException:
            self.close()
            raise

    def start(self) -> None:
        """Say the selection's size and start the progress (before the work)."""
        edges, _ = self.engine.estimate()
        self.progress.message(f"exporting {self.engine.describe()}")
        self.progress.start(self.engine.sized if self.engine.sized is not None else edges, "edges",
                            f"export {self.sink}")

    def edges(self) -> Iterator[Edges]:
        """The selected edges, each once (see the module docstring), counted in :attr:`count`."""
        self.count = 0
        if not (self.sel.upstream_of and self.sel.downstream_of):
            for e in self.engine.run(self.force):
                self.count += len(e)
                yield e
            return
        up, down = self.cone_engines()
        self._engines = [up, down]
        into_up = IdSet()
        for e in up.run(self.force):
            into_up.add(e.target)
            self.count += len(e)
            yield e
        for e in down.run(self.force):
            e = e.take(np.flatnonzero(~into_up.contains(e.target)))
            self.count += len(e)
            if not self.force and self.count > self.limit:
                raise ExportTooLarge(self.sink, self.count, 0, self.limit, False)
            if len(e):
                yield e

    def cone_engines(self) -> tuple[Engine, Engine]:
        """Engines for the upstream and the downstream cone alone (same filters and limit)."""
        return (Engine(self.src, replace(self.sel, downstream_of=[]), self.limit, self.sink, self.progress),
                Engine(self.src, replace(self.sel, upstream_of=[]), self.limit, self.sink, self.progress))

    def ids(self) -> np.ndarray:
        """The selection's neurons (endpoints of the edges given so far, and the cone seeds), sorted."""
        ids = [eng.nodes.ids() for eng in self._engines]
        return ids[0] if len(ids) == 1 else np.union1d(*ids)

    def close(self) -> None:
        self.progress.finish()
        if self._owned:
            self.src.close()

    def __enter__(self) -> Export:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def node_tables(src: Source, ids: np.ndarray, chunk: int = 1_000_000) -> Iterator[pa.Table]:
    """The node tables of sorted ``ids``, ``chunk`` ids at a time."""
    for lo in range(0, len(ids), chunk):
        yield src.nodes(ids[lo : lo + chunk])


def edge_frame(e: Edges, extra: list[pa.Field] = ()) -> pd.DataFrame:
    """Edges as a DataFrame with the Arrow mapping of the edge schema: ``source``/``target`` int64,
    ``weight`` float32, ``kind`` categorical over :data:`~pipeline.export.edges.KINDS` (the same
    categories in every frame), plus the coarse columns (``extra``) as object columns of lists.
    The numeric columns are the arrays themselves, not copies."""
    import pandas as pd

    cols = {schema.SOURCE: e.source, schema.TARGET: e.target, schema.WEIGHT: e.weight,
            schema.KIND: pd.Categorical.from_codes(e.kind, categories=list(KINDS))}
    for f in extra:
        col = e.extra.get(f.name, pa.array([], f.type))
        cols[f.name] = col.to_pandas()
    return pd.DataFrame(cols, copy=False)


def node_frame(table: pa.Table) -> pd.DataFrame:
    """A node table as a DataFrame, in pyarrow's mapping (dictionary columns become categorical).
    A dictionary that repeats a value (the Neo4j source gives one ``layer_type`` entry per layer)
    is encoded again first: pandas wants unique categories."""
    import pyarrow.compute as pc

    for i, col in enumerate(table.columns):
        if pa.types.is_dictionary(col.type) and any(len(c.dictionary) != len(pc.unique(c.dictionary))
                                                    for c in col.chunks):
            table = table.set_column(i, table.field(i), pc.dictionary_encode(col.cast(col.type.value_type)))
    return table.to_pandas()


def to_pandas(source, *, force: bool = False, limit: int | None = None, progress: Progress = NULL,
              conn=None, check: bool = True, **selection) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The selected subgraph as two pandas DataFrames ``(nodes, edges)``.

    The same sources and selections as :func:`~pipeline.export.to_networkx`. Columns and dtypes
    are the extraction schema's (:data:`pipeline.schema.NODE_SCHEMA`, ``EDGE_SCHEMA``) as pyarrow
    maps them: ids int64, ``d``/``h``/``w``/``c`` int32, ``bias`` and ``weight`` float32,
    ``layer``, ``layer_type``, ``activation`` and ``kind`` categorical. Nodes come in id order
    (``nodes.set_index("id")`` makes them a lookup); edges in the order the source gives them.
    ``nx.from_pandas_edgelist(edges, edge_attr=True, create_using=nx.DiGraph)`` builds the graph.

    ``weight`` is signed: take ``edges.weight.abs()`` for magnitudes (strength, PageRank).
    Refuses a selection over ``limit`` (default ``LIMITS["pandas"]`` edges, ~32 bytes each) with
    :class:`ExportTooLarge` unless ``force``; for more, stream with :func:`iter_frames`.

    >>> from pipeline.model import ModelSpec
    >>> nodes, edges = to_pandas(ModelSpec("vgg16", (32, 32, 3), include_top=False), layers="block1_conv1:block1_conv1")
    >>> len(edges), len(nodes), str(edges.weight.dtype)
    (1696512, 68608, 'float32')
    """
    with Export(source, selection, "pandas", limit, force, progress, conn, check) as ex:
        ex.start()
        bound, exact = ex.engine.estimate()
        counted = ex.engine.sized if not ex.sel.cones else None  # by the size guard (cones: twice)
        e = _joined(ex.edges(), ex.src.extra_edge_columns, counted if counted is not None else bound if exact else None)
        edges = edge_frame(e, ex.src.extra_edge_columns)
        del e
        nodes = node_frame(concat_nodes(list(node_tables(ex.src, ex.ids())), ex.src.granularity))
    return nodes, edges


def _joined(stream: Iterator[Edges], extra: list[pa.Field], expect: int | None = None) -> Edges:
    """All batches as one. With the exact count known (``expect``) the columns are allocated once
    and filled as batches come, each batch then freed and its memory reused (peak ~24 B per edge,
    measured; and fresh memory is slow to touch: ~8 ms per MB on this project's machine); else
    the batches are kept and joined a column at a time (peak ~30 B per edge)."""
    names = ("source", "target", "weight", "kind")
    if expect is not None and not extra:
        out = Edges.of(np.empty(expect, np.int64), np.empty(expect, np.int64), np.empty(expect, np.float32),
                       np.empty(expect, np.uint8))
        filled, rest = 0, []
        for e in stream:
            if rest or filled + len(e) > expect:  # more than announced: keep the rest apart
                rest.append(e)
                continue
            for n in names:
                getattr(out, n)[filled : filled + len(e)] = getattr(e, n)
            filled += len(e)
        return Edges.concat([out.take(slice(0, filled)), *rest]) if rest else out.take(slice(0, filled))
    cols: dict[str, list] = {n: [] for n in (*names, *(f.name for f in extra))}
    for e in stream:
        for n in names:
            cols[n].append(getattr(e, n))
        for f in extra:
            cols[f.name].append(e.extra[f.name])
    if not cols["source"]:
        return Edges.concat([])
    joined = {}
    for n in list(cols):  # a column at a time: its pieces are freed as it is joined
        parts = cols.pop(n)
        joined[n] = np.concatenate(parts) if n in names else pa.concat_arrays(parts)
        del parts
    return Edges(*(joined.pop(n) for n in names), joined)


def iter_frames(source, *, chunk_edges: int = CHUNK_EDGES, progress: Progress = NULL, conn=None,
                check: bool = True, **selection) -> Iterator[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """The selected subgraph as ``(layer, nodes, edges)`` frames, layer by layer in model order.

    ``layer`` is the layer's name. A layer's frames hold its own neurons among the selection's
    nodes (each in exactly one frame: with the first edges into it, the rest after the edges)
    and the selected edges into them, at most ``chunk_edges`` edges and nodes per frame; the
    edges' sources are in the frames of earlier layers, so the input layer comes first, with its
    neurons and no edges. Layers with nothing selected are skipped. Columns and dtypes are
    :func:`to_pandas`'s; ``kind`` has the same categories in every frame, while ``layer``,
    ``layer_type`` and ``activation`` hold each frame's own values (``pd.concat`` of frames of
    several layers gives strings there).

    Memory is bounded by a chunk (``chunk_edges``, and the source's reads of
    :data:`~pipeline.export.edges.CHUNK_EDGES` edges), never the whole graph, so there is no
    size limit; the selection's neurons are kept as a bitmap (one byte per neuron id). The
    price: the edges are read twice, once to find the selection's neurons (every layer's nodes
    must be known before the first frame), once to hand them out. A ``cypher`` selection
    (Neo4j) is held in memory, as the query's result is.

    >>> from pipeline.model import ModelSpec
    >>> spec = ModelSpec("vgg16", (32, 32, 3), include_top=False)
    >>> [(layer, len(n), len(e)) for layer, n, e in iter_frames(spec, layers=":block1_conv1", chunk_edges=10**6)]
    [('input_layer', 3072, 0), ('block1_conv1', 65536, 1000000), ('block1_conv1', 0, 696512)]
    """
    if isinstance(chunk_edges, bool) or not isinstance(chunk_edges, int) or chunk_edges < 1:
        raise UsageError(f"bad chunk_edges {chunk_edges!r}: give a whole number of edges, 1 or more")
    Selection.make(**selection)  # a bad selection is refused now, not at the first frame
    return _frames(source, chunk_edges, progress, conn, check, selection)


def _frames(source, chunk: int, progress: Progress, conn, check: bool, selection: dict):
    with Export(source, selection, "pandas", None, True, progress, conn, check) as ex:
        yield from _Frames(ex, chunk).frames()


def _ids_in(ids: IdSet, lo: int, hi: int) -> np.ndarray:
    """The ids of the set in [lo, hi), sorted."""
    return np.flatnonzero(ids.bits[lo:hi]).astype(np.int64) + lo


class _Frames:
    """The two passes of :func:`iter_frames` over an :class:`Export`: find the selection's
    neurons, then hand out each layer's edges and neurons."""

    def __init__(self, ex: Export, chunk: int):
        self.ex, self.src, self.sel, self.chunk = ex, ex.src, ex.sel, chunk
        self.extra = self.src.extra_edge_columns
        self.into = IdSet()  # upstream cones: the neurons whose incoming edges are taken
        self.out_of = IdSet()  # downstream cones: the neurons whose outgoing edges are taken
        self.held: dict[int, list[Edges]] | None = None  # a cypher selection's edges, by layer index
        self.total = 0

    def _find_nodes(self) -> IdSet:
        """Pass 1: the selection's neurons (and, for cones, whose edges the cones take)."""
        ex, sel = self.ex, self.sel
        ex.progress.start(ex.engine.estimate()[0], "edges", "frames: find the selected neurons")
        try:
            if not sel.cones:
                kept = []
                for e in ex.engine.run(True):
                    self.total += len(e)
                    if sel.cypher:
                        kept.append(e)
                if sel.cypher:
                    self.held = self._by_layer(Edges.concat(kept))
                return ex.engine.nodes
            nodes = IdSet()
            up, down = ex.cone_engines()
            for eng, taken, end in ((up, self.into, "target"), (down, self.out_of, "source")):
                if eng.sel.cones:
                    for e in eng.run(True):
                        taken.add(getattr(e, end))
                        self.total += len(e)
                    nodes.add(eng.nodes.ids())
            return nodes
        finally:
            ex.progress.finish()

    def _by_layer(self, held: Edges) -> dict[int, list[Edges]]:
        """Held edges grouped by the layer of their target."""
        if not len(held):
            return {}
        owner = self.src.owner(held.target)
        order = np.argsort(owner, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(owner[order]) != 0])
        return {self.src.owners[int(owner[order[lo]])].index: [held.take(order[lo:hi])]
                for lo, hi in zip(starts, np.r_[starts[1:], len(order)], strict=True)}

    def frames(self) -> Iterator[tuple[str, pd.DataFrame, pd.DataFrame]]:
        nodes = self._find_nodes()
        self.ex.progress.start(self.total, "edges", "frames")
        for la in self.src.layers:
            if not la.owns:
                continue  # an alias (Flatten, Reshape): no neurons of its own, no edges
            mine = _ids_in(nodes, la.offset, la.stop)
            stream = self.held.get(la.index, []) if self.held is not None else self._layer_edges(la, mine)
            yield from self._layer_frames(la, mine, stream)

    def _layer_edges(self, la: LayerInfo, mine: np.ndarray) -> Iterator[Edges]:
        """Pass 2: the selected edges into ``la``, each once. Top-k keeps every chosen edge of
        the targets it is given until their last edge is read, so it is given a block of
        ``chunk // k`` targets at a time."""
        eng, k = self.ex.engine, self.sel.top_k_in
        if la.index not in eng.in_range or not la.edges:
            return
        if not self.sel.cones:
            if k is None:
                yield from eng.layer_edges(la)
                return
            targets = mine
        else:
            targets = _ids_in(self.into, la.offset, la.stop)
        step = max(1, self.chunk // k) if k is not None else max(1, len(targets))
        for lo in range(0, len(targets), step):
            yield from eng.layer_edges(la, targets=targets[lo : lo + step])
        if not self.sel.cones:
            return
        ins = [_ids_in(self.out_of, lo, hi) for lo, hi in la.inputs]
        out_of = np.unique(np.concatenate(ins)) if ins else np.zeros(0, np.int64)
        if len(out_of):
            for e in eng.layer_edges(la, sources=out_of):
                e = e.take(np.flatnonzero(~self.into.contains(e.target)))  # those were given above
                if len(e):
                    yield e

    def _layer_frames(self, la: LayerInfo, mine: np.ndarray,
                      stream) -> Iterator[tuple[str, pd.DataFrame, pd.DataFrame]]:
        """Frames of ``la``: its edges in chunks, each with the neurons first met as their
        targets; then the neurons left (sources only, or seeds), a chunk at a time."""
        given = np.zeros(la.size, bool)
        for e in _rechunk(stream, self.chunk):
            local = e.target - la.offset
            fresh = _sorted_unique(local[~given[local]])
            given[fresh] = True
            self.ex.progress.advance(len(e))
            yield la.name, self._nodes(fresh + la.offset), edge_frame(e, self.extra)
        rest = mine[~given[mine - la.offset]]
        for lo in range(0, len(rest), self.chunk):
            yield la.name, self._nodes(rest[lo : lo + self.chunk]), edge_frame(Edges.concat([]), self.extra)

    def _nodes(self, ids: np.ndarray) -> pd.DataFrame:
        return node_frame(self.src.nodes(ids) if len(ids) else concat_nodes([], self.src.granularity))


def _sorted_unique(ids: np.ndarray) -> np.ndarray:
    """``np.unique(ids)`` for ids of one chunk: a bitmap over their span when it is small (the
    usual case: a chunk covers a block of rows), else a sort (both beat numpy's hash unique)."""
    if len(ids) == 0:
        return ids
    lo, hi = int(ids.min()), int(ids.max())
    if hi - lo < 16 * len(ids):
        mark = np.zeros(hi - lo + 1, bool)
        mark[ids - lo] = True
        return np.flatnonzero(mark) + lo
    ids = np.sort(ids)
    return ids[np.r_[True, ids[1:] != ids[:-1]]]


def _rechunk(stream, size: int) -> Iterator[Edges]:
    """Edge batches regrouped into batches of exactly ``size`` edges (the last one smaller): views
    of the incoming batches, copied only where a batch spans two of them (at most ``size``)."""
    held: list[Edges] = []
    n = 0
    for e in stream:
        while len(e):
            take = min(size - n, len(e))
            held.append(e.take(slice(0, take)) if take < len(e) else e)
            e = e.take(slice(take, len(e))) if take < len(e) else Edges.concat([])
            n += take
            if n == size:
                yield held[0] if len(held) == 1 else Edges.concat(held)
                held, n = [], 0
    if n:
        yield held[0] if len(held) == 1 else Edges.concat(held)
