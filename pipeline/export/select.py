"""Selections and the engine that streams them: a layer range, weight filters, top-k per target
and cones (breadth-first from seed neurons) over any :class:`~pipeline.export.base.Source`, with
the size guard that refuses a selection over a sink's limit before anything is written."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import UsageError
from pipeline.export.base import LayerInfo, Source
from pipeline.export.edges import Edges, IdSet
from pipeline.plan import BYTES_PER_EDGE, BYTES_PER_NODE, human_bytes
from pipeline.progress import NULL, Progress


class ExportTooLarge(UsageError):
    """The selection exceeds a sink's size limit; the message names the knobs that shrink it."""

    def __init__(self, sink: str, edges: int, nodes: int, limit: int, exact: bool):
        self.sink, self.edges, self.nodes, self.limit = sink, edges, nodes, limit
        self.bytes = int(edges * BYTES_PER_EDGE[sink] + nodes * BYTES_PER_NODE[sink])
        what = f"{edges:,} edges and {nodes:,} nodes" if exact else f"more than {limit:,} edges"
        super().__init__(
            f"the selection has {what} (about {human_bytes(self.bytes)} as {sink}), over the {sink} "
            f"limit of {limit:,} edges; shrink it with --layers, --upstream-of/--downstream-of with "
            "--depth, --min-abs-weight, --top-k-in or a smaller --input-shape, or pass --force "
            "to go ahead"
        )


@dataclass
class Selection:
    """What to export (see :mod:`pipeline.export`); build it with :meth:`make`, which checks it."""

    layers: str | None = None
    upstream_of: list[str] = field(default_factory=list)
    downstream_of: list[str] = field(default_factory=list)
    depth: int | None = None
    min_abs_weight: float | None = None
    top_k_in: int | None = None
    cypher: str | None = None

    @classmethod
    def make(cls, layers=None, upstream_of=None, downstream_of=None, depth=None, min_abs_weight=None,
             top_k_in=None, cypher=None) -> Selection:
        """A checked selection; one seed (``"LAYER:INDEX"``) or a list for the cones."""
        def listify(v):
            return [] if v is None else [v] if isinstance(v, str | tuple) else list(v)

        sel = cls(layers, listify(upstream_of), listify(downstream_of), depth, min_abs_weight, top_k_in, cypher)
        if depth is not None and depth < 0:
            raise UsageError(f"bad depth {depth}: give 0 or more")
        if top_k_in is not None and top_k_in < 1:
            raise UsageError(f"bad top-k-in {top_k_in}: give 1 or more")
        if min_abs_weight is not None and not min_abs_weight >= 0:
            raise UsageError(f"bad min-abs-weight {min_abs_weight}: give 0 or more")
        if depth is not None and not (sel.upstream_of or sel.downstream_of):
            raise UsageError("--depth applies to --upstream-of/--downstream-of; give one of them")
        if cypher and (sel.upstream_of or sel.downstream_of):
            raise UsageError("--cypher cannot be combined with --upstream-of/--downstream-of")
        return sel

    @property
    def cones(self) -> bool:
        """Whether upstream or downstream cones are asked for."""
        return bool(self.upstream_of or self.downstream_of)


def layer_range(src: Source, text: str | None) -> list[LayerInfo]:
    """Layers in ``FIRST:LAST`` (names or indexes, inclusive; either side may be empty)."""
    layers = src.layers
    if not text:
        return list(layers)
    if ":" not in text:
        raise UsageError(f"bad layer range {text!r}: expected FIRST:LAST, e.g. block1_conv1:block2_pool")

    def position(token: str) -> int:
        if re.fullmatch(r"-?\d+", token):
            i = int(token)
            if not -len(layers) <= i < len(layers):
                raise UsageError(f"layer index {i} out of range 0..{len(layers) - 1}")
            return i % len(layers)
        for k, la in enumerate(layers):
            if la.name == token:
                return k
        raise UsageError(f"no layer named {token!r}; layers: {', '.join(la.name for la in layers)}")

    first, last = text.split(":", 1)
    lo = position(first) if first else 0
    hi = position(last) if last else len(layers) - 1
    if lo > hi:
        raise UsageError(f"bad layer range {text!r}: {first} comes after {last}")
    return layers[lo : hi + 1]


