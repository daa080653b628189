"""The analysis's fast path: whole (weight pair x position) blocks reduced without expanding them.

Conv, Dense, transposed conv and layer norm hand :func:`~pipeline.layers.base.emit_pairs` a full
grid of channel pairs (every source channel of ``rows`` with every target channel of ``cols``, one
kernel entry each) repeated over positions ``p``: edge ``src[p] + rows[r] -> tgt[p] + cols[c]``
with weight ``w[r, c]``. Per block, the per-neuron measures are then kernel reductions broadcast
over positions (strengths: column and row sums of |W|; influence and PageRank: a product of the
position x channel map with |W|; max |w|: column and row maxima), and the weight statistics count
each kernel entry once with multiplicity ``P``. Only the strongest-path step looks at every
(position, pair) product, in one vectorised multiply and argmax. Other blocks (diagonal pairs,
groups, per-position weights) are declined and take the per-edge path.

Products use ``np.einsum`` without BLAS, so a task's numbers do not depend on thread counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.layers.base import PairBlock

#: Elements of the (positions, rows, cols) product array of the path step computed at a time.
PATH_ELEMENTS = 1 << 17


def _spaced(base: np.ndarray, width: int) -> bool:
    """True when ``base[p] + [0, width]`` ranges are disjoint and increasing (ids all distinct)."""
    return len(base) < 2 or bool(np.diff(base).min() > width)


@dataclass
class Grid:
    """A block whose pairs are the full grid ``rows x cols`` (both strictly increasing).

    ``a64`` is |w| in float64 with dropped entries (below ``min_abs``) zero; ``keep`` marks the kept
    entries (None: all). Ids of different positions never collide, so fancy-indexed updates are exact.
    """

    src: np.ndarray  # (P,) source base per position
    tgt: np.ndarray  # (P,) target base per position
    rows: np.ndarray  # (R,) source channel offsets
    cols: np.ndarray  # (C,) target channel offsets
    w: np.ndarray  # (R, C) float32, signed
    a: np.ndarray  # (R, C) float32, |w|
    a64: np.ndarray  # (R, C) float64, |w| where kept, else 0
    keep: np.ndarray | None

    @property
    def positions(self) -> int:
        return len(self.src)

    @property
    def total(self) -> int:
        """Edges of the block before the weight filter."""
        return len(self.src) * self.w.size

    @property
    def kept(self) -> int:
        return self.w.size if self.keep is None else int(np.count_nonzero(self.keep))

    def kept_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """The kept entries' signed weights and |w| (flat, each carried by every position)."""
        if self.keep is None:
            return self.w.reshape(-1), self.a.reshape(-1)
        return self.w[self.keep], self.a[self.keep]

    def maxima(self, axis: int) -> np.ndarray:
        """Max |w| of the kept entries per column (axis 0) or row (axis 1); -1 where none."""
        a = self.a if self.keep is None else np.where(self.keep, self.a, np.float32(-1.0))
        return a.max(axis=axis)

    def counts(self, axis: int) -> np.ndarray | int:
        """Kept entries per column (axis 0) or row (axis 1)."""
        return self.w.shape[axis] if self.keep is None else np.count_nonzero(self.keep, axis=axis)

    def target_bounds(self) -> tuple[int, int]:
        return int(self.tgt[0] + self.cols[0]), int(self.tgt[-1] + self.cols[-1]) + 1

    def source_bounds(self) -> tuple[int, int]:
        return int(self.src[0] + self.rows[0]), int(self.src[-1] + self.rows[-1]) + 1

    def target_index(self, lo: int) -> np.ndarray:
        """(P, C) target ids minus ``lo``."""
        return (self.tgt - lo)[:, None] + self.cols[None, :]

    def source_index(self, lo: int) -> np.ndarray:
        """(P, R) source ids minus ``lo``."""
        return (self.src - lo)[:, None] + self.rows[None, :]


