"""The two passes over a source's edges and the per-neuron arrays they fill (memory O(neurons)).

Reverse pass (layers in reverse model order): everything but PageRank. Influence and the
strongest-path pointers of a layer's sources need the values of its targets to be final, which
they are once every later layer is done (the graph is a DAG in layer order). Forward pass (model
order): PageRank, which needs every source's out-strength (from the reverse pass) and PageRank
(from earlier layers): ``PR = (1 - d) + d * sum |w| PR(u) / out_strength(u)``.

Model sources run each layer as the extraction's tasks on an executor (results reduced in task
order, so any worker count gives the same numbers); folder and Neo4j sources stream
``Source.edges(layer)`` in this process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.analyze.accumulate import (
    Forward,
    ForwardPart,
    Reverse,
    ReversePart,
    Stats,
    forward_task,
    reverse_task,
)
from pipeline.analyze.columns import DAMPING
from pipeline.export.base import LayerInfo, Source
from pipeline.export.sources import ModelSource
from pipeline.progress import Progress


@dataclass
class State:
    """Per-neuron arrays over ids ``[0, n)`` and per-layer weight statistics."""

    n: int
    target: int | None
    thresholds: np.ndarray
    min_abs: float | None
    in_deg: np.ndarray = field(init=False)
    out_deg: np.ndarray = field(init=False)
    in_str: np.ndarray = field(init=False)
    out_str: np.ndarray = field(init=False)
    max_in: np.ndarray = field(init=False)
    max_out: np.ndarray = field(init=False)
    pagerank: np.ndarray = field(init=False)
    infl: np.ndarray | None = None
    best: np.ndarray | None = None
    ptr: np.ndarray | None = None
    stats: dict[int, Stats] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        n = self.n
        self.in_deg, self.out_deg = np.zeros(n, np.int32), np.zeros(n, np.int32)
        self.in_str, self.out_str = np.zeros(n), np.zeros(n)
        self.max_in, self.max_out = np.full(n, -1.0, np.float32), np.full(n, -1.0, np.float32)
        self.pagerank = np.full(n, 1.0 - DAMPING)
        if self.target is not None:
            self.infl, self.best = np.zeros(n), np.zeros(n)
            self.ptr = np.full(n, -1, np.int64)
            self.infl[self.target] = self.best[self.target] = 1.0

    def base_context(self) -> dict:
        return {"thresholds": self.thresholds.astype(np.float32), "min_abs": self.min_abs}

    # -- reductions, in task order
    def reduce_reverse(self, part: ReversePart) -> None:
        ts = part.targets
        if ts.arrays:
            s = slice(ts.lo, ts.hi)
            np.add(self.in_deg[s], ts["in_deg"], out=self.in_deg[s], casting="unsafe")
            self.in_str[s] += ts["in_str"]
            np.maximum(self.max_in[s], ts["max_in"], out=self.max_in[s])
        for ss in part.sources:
            s = slice(ss.lo, ss.hi)
            np.add(self.out_deg[s], ss["out_deg"], out=self.out_deg[s], casting="unsafe")
            self.out_str[s] += ss["out_str"]
            np.maximum(self.max_out[s], ss["max_out"], out=self.max_out[s])
            if self.infl is not None and "infl" in ss.arrays:
                self.infl[s] += ss["infl"]
                cur, new, ptr, nptr = self.best[s], ss["best"], self.ptr[s], ss["ptr"]
                better = new > cur
                tie = (new == cur) & (new > 0)
                ptr[better] = nptr[better]
                ptr[tie] = np.minimum(ptr[tie], nptr[tie])
                np.maximum(cur, new, out=cur)
        if part.layer in self.stats:
            self.stats[part.layer].merge(part.stats)
        else:
            self.stats[part.layer] = part.stats

    def q(self, inputs: list[tuple[int, int]]) -> tuple[int, np.ndarray]:
        """PR(u) / out_strength(u) over the span of a layer's inputs (0 where out_strength is 0)."""
        lo, hi = min(a for a, _ in inputs), max(b for _, b in inputs)
        out = self.out_str[lo:hi]
        q = np.divide(self.pagerank[lo:hi], out, out=np.zeros(hi - lo), where=out > 0)
        return lo, q


def _in_order(parts: Iterator[Any], progress: Progress) -> Iterator[Any]:
    """Parts as they complete, handed on in task order (a fixed reduction order)."""
    waiting: dict[int, Any] = {}
    nxt = 0
    for part in parts:
        progress.advance(part.edges)
        waiting[part.seq] = part
        while nxt in waiting:
            yield waiting.pop(nxt)
            nxt += 1
    yield from (waiting[k] for k in sorted(waiting))