def neuron_id(src: Source, text: str | tuple) -> int:
    """The id of ``LAYER:INDEX`` (INDEX: ``h,w,c`` position or flat unit number)."""
    if isinstance(text, tuple):
        layer_name, index = text[0], text[1]
    else:
        if ":" not in text:
            raise UsageError(f"bad neuron {text!r}: expected LAYER:INDEX, e.g. block5_conv3:0,0,7 or predictions:281")
        layer_name, index = text.rsplit(":", 1)
    layer = next((la for la in src.layers if la.name == layer_name), None)
    if layer is None:
        raise UsageError(f"no layer named {layer_name!r}; layers: {', '.join(la.name for la in src.layers)}")
    try:
        pos = tuple(int(p) for p in str(index).split(",")) if isinstance(index, str) else (
            tuple(index) if isinstance(index, (tuple, list)) else (int(index),))
    except ValueError:
        raise UsageError(f"bad neuron index {index!r}: give a unit number or a position like 3,4,7") from None
    if len(pos) == 1:
        flat = pos[0]
        if not 0 <= flat < layer.size:
            raise UsageError(f"unit {flat} is out of range 0..{layer.size - 1} of layer {layer.name}")
    else:
        if len(pos) != len(layer.shape):
            axes = ",".join("hwc"[-len(layer.shape):]) if len(layer.shape) <= 3 else f"{len(layer.shape)} numbers"
            raise UsageError(f"position {index} has {len(pos)} coordinates but layer {layer.name} of shape "
                             f"{layer.shape} has {len(layer.shape)} axes; give {axes} or one unit number")
        if any(not 0 <= p < s for p, s in zip(pos, layer.shape, strict=True)):
            raise UsageError(f"position {index} is outside layer {layer.name} of shape {layer.shape}")
        flat = int(np.ravel_multi_index(pos, layer.shape))
    return layer.offset + flat


def _top_k(e: Edges, k: int) -> Edges:
    """Per target, the k edges of largest |weight| (ties: smaller source first)."""
    if len(e) == 0:
        return e
    order = np.lexsort((e.source, -np.abs(e.weight), e.target))
    t = e.target[order]
    start = np.r_[0, np.flatnonzero(np.diff(t)) + 1]
    rank = np.arange(len(t)) - np.repeat(start, np.diff(np.r_[start, len(t)]))
    return e.take(order[rank < k])


