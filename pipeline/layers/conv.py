"""Convolutions (1-D, 2-D, 3-D; strides, dilation, groups, valid/same/causal padding)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from pipeline.layers.base import (
    ChannelRules,
    EdgeChunk,
    Part,
    Translator,
    emit_pairs,
    full_pair_ids,
    input_rows,
    output_rows_touched,
    pair_weights,
    runs,
)
from pipeline.layers.window import Window
from pipeline.schema import Kind
from pipeline.spec import LayerSpec


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


class Windowed(Translator):
    """Base of sliding-window layers: per kernel offset, a set of channel pairs over positions.

    A subclass names its pair ids (the same at every offset), the pairs' weights at one offset,
    and optionally a weight per output position (average pooling). Tasks are output rows.
    """

    kind = Kind.CONV
    kernel_key, dilation_key = "kernel_size", "dilation_rate"

    def window(self, spec: LayerSpec) -> Window:
        return conv_window(spec, self.kernel_key, self.dilation_key)

    def check(self, spec: LayerSpec) -> None:
        super().check(spec)
        try:
            self.window(spec)
        except ValueError as err:
            self.unsupported(spec, str(err))

    def rows(self, spec: LayerSpec) -> int:
        return spec.output.shape[0]

    def count_edges(self, spec: LayerSpec) -> int:
        return self.window(spec).count() * len(self.pair_ids(spec)[0])

    def pair_ids(self, spec: LayerSpec) -> tuple[np.ndarray, np.ndarray]:
        """(source channel, target channel) of every pair."""
        raise NotImplementedError

    def kernel(self, spec: LayerSpec) -> np.ndarray | None:
        """The array that ``offset_weights`` indexes (read once per task)."""
        return spec.weights.get("kernel")

    def offset_weights(self, spec: LayerSpec, kernel: np.ndarray | None, offset: tuple[int, ...]) -> np.ndarray:
        """The pairs' weights at one kernel offset, in ``pair_ids`` order."""
        raise NotImplementedError

    def position_weights(self, spec: LayerSpec, window: Window, lo: int, hi: int) -> np.ndarray | None:
        """A factor per output position of rows [lo, hi) (row-major), or None."""
        return None

    def edges(self, spec: LayerSpec, lo: int, hi: int, max_edges: int) -> Iterator[EdgeChunk]:
        src_t, out_t = spec.inputs[0], spec.output
        cin, cout = src_t.shape[-1], out_t.shape[-1]
        window = self.window(spec)
        kernel = self.kernel(spec)
        pair_src, pair_tgt = self.pair_ids(spec)
        pos_w = self.position_weights(spec, window, lo, hi)
        first = lo * math.prod(window.out_shape[1:])
        for offset in window.offsets:
            src_pos, tgt_pos = window.positions(offset, lo, hi)
            if len(src_pos) == 0:
                continue
            yield from emit_pairs(
                src_t.offset + src_pos * cin, out_t.offset + tgt_pos * cout,
                pair_src, pair_tgt, self.offset_weights(spec, kernel, offset), self.kind_of(spec), max_edges,
                None if pos_w is None else pos_w[tgt_pos - first],
            )

    def kind_of(self, spec: LayerSpec) -> str:
        return self.kind

    def rows_touched(
        self, spec: LayerSpec, targets: np.ndarray | None, sources: np.ndarray | None
    ) -> list[tuple[int, int]]:
        if targets is not None:  # rows are output rows
            return output_rows_touched(spec, targets)
        if sources is not None and len(spec.inputs) == 1:  # output rows whose window reaches them
            in_rows = input_rows(spec, sources)
            window = self.window(spec)
            out = [o[np.isin(i, in_rows)] for k in range(window.kernel[0]) for o, i in [window.axis_valid(0, k)]]
            return runs(np.unique(np.concatenate(out)))
        return super().rows_touched(spec, targets, sources)


class Conv(Windowed):
    types = ("Conv1D", "Conv2D", "Conv3D")

    def pair_ids(self, spec: LayerSpec) -> tuple[np.ndarray, np.ndarray]:
        cin, cout = spec.inputs[0].shape[-1], spec.output.shape[-1]
        return full_pair_ids(cin, cout, spec.config.get("groups", 1))

    def offset_weights(self, spec: LayerSpec, kernel: np.ndarray | None, offset: tuple[int, ...]) -> np.ndarray:
        return pair_weights(kernel[offset], spec.config.get("groups", 1))

    def channel_parts(self, cg: ChannelRules, spec: LayerSpec) -> list[Part]:
        k = np.asarray(spec.weights["kernel"])
        return cg.mixing(spec, k.reshape(-1, *k.shape[-2:]), spec.config.get("groups", 1), Kind.CONV)
