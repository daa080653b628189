"""Edges of layers that move values without mixing them: each target pulls from one source cell.

Padding, cropping, nearest upsampling, permutation, concatenation and (broadcasting) merges all map
an output coordinate to at most one coordinate of an input. :func:`pull_edges` evaluates that map on
whole blocks of output ids at once (``unravel_index`` / ``ravel_multi_index``), so no edge is ever
made by a Python loop. :func:`channel_positions` serves per-channel maps (BatchNormalization,
Rescaling) that pair every position with a diagonal channel mixing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np

from pipeline.layers.base import EdgeChunk
from pipeline.spec import Tensor

#: Output coordinates (one int64 array per axis) -> (source coordinates, mask of valid ones or None).
SourceMap = Callable[[tuple[np.ndarray, ...]], tuple[tuple[np.ndarray, ...], np.ndarray | None]]


def row_count(shape: tuple[int, ...]) -> int:
    """Work rows of a tensor: its first axis."""
    return shape[0]


def pull_edges(
    src: Tensor,
    out: Tensor,
    source_of: SourceMap,
    lo: int,
    hi: int,
    max_edges: int,
    kind: str,
    weight: float = 1.0,
) -> Iterator[EdgeChunk]:
    """Edges ``src[source_of(t)] -> out[t]`` for the output cells t of rows [lo, hi) of ``out``.

    Targets whose mask is False get no edge from this source. Chunks hold at most ``max_edges``.
    """
    per_row = math.prod(out.shape[1:])
    for start in range(lo * per_row, hi * per_row, max_edges):
        flat = np.arange(start, min(start + max_edges, hi * per_row), dtype=np.int64)
        coords, ok = source_of(np.unravel_index(flat, out.shape))
        if ok is not None:
            flat = flat[ok]
            coords = tuple(c[ok] for c in coords)
        if len(flat) == 0:
            continue
        source = np.ravel_multi_index(coords, src.shape)
        yield EdgeChunk(
            src.offset + source, out.offset + flat, np.full(len(flat), weight, np.float32), kind
        )


def channel_positions(shape: tuple[int, ...], lo: int, hi: int) -> np.ndarray:
    """Flat indices of the positions (all axes but the channel axis) in rows [lo, hi).

    Rows are the first axis for tensors of rank >= 2; a vector ``(C,)`` has one row, one position.
    """
    if len(shape) < 2:
        return np.zeros(hi - lo, dtype=np.int64)
    per_row = math.prod(shape[1:-1])
    return np.arange(lo * per_row, hi * per_row, dtype=np.int64)


def channel_rows(shape: tuple[int, ...]) -> int:
    """Work rows for :func:`channel_positions`."""
    return shape[0] if len(shape) >= 2 else 1