class Engine:
    """Streams the selected edges of a source; counts them and remembers their endpoints."""

    def __init__(self, src: Source, sel: Selection, limit: int | None, sink: str, progress: Progress = NULL):
        self.src, self.sel, self.limit, self.sink, self.progress = src, sel, limit, sink, progress
        self.chosen = layer_range(src, sel.layers)
        self.in_range = {la.index for la in self.chosen}
        self.nodes = IdSet()
        self.count = 0
        self.sized: int | None = None  # edges counted by check_size, when it had to count
        self.seeds = np.zeros(0, np.int64)

    # -- size
    def estimate(self) -> tuple[int, bool]:
        """(edges, exact) before any work: exact without weight filters, cones or Cypher."""
        total = 0
        for la in self.chosen:
            e = la.edges
            if self.sel.top_k_in is not None and la.owns:
                e = min(e, self.sel.top_k_in * la.size)
            total += e
        exact = not (self.sel.cones or self.sel.cypher or self.sel.min_abs_weight)
        return total, exact and self.sel.top_k_in is None

    def check_size(self, force: bool) -> None:
        """Refuse a selection over the limit before anything is written.

        Exact selections are refused from the layer counts. A selection whose size is only bounded
        (cones, weight filters) and whose bound exceeds the limit is counted first, without writing
        or keeping anything, stopping as soon as it passes the limit.
        """
        edges, exact = self.estimate()
        if force or self.limit is None or self.sel.cypher or edges <= self.limit:
            return
        if exact:
            nodes = sum(la.size for la in self.chosen if la.owns)
            raise ExportTooLarge(self.sink, edges, nodes, self.limit, True)
        self.progress.start(edges, "edges", f"size {self.sink} (at most)")
        counted = 0
        try:
            for e in self._stream():
                counted += len(e)
                self.progress.advance(len(e))
                if counted > self.limit:
                    raise ExportTooLarge(self.sink, counted, 0, self.limit, False)
        finally:
            self.progress.finish()
        self.sized = counted

    def describe(self) -> str:
        """The selection's size in words, before the work: exact, counted, or an upper bound."""
        edges, exact = self.estimate()
        if self.sized is not None:
            edges, exact = self.sized, True
        if self.sel.cypher:
            return "the edges the Cypher query returns (size known only afterwards)"
        size = human_bytes(edges * BYTES_PER_EDGE[self.sink])
        return f"{'' if exact else 'at most '}{edges:,} edges (about {size} as {self.sink})"

    def _account(self, e: Edges, force: bool) -> None:
        self.count += len(e)
        if not force and self.limit is not None and self.count > self.limit:
            raise ExportTooLarge(self.sink, self.count, 0, self.limit, False)
        self.nodes.add(e.source)
        self.nodes.add(e.target)
        self.progress.advance(len(e))

    # -- filters
    def _filter(self, e: Edges, targets=None, sources=None) -> Edges:
        keep = np.ones(len(e), bool)
        if targets is not None:
            keep &= _member(e.target, targets)
        if sources is not None:
            keep &= _member(e.source, sources)
        if self.sel.min_abs_weight:
            keep &= np.abs(e.weight) >= np.float32(self.sel.min_abs_weight)
        return e if keep.all() else e.take(np.flatnonzero(keep))

    def layer_edges(self, la: LayerInfo, targets=None, sources=None) -> Iterator[Edges]:
        """Edges of G' (range and weight filters) into layer la, restricted to targets/sources."""
        k = self.sel.top_k_in
        if k is not None and sources is not None:  # top-k needs every edge into the targets
            hit = [self._filter(e, sources=sources).target for e in self.src.edges(la, sources=sources)]
            t = np.unique(np.concatenate(hit)) if hit else np.zeros(0, np.int64)
            if targets is not None:
                t = t[_member(t, targets)]
            if len(t):
                for e in self.layer_edges(la, targets=t):
                    e = self._filter(e, sources=sources)
                    if len(e):
                        yield e
            return
        if k is None:
            for e in self.src.edges(la, targets, sources):
                e = self._filter(e, targets, sources)
                if len(e):
                    yield e
            return
        kept = Edges.concat([])
        for e in self.src.edges(la, targets, sources):
            kept = _top_k(Edges.concat([kept, self._filter(e, targets)]), k)
        if len(kept):
            yield kept

    # -- traversal
    def _stream(self) -> Iterator[Edges]:
        sel = self.sel
        if sel.cypher:
            return self._cypher()
        if sel.cones:
            return self._cones()
        return (e for la in self.chosen if la.edges for e in self.layer_edges(la))

    def run(self, force: bool = False) -> Iterator[Edges]:
        """The selected edges, counted and their endpoints (and the cone seeds) kept in
        :attr:`nodes`; over the limit mid-way raises :class:`ExportTooLarge` unless ``force``."""
        for e in self._stream():
            self._account(e, force)
            yield e
        self.nodes.add(self.seeds)

    def _cypher(self) -> Iterator[Edges]:
        got = Edges.concat(list(self.src.cypher(self.sel.cypher)))
        if self.sel.layers:
            owner = self.src.owner(got.target)
            ok = np.array([self.src.owners[o].index in self.in_range for o in owner], bool) if len(owner) else owner >= 0
            got = got.take(np.flatnonzero(ok))
        got = self._filter(got)
        if self.sel.top_k_in is not None:
            got = _top_k(got, self.sel.top_k_in)
        if len(got):
            yield got

    def _cones(self) -> Iterator[Edges]:
        up = np.unique(np.array([neuron_id(self.src, s) for s in self.sel.upstream_of], np.int64))
        down = np.unique(np.array([neuron_id(self.src, s) for s in self.sel.downstream_of], np.int64))
        self.seeds = np.union1d(up, down)
        if len(up):
            yield from self._bfs(up, upstream=True)
        if len(down):
            yield from self._bfs(down, upstream=False)

    def _bfs(self, frontier: np.ndarray, upstream: bool) -> Iterator[Edges]:
        seen = IdSet()
        seen.add(frontier)
        depth = 0
        while len(frontier) and (self.sel.depth is None or depth < self.sel.depth):
            found = []
            if upstream:
                owner = self.src.owner(frontier)
                for k in np.unique(owner):
                    la = self.src.owners[k]
                    if la.index not in self.in_range:
                        continue
                    for e in self.layer_edges(la, targets=frontier[owner == k]):
                        found.append(e.source)
                        yield e
            else:
                for la in self.chosen:
                    mine = frontier[np.zeros(len(frontier), bool) | _in_ranges(frontier, la.inputs)]
                    if not len(mine) or not la.edges:
                        continue
                    for e in self.layer_edges(la, sources=mine):
                        found.append(e.target)
                        yield e
            nxt = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
            frontier = nxt[~seen.contains(nxt)]
            seen.add(frontier)
            depth += 1


def _member(values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """values in wanted (sorted unique), via a bitmap over wanted's span."""
    if len(wanted) == 0:
        return np.zeros(len(values), bool)
    lo, hi = int(wanted[0]), int(wanted[-1])
    if hi - lo > 64 * max(len(values), len(wanted)):
        return np.isin(values, wanted)
    bits = np.zeros(hi - lo + 1, bool)
    bits[wanted - lo] = True
    ok = (values >= lo) & (values <= hi)
    out = np.zeros(len(values), bool)
    out[ok] = bits[values[ok] - lo]
    return out


def _in_ranges(ids: np.ndarray, ranges: list[tuple[int, int]]) -> np.ndarray:
    out = np.zeros(len(ids), bool)
    for lo, hi in ranges:
        out |= (ids >= lo) & (ids < hi)
    return out
