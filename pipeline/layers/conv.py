"""Convolutions (1-D, 2-D, 3-D; strides, dilation, groups, valid/same/causal padding)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from pipeline.layers.base import EdgeChunk, Translator, emit_pairs, full_pairs, pair_weights
from pipeline.layers.window import Window
from pipeline.model import LayerSpec
from pipeline.schema import Kind


def conv_window(spec: LayerSpec, kernel_key: str = "kernel_size", dilation_key: str = "dilation_rate") -> Window:
    """The sliding window of a conv or pooling layer, from its config and tensor shapes."""
    cfg = spec.config
    return Window.make(
        spec.inputs[0].shape[:-1],
        spec.output.shape[:-1],
        cfg[kernel_key],
        cfg.get("strides") or cfg[kernel_key],
        cfg.get(dilation_key, 1),
        cfg.get("padding", "valid").lower(),
    )


class Conv(Translator):
    types = ("Conv1D", "Conv2D", "Conv3D")

    def check(self, spec: LayerSpec) -> None:
        super().check(spec)
        try:
            conv_window(spec)
        except ValueError as err:
            self.unsupported(spec, str(err))

    def rows(self, spec: LayerSpec) -> int:
        return spec.output.shape[0]

    def count_edges(self, spec: LayerSpec) -> int:
        cin, cout = spec.inputs[0].shape[-1], spec.output.shape[-1]
        return conv_window(spec).count() * (cin // spec.config.get("groups", 1)) * cout

    def edges(self, spec: LayerSpec, lo: int, hi: int, max_edges: int) -> Iterator[EdgeChunk]:
        src_t, out_t = spec.inputs[0], spec.output
        cin, cout = src_t.shape[-1], out_t.shape[-1]
        window = conv_window(spec)
        kernel = np.asarray(spec.weights["kernel"])
        groups = spec.config.get("groups", 1)
        pair_src = pair_tgt = None  # the same for every kernel offset: computed once
        for offset in window.offsets:
            src_pos, tgt_pos = window.positions(offset, lo, hi)
            if len(src_pos) == 0:
                continue
            if pair_src is None:
                pair_src, pair_tgt, _ = full_pairs(cin, cout, kernel[offset], groups)
            yield from emit_pairs(
                src_t.offset + src_pos * cin, out_t.offset + tgt_pos * cout,
                pair_src, pair_tgt, pair_weights(kernel[offset], groups), Kind.CONV, max_edges,
            )
