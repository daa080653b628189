"""Dense: every input unit to every output unit (along the last axis, at every position)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from pipeline.layers.base import EdgeChunk, Translator, emit_pairs
from pipeline.model import LayerSpec
from pipeline.schema import Kind


class Dense(Translator):
    types = ("Dense",)

    def rows(self, spec: LayerSpec) -> int:
        return spec.inputs[0].shape[-1]  # tasks are blocks of kernel rows (input units)

    def count_edges(self, spec: LayerSpec) -> int:
        return math.prod(spec.inputs[0].shape) * spec.output.shape[-1]

    def edges(self, spec: LayerSpec, lo: int, hi: int, max_edges: int) -> Iterator[EdgeChunk]:
        src_t, out_t = spec.inputs[0], spec.output
        n_in, n_out = src_t.shape[-1], out_t.shape[-1]
        positions = np.arange(math.prod(src_t.shape[:-1]), dtype=np.int64)
        kernel = np.asarray(spec.weights["kernel"], dtype=np.float32)
        pair_src = np.repeat(np.arange(lo, hi, dtype=np.int64), n_out)
        pair_tgt = np.tile(np.arange(n_out, dtype=np.int64), hi - lo)
        yield from emit_pairs(
            src_t.offset + positions * n_in, out_t.offset + positions * n_out,
            pair_src, pair_tgt, kernel[lo:hi].reshape(-1), Kind.DENSE, max_edges,
        )
