"""Max and average pooling (1-D, 2-D, 3-D): an edge from every window member to its output.

Max pooling edges have weight 1 (replay takes the maximum: every possible choice). Average pooling
edges have weight 1 / (number of in-bounds members), as TensorFlow excludes padding.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from pipeline.layers.base import EdgeChunk, Translator, diagonal_pairs, emit_pairs
from pipeline.layers.conv import conv_window
from pipeline.model import LayerSpec
from pipeline.schema import Kind


class Pooling(Translator):
    types = (
        "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
        "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    )

    def check(self, spec: LayerSpec) -> None:
        super().check(spec)
        try:
            conv_window(spec, "pool_size", "_none")
        except ValueError as err:
            self.unsupported(spec, str(err))

    def activation(self, spec: LayerSpec) -> str:
        return "linear"

    def rows(self, spec: LayerSpec) -> int:
        return spec.output.shape[0]

    def count_edges(self, spec: LayerSpec) -> int:
        return conv_window(spec, "pool_size", "_none").count() * spec.output.shape[-1]

    def edges(self, spec: LayerSpec, lo: int, hi: int, max_edges: int) -> Iterator[EdgeChunk]:
        src_t, out_t = spec.inputs[0], spec.output
        channels = out_t.shape[-1]
        window = conv_window(spec, "pool_size", "_none")
        is_max = spec.type.startswith("Max")
        kind = Kind.MAX_POOL if is_max else Kind.AVG_POOL
        first = lo * math.prod(window.out_shape[1:])
        inv = None if is_max else 1.0 / window.members(lo, hi)
        for offset in window.offsets:
            src_pos, tgt_pos = window.positions(offset, lo, hi)
            if len(src_pos) == 0:
                continue
            yield from emit_pairs(
                src_t.offset + src_pos * channels, out_t.offset + tgt_pos * channels,
                *diagonal_pairs(channels), kind, max_edges,
                None if inv is None else inv[tgt_pos - first],
            )
