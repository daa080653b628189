"""Dense: every input unit to every output unit (along the last axis, at every position)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from pipeline.layers.base import ChannelRules, EdgeChunk, Part, Translator, emit_pairs, runs
from pipeline.schema import Kind
from pipeline.spec import LayerSpec


class Dense(Translator):
    types = ("Dense",)

    def rows(self, spec: LayerSpec) -> int:
        return spec.inputs[0].shape[-1]  # tasks are blocks of kernel rows (input units)

    def count_edges(self, spec: LayerSpec) -> int:
        return math.prod(spec.inputs[0].shape) * spec.output.shape[-1]

    def rows_touched(
        self, spec: LayerSpec, targets: np.ndarray | None, sources: np.ndarray | None
    ) -> list[tuple[int, int]]:
        if sources is not None and len(spec.inputs) == 1:  # rows are input units
            src_t = spec.inputs[0]
            return runs(np.unique((sources - src_t.offset) % src_t.shape[-1]))
        return super().rows_touched(spec, targets, sources)

    def channel_parts(self, cg: ChannelRules, spec: LayerSpec) -> list[Part]:
        k = np.asarray(spec.weights["kernel"])
        return cg.mixing(spec, k[None], 1, Kind.DENSE)

    def edges(self, spec: LayerSpec, lo: int, hi: int, max_edges: int) -> Iterator[EdgeChunk]:
        src_t, out_t = spec.inputs[0], spec.output
        n_in, n_out = src_t.shape[-1], out_t.shape[-1]
        positions = np.arange(math.prod(src_t.shape[:-1]), dtype=np.int64)
        kernel = np.asarray(spec.weights["kernel"], dtype=np.float32)
        src_base, tgt_base = src_t.offset + positions * n_in, out_t.offset + positions * n_out
        # Pair arrays for a block of input units at a time: a whole task's would be 16 bytes per edge.
        block = max(1, max_edges // max(1, n_out * len(positions)))
        block = min(block, hi - lo)
        rows = np.repeat(np.arange(block, dtype=np.int64), n_out)  # shifted by r0 for each block
        pair_tgt = np.tile(np.arange(n_out, dtype=np.int64), block)
        pair_src = np.empty_like(rows)
        for r0 in range(lo, hi, block):
            m = (min(r0 + block, hi) - r0) * n_out
            np.add(rows[:m], r0, out=pair_src[:m])
            yield from emit_pairs(
                src_base, tgt_base, pair_src[:m], pair_tgt[:m], kernel[r0 : r0 + m // n_out].reshape(-1),
                Kind.DENSE, max_edges,
            )