def grid_of(b: PairBlock, min_abs: float | None) -> Grid | None:
    """The block as a :class:`Grid`, or None when its pairs are not a full increasing grid (or it
    has per-position weights, or positions whose ids could collide)."""
    if b.pos_w is not None:
        return None
    ps, pt = b.pair_src, b.pair_tgt
    k = len(ps)
    c = k if ps[-1] == ps[0] else int(np.argmax(ps != ps[0]))
    if k % c:
        return None
    r = k // c
    rows, cols = ps[::c], pt[:c]
    if (r > 1 and np.diff(rows).min() <= 0) or (c > 1 and np.diff(cols).min() <= 0):
        return None
    if not (np.array_equal(ps.reshape(r, c), np.broadcast_to(rows[:, None], (r, c)))
            and np.array_equal(pt.reshape(r, c), np.broadcast_to(cols[None, :], (r, c)))):
        return None
    if not (_spaced(b.src_base, int(rows[-1] - rows[0])) and _spaced(b.tgt_base, int(cols[-1] - cols[0]))):
        return None
    w = np.ascontiguousarray(b.pair_w, np.float32).reshape(r, c)
    a = np.abs(w)
    keep = None
    a64 = a.astype(np.float64)
    if min_abs:
        keep = a >= np.float32(min_abs)
        if keep.all():
            keep = None
        else:
            a64[~keep] = 0.0
    return Grid(b.src_base, b.tgt_base, rows, cols, w, a, a64, keep)


def add_targets(g: Grid, span: Any) -> None:
    """In-degree, in-strength and max |w| in of the block's targets (a Span of TARGET_FIELDS)."""
    span.fit_range(*g.target_bounds())
    idx = g.target_index(span.lo)
    span["in_deg"][idx] += g.counts(0)
    span["in_str"][idx] += g.a64.sum(axis=0)
    span["max_in"][idx] = np.maximum(span["max_in"][idx], g.maxima(0))


def add_sources(g: Grid, span: Any, infl: np.ndarray | None, best: np.ndarray | None, t_lo: int,
                no_ptr: int) -> None:
    """Out-degree, out-strength, max |w| out of the block's sources; with a target (``infl`` and
    ``best`` over the targets from ``t_lo``) their influence and strongest-path step (ties to the
    smaller target id; ``no_ptr`` marks none)."""
    span.fit_range(*g.source_bounds())
    idx = g.source_index(span.lo)
    span["out_deg"][idx] += g.counts(1)
    span["out_str"][idx] += g.a64.sum(axis=1)
    span["max_out"][idx] = np.maximum(span["max_out"][idx], g.maxima(1))
    if infl is None:
        return
    tpos = g.target_index(t_lo)
    span["infl"][idx] += np.einsum("pc,rc->pr", infl[tpos], g.a64, optimize=False)
    bt = best[tpos]
    live = np.flatnonzero(bt.max(axis=1) > 0)
    if not len(live):
        return
    r, c = g.a64.shape
    step = max(1, PATH_ELEMENTS // (r * c))
    buf = np.empty(min(step, len(live)) * r * c)
    for k in range(0, len(live), step):
        ps = live[k : k + step]
        prod = np.multiply(bt[ps, None, :], g.a64[None], out=buf[: len(ps) * r * c].reshape(len(ps), r, c))
        j = prod.argmax(axis=2)  # first maximum: the smallest target id
        val = np.take_along_axis(prod, j[..., None], axis=2)[..., 0]
        tgt = g.tgt[ps, None] + g.cols[j]
        sl = idx[ps]
        cur, ptr = span["best"][sl], span["ptr"][sl]
        better = val > cur
        tie = (val == cur) & (val > 0)
        span["ptr"][sl] = np.where(better, tgt, np.where(tie, np.minimum(ptr, tgt), ptr))
        span["best"][sl] = np.maximum(cur, val)


def add_pagerank(g: Grid, span: Any, q: np.ndarray, q_lo: int) -> None:
    """``pr[v] += sum |w| q[u]`` over the block's edges (a Span with field ``pr``)."""
    span.fit_range(*g.target_bounds())
    qs = q[g.source_index(q_lo)]
    span["pr"][g.target_index(span.lo)] += np.einsum("pr,rc->pc", qs, g.a64, optimize=False)
