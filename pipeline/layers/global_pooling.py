"""Global average and max pooling (1-D, 2-D, 3-D; ``keepdims`` either way).

Every input neuron of channel c has an edge to output neuron c: weight 1/(number of positions) for
the average (kind ``global_avg_pool``), weight 1 for the maximum (kind ``global_max_pool``, replayed
as the maximum over the sources). Work rows are channels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from pipeline.layers.base import ChannelRules, EdgeChunk, Part, Translator, emit_pairs
from pipeline.schema import Kind
from pipeline.spec import LayerSpec


class GlobalPooling(Translator):
    types = tuple(
        f"Global{op}Pooling{n}D" for op in ("Average", "Max") for n in (1, 2, 3)
    )

    def activation(self, spec: LayerSpec) -> str:
        return "linear"

    def rows(self, spec: LayerSpec) -> int:
        return spec.output.shape[-1]

    def count_edges(self, spec: LayerSpec) -> int:
        return spec.inputs[0].size

    def edges(self, spec: LayerSpec, lo: int, hi: int, max_edges: int) -> Iterator[EdgeChunk]:
        src_t, out_t = spec.inputs[0], spec.output
        channels = src_t.shape[-1]
        positions = math.prod(src_t.shape[:-1])
        is_max = spec.type.startswith("GlobalMax")
        c = np.arange(lo, hi, dtype=np.int64)
        w = np.full(hi - lo, 1.0 if is_max else 1.0 / positions, dtype=np.float32)
        yield from emit_pairs(
            src_t.offset + np.arange(positions, dtype=np.int64) * channels,
            np.full(positions, out_t.offset, dtype=np.int64),
            c, c, w, Kind.GLOBAL_MAX_POOL if is_max else Kind.GLOBAL_AVG_POOL, max_edges,
        )

    def channel_parts(self, cg: ChannelRules, spec: LayerSpec) -> list[Part]:
        kind = Kind.GLOBAL_MAX_POOL if "Max" in spec.type else Kind.GLOBAL_AVG_POOL
        return [cg.diagonal(spec, spec.inputs[0], 1.0, kind)]