class Runner:
    """Runs a pass's layers: extraction tasks on an executor (model sources) or a source's stream."""

    def __init__(self, src: Source, session, progress: Progress, task_edges: int | None = None):
        self.src, self.session, self.progress = src, session, progress
        self.task_edges = task_edges

    def reverse(self, la: LayerInfo, context: dict) -> Iterator[ReversePart]:
        if self.session is not None:
            yield from _in_order(self.session.map(reverse_task, self._tasks(la), context), self.progress)
            return
        acc = Reverse(context, la.inputs)
        for e in self.src.edges(la):
            acc.add(e.source, e.target, e.weight)
            self.progress.advance(len(e))
        yield acc.result(la.index, 0)

    def forward(self, la: LayerInfo, context: dict) -> Iterator[ForwardPart]:
        if self.session is not None:
            yield from _in_order(self.session.map(forward_task, self._tasks(la), context), self.progress)
            return
        acc = Forward(context)
        for e in self.src.edges(la):
            acc.add(e.source, e.target, e.weight)
            self.progress.advance(len(e))
        yield acc.result(la.index, 0)

    def _tasks(self, la: LayerInfo):
        from pipeline.extract.tasks import TASK_EDGES, layer_tasks

        assert isinstance(self.src, ModelSource)
        return layer_tasks(self.src.graph.layers[la.index], self.task_edges or TASK_EDGES)


def reverse_pass(state: State, layers: list[LayerInfo], runner: Runner) -> None:
    """Fill degrees, strengths, max |w|, weight statistics, influence and path pointers."""
    t0 = time.perf_counter()
    total = sum(la.edges for la in layers)
    runner.progress.start(total, "edges", "analyze: reverse pass")
    for la in reversed(layers):
        ctx = state.base_context()
        if state.infl is not None:
            s = slice(la.offset, la.stop)
            if state.infl[s].any() or state.best[s].any():
                ctx.update(t_lo=la.offset, infl=state.infl[s].copy(), best=state.best[s].copy())
        for part in runner.reverse(la, ctx):
            state.reduce_reverse(part)
    runner.progress.finish()
    state.seconds["reverse"] = round(time.perf_counter() - t0, 3)


def forward_pass(state: State, layers: list[LayerInfo], runner: Runner) -> None:
    """PageRank in layer order: each layer's neurons once all their sources are final."""
    t0 = time.perf_counter()
    runner.progress.start(sum(la.edges for la in layers), "edges", "analyze: forward pass (PageRank)")
    for la in layers:
        q_lo, q = state.q(la.inputs)
        ctx = {"min_abs": state.min_abs, "q_lo": q_lo, "q": q}
        acc = np.zeros(la.stop - la.offset)
        for part in runner.forward(la, ctx):
            ts = part.targets
            if ts.arrays:
                acc[ts.lo - la.offset : ts.hi - la.offset] += ts["pr"]
        state.pagerank[la.offset : la.stop] = (1.0 - DAMPING) + DAMPING * acc
    runner.progress.finish()
    state.seconds["forward"] = round(time.perf_counter() - t0, 3)


def strongest_path(state: State, src: Source, neuron_layers: list[LayerInfo]) -> list[tuple[int, float]]:
    """The max-product path from an input neuron (no in-edge) to the target, as (id, signed weight
    of the edge into it) from the input on (NaN for the first)."""
    assert state.best is not None and state.ptr is not None and state.target is not None
    ids = np.concatenate([np.arange(la.offset, la.stop) for la in neuron_layers])
    inputs = ids[state.in_deg[ids] == 0]
    if state.in_deg[state.target] == 0 or not len(inputs):
        return [(state.target, float("nan"))]
    scores = state.best[inputs]
    start = int(inputs[int(np.argmax(scores))])  # ties: the smallest id
    if scores.max() <= 0:
        return []
    path = [start]
    while path[-1] != state.target:
        path.append(int(state.ptr[path[-1]]))
    steps = [(start, float("nan"))]
    for u, v in zip(path, path[1:], strict=False):
        steps.append((v, _edge_weight(state, src, u, v)))
    return steps


def _edge_weight(state: State, src: Source, u: int, v: int) -> float:
    """The signed weight of the strongest edge u -> v (a targeted read of v's in-edges)."""
    la = src.owners[int(src.owner(np.array([v], np.int64))[0])]
    want = np.array([v], np.int64)
    best = None
    for e in src.edges(la, targets=want):
        keep = (e.source == u) & (e.target == v)
        if state.min_abs:
            keep &= np.abs(e.weight) >= np.float32(state.min_abs)
        for w in e.weight[keep].tolist():
            if best is None or abs(w) > abs(best):
                best = w
    assert best is not None, f"no edge {u} -> {v}"
    return float(best)
