"""The per-edge work of the analysis: vectorised reductions of edge chunks into partial per-neuron
arrays over the id spans a task touches, and the two task functions executors run.

* :class:`Reverse` (the reverse pass, layers in reverse order): in/out degree and strength, max
  |w| in and out (for the threshold sweep), the layer's weight statistics and fine histogram, and
  with a target the influence (``sum |w| * influence(target)``) and the strongest-path step
  (``max |w| * best(target)``, ties to the smaller target id) of every source.
* :class:`Forward` (the forward pass, topological order): the PageRank sum
  ``sum |w| * PR(u) / out_strength(u)`` of every target (``q = PR / out_strength`` is the context).

In a task, both take whole emit_pairs blocks that are full channel grids (conv, dense: the bulk
of the edges) through :mod:`pipeline.analyze.blocks` without expanding them into edges
(``block_consumer``); every other edge arrives as chunks. All sums are float64. A task's result
depends only on its edges and their order, so partial results reduced in task order give the same
numbers whatever ran them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.analyze import blocks
from pipeline.extract.tasks import CACHE_EDGES, task_edges
from pipeline.layers.base import PairBlock, Task, block_consumer, reused_buffers
from pipeline.spec import ModelGraph

#: |w| histogram: the top 16 bits of the float32 (sign, 8 exponent, 7 mantissa bits), so 128 bins
#: per octave, exact counts, bin edges exactly representable; quantiles are read from it.
FINE_SHIFT = 16
FINE_BINS = 1 << (31 - FINE_SHIFT)  # |w| has a zero sign bit
#: Edges reduced at a time (kept small: the arrays stay in cache, as in extraction).
ANALYZE_EDGES = CACHE_EDGES
_NO_PTR = np.iinfo(np.int64).max
#: Reduce whole kernel blocks (:mod:`.blocks`); False forces the per-edge path (tests compare both).
BLOCKS = True


class Span:
    """Arrays over a growing id span ``[lo, hi)``: one per field, each with its fill value."""

    def __init__(self, fields: dict[str, tuple[type, float]]):
        self.fields = fields
        self.lo = self.hi = 0
        self.arrays: dict[str, np.ndarray] = {}

    def fit(self, ids: np.ndarray) -> np.ndarray:
        """Grow to hold ``ids``; their positions in the arrays."""
        lo, hi = int(ids.min()), int(ids.max()) + 1
        if not self.arrays or lo < self.lo or hi > self.hi:
            nlo, nhi = (lo, hi) if not self.arrays else (min(lo, self.lo), max(hi, self.hi))
            grown = {k: np.full(nhi - nlo, fill, dtype) for k, (dtype, fill) in self.fields.items()}
            for k, old in self.arrays.items():
                grown[k][self.lo - nlo : self.hi - nlo] = old
            self.arrays, self.lo, self.hi = grown, nlo, nhi
        return ids - self.lo

    def fit_range(self, lo: int, hi: int) -> None:
        """Grow to hold ids ``[lo, hi)`` (callers that know their bounds skip the min/max scan)."""
        if not self.arrays or lo < self.lo or hi > self.hi:
            self.fit(np.array([lo, hi - 1], np.int64))

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


TARGET_FIELDS = {"in_deg": (np.int64, 0), "in_str": (np.float64, 0.0), "max_in": (np.float32, -1.0)}
SOURCE_FIELDS = {"out_deg": (np.int64, 0), "out_str": (np.float64, 0.0), "max_out": (np.float32, -1.0)}
PATH_FIELDS = {"infl": (np.float64, 0.0), "best": (np.float64, 0.0), "ptr": (np.int64, _NO_PTR)}


@dataclass
class Stats:
    """Weight statistics of a stream of edges (mergeable in a fixed order)."""

    thresholds: np.ndarray  # float32, sorted
    edges: int = 0
    amin: float = np.inf
    amax: float = -np.inf
    wmin: float = np.inf
    wmax: float = -np.inf
    wsum: float = 0.0
    wsq: float = 0.0
    asum: float = 0.0
    hist: np.ndarray = field(default_factory=lambda: np.zeros(FINE_BINS, np.int64))
    exact: np.ndarray | None = None  # per threshold: edges in its own fine bin with |w| >= it

    def __post_init__(self):
        self.tbins = (self.thresholds.view(np.uint32) >> FINE_SHIFT).astype(np.int64)
        self.lut = np.zeros(FINE_BINS, bool)
        self.lut[self.tbins] = True
        if self.exact is None:
            self.exact = np.zeros(len(self.thresholds), np.int64)

    def add(self, w: np.ndarray, a: np.ndarray, scratch: np.ndarray, mult: int = 1) -> None:
        """Edges of signed weights ``w`` (``a = |w|``), each weight carried by ``mult`` edges (a
        block's kernel entries repeat over its positions: the counts stay exact)."""
        self.edges += len(w) * mult
        self.wmin = min(self.wmin, float(w.min()))
        self.wmax = max(self.wmax, float(w.max()))
        self.amin, self.amax = min(self.amin, float(a.min())), max(self.amax, float(a.max()))
        self.wsum += mult * float(w.sum(dtype=np.float64))
        sq = np.multiply(w, w, out=scratch[: len(w)])
        self.wsq += mult * float(sq.sum(dtype=np.float64))
        bins = a.view(np.uint32) >> FINE_SHIFT
        counts = np.bincount(bins, minlength=FINE_BINS)
        self.hist += counts if mult == 1 else counts * mult
        edge = self.lut[bins]
        if edge.any():
            vals, vb = a[edge], bins[edge]
            for j, t in enumerate(self.thresholds):
                self.exact[j] += mult * int(np.count_nonzero((vb == self.tbins[j]) & (vals >= t)))

    def merge(self, other: Stats) -> None:
        self.edges += other.edges
        self.wmin, self.wmax = min(self.wmin, other.wmin), max(self.wmax, other.wmax)
        self.amin, self.amax = min(self.amin, other.amin), max(self.amax, other.amax)
        self.wsum += other.wsum
        self.wsq += other.wsq
        self.asum += other.asum
        self.hist += other.hist
        self.exact += other.exact

    def kept(self) -> np.ndarray:
        """Edges with |w| >= each threshold (exact)."""
        above = np.cumsum(self.hist[::-1])[::-1]  # above[b] = edges in bins >= b
        return np.array([(above[b + 1] if b + 1 < FINE_BINS else 0) + self.exact[j]
                         for j, b in enumerate(self.tbins)], np.int64)


class Reverse:
    """The reverse pass over one stream of edges (a task, or a layer of a folder/Neo4j source).

    ``context``: ``thresholds`` (float32), ``min_abs`` (or None), and with a target ``t_lo`` with
    ``infl``/``best`` over the layer's output from ``t_lo`` (final: later layers are done).
    """

    def __init__(self, context: dict, inputs: list[tuple[int, int]]):
        self.min_abs = context.get("min_abs")
        self.infl, self.best = context.get("infl"), context.get("best")
        self.t_lo = context.get("t_lo", 0)
        self.stats = Stats(np.asarray(context["thresholds"], np.float32))
        self.targets = Span(TARGET_FIELDS)
        fields = {**SOURCE_FIELDS, **(PATH_FIELDS if self.infl is not None else {})}
        self.inputs = _merge_ranges(inputs)
        self.starts = np.array([lo for lo, _ in self.inputs], np.int64)
        self.sources = [Span(fields) for _ in self.inputs]
        self.scratch = np.empty(0, np.float32)
        self.seen = 0

    def add(self, source: np.ndarray, target: np.ndarray, weight: np.ndarray) -> None:
        self.seen += len(source)
        if len(source) == 0:
            return
        a = np.abs(weight)
        if self.min_abs:
            keep = a >= np.float32(self.min_abs)
            if not keep.all():
                source, target, weight, a = source[keep], target[keep], weight[keep], a[keep]
                if len(source) == 0:
                    return
        if len(self.scratch) < len(weight):
            self.scratch = np.empty(len(weight), np.float32)
        self.stats.add(weight, a, self.scratch)
        ts = self.targets
        tl = ts.fit(target)
        ts["in_deg"][:] += np.bincount(tl, minlength=len(ts["in_deg"]))
        ts["in_str"][:] += np.bincount(tl, a, minlength=len(ts["in_str"]))
        np.maximum.at(ts["max_in"], tl, a)
        if len(self.sources) == 1:
            self._sources(self.sources[0], source, target, a)
            return
        which = np.searchsorted(self.starts, source, side="right") - 1
        for k in np.unique(which):
            sel = which == k
            self._sources(self.sources[k], source[sel], target[sel], a[sel])

    def block(self, b: PairBlock) -> bool:
        """Take a whole emit_pairs block when it is a full channel grid (see :mod:`.blocks`)."""
        g = blocks.grid_of(b, self.min_abs)
        if g is None:
            return False
        lo, hi = g.source_bounds()
        k = int(np.searchsorted(self.starts, lo, side="right")) - 1
        if k < 0 or hi > self.inputs[k][1]:  # sources outside one input range: the per-edge path
            return False
        self.seen += g.total
        if not g.kept:
            return True
        w, a = g.kept_weights()
        if len(self.scratch) < len(w):
            self.scratch = np.empty(len(w), np.float32)
        self.stats.add(w, a, self.scratch, g.positions)
        blocks.add_targets(g, self.targets)
        blocks.add_sources(g, self.sources[k], self.infl, self.best, self.t_lo, _NO_PTR)
        return True

    def _sources(self, ss: Span, source, target, a) -> None:
        sl = ss.fit(source)
        n = len(ss["out_deg"])
        ss["out_deg"][:] += np.bincount(sl, minlength=n)
        ss["out_str"][:] += np.bincount(sl, a, minlength=n)
        np.maximum.at(ss["max_out"], sl, a)
        if self.infl is None:
            return
        tpos = target - self.t_lo
        ss["infl"][:] += np.bincount(sl, a * self.infl[tpos], minlength=n)
        val = a * self.best[tpos]
        live = np.flatnonzero(val > 0)
        if not len(live):
            return
        sl, val, tgt = sl[live], val[live], target[live]
        best = ss["best"]
        before = best[sl]
        np.maximum.at(best, sl, val)
        after = best[sl]
        hit = val == after
        ss["ptr"][sl[hit & (after > before)]] = _NO_PTR  # a better step: forget the old pointer
        np.minimum.at(ss["ptr"], sl[hit], tgt[hit])

    def result(self, layer: int, seq: int) -> ReversePart:
        self.stats.asum = float(self.targets["in_str"].sum()) if self.targets.arrays else 0.0
        return ReversePart(layer, seq, self.stats, self.targets, [s for s in self.sources if s.arrays], self.seen)


@dataclass
class ReversePart:
    """A reverse-pass partial result: the target span, the source spans, the weight statistics."""

    layer: int
    seq: int
    stats: Stats
    targets: Span
    sources: list[Span]
    edges: int  # read (before the weight filter)


class Forward:
    """The forward pass over one stream: ``pr[v] += |w| * q[u]`` (context ``q`` from ``q_lo``)."""

    def __init__(self, context: dict):
        self.min_abs = context.get("min_abs")
        self.q, self.q_lo = context["q"], context["q_lo"]
        self.targets = Span({"pr": (np.float64, 0.0)})
        self.edges = 0

    def add(self, source: np.ndarray, target: np.ndarray, weight: np.ndarray) -> None:
        self.edges += len(source)
        if len(source) == 0:
            return
        a = np.abs(weight)
        if self.min_abs:
            keep = a >= np.float32(self.min_abs)
            source, target, a = source[keep], target[keep], a[keep]
            if len(source) == 0:
                return
        tl = self.targets.fit(target)
        pr = self.targets["pr"]
        pr += np.bincount(tl, a * self.q[source - self.q_lo], minlength=len(pr))

    def block(self, b: PairBlock) -> bool:
        """Take a whole emit_pairs block when it is a full channel grid (see :mod:`.blocks`)."""
        g = blocks.grid_of(b, self.min_abs)
        if g is None:
            return False
        self.edges += g.total
        if g.kept:
            blocks.add_pagerank(g, self.targets, self.q, self.q_lo)
        return True

    def result(self, layer: int, seq: int) -> ForwardPart:
        return ForwardPart(layer, seq, self.targets, self.edges)


@dataclass
class ForwardPart:
    """A forward-pass partial result: the PageRank sums over the target span."""

    layer: int
    seq: int
    targets: Span
    edges: int


def _merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, overlapping ranges merged (an Add of a tensor with itself has one input range)."""
    out: list[list[int]] = []
    for lo, hi in sorted(set(ranges)):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out] or [(0, 1)]


def _stream(graph: ModelGraph, task: Task, acc) -> None:
    """Reduce a task's edges into ``acc``: whole blocks where it takes them, chunks otherwise."""
    with reused_buffers(ANALYZE_EDGES), block_consumer(acc.block if BLOCKS else _decline):
        for chunk in task_edges(graph, task, ANALYZE_EDGES):
            acc.add(chunk.source, chunk.target, chunk.weight)


def _decline(block: PairBlock) -> bool:
    return False


def reverse_task(graph: ModelGraph, task: Task, context: dict) -> ReversePart:
    """The reverse pass over one extraction task's edges (run by an executor)."""
    spec = graph.layers[task.layer]
    acc = Reverse(context, [(t.offset, t.offset + t.size) for t in spec.inputs])
    _stream(graph, task, acc)
    return acc.result(task.layer, task.seq)


def forward_task(graph: ModelGraph, task: Task, context: dict) -> ForwardPart:
    """The forward (PageRank) pass over one extraction task's edges (run by an executor)."""
    acc = Forward(context)
    _stream(graph, task, acc)
    return acc.result(task.layer, task.seq)
