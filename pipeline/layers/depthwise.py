"""Depthwise and separable convolutions (1-D, 2-D; strides, dilation, depth multiplier, padding).

DepthwiseConv: input channel c feeds output channels ``c * M + m`` (M = depth multiplier) with
weight ``kernel[offset][c, m]`` at every kernel offset (kind ``depthwise``).

SeparableConv: Keras never materialises the depthwise result, so it is no tensor and gets no
neurons; the two kernels are fused into one convolution,
``K[offset][c, o] = sum_m depthwise[offset][c, m] * pointwise[c * M + m, o]`` (kind ``separable``),
which is exactly the map the layer computes before its bias and activation.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from pipeline.layers.base import EdgeChunk, Translator, emit_pairs, full_pairs
from pipeline.layers.conv import conv_window
from pipeline.model import LayerSpec
from pipeline.schema import Kind


class _Windowed(Translator):
    def check(self, spec: LayerSpec) -> None:
        super().check(spec)
        try:
            conv_window(spec)
        except ValueError as err:
            self.unsupported(spec, str(err))

    def rows(self, spec: LayerSpec) -> int:
        return spec.output.shape[0]


class Depthwise(_Windowed):
    types = ("DepthwiseConv1D", "DepthwiseConv2D")

    def count_edges(self, spec: LayerSpec) -> int:
        return conv_window(spec).count() * spec.output.shape[-1]

    def edges(self, spec: LayerSpec, lo: int, hi: int, max_edges: int) -> Iterator[EdgeChunk]:
        src_t, out_t = spec.inputs[0], spec.output
        cin, cout = src_t.shape[-1], out_t.shape[-1]
        mult = cout // cin
        window = conv_window(spec)
        kernel = np.asarray(spec.weights["kernel"], dtype=np.float32)
        pair_src = np.repeat(np.arange(cin, dtype=np.int64), mult)
        pair_tgt = np.arange(cout, dtype=np.int64)
        for offset in window.offsets:
            src_pos, tgt_pos = window.positions(offset, lo, hi)
            if len(src_pos) == 0:
                continue
            yield from emit_pairs(
                src_t.offset + src_pos * cin, out_t.offset + tgt_pos * cout,
                pair_src, pair_tgt, kernel[offset].reshape(-1), Kind.DEPTHWISE, max_edges,
            )


def fused_kernel(depthwise: np.ndarray, pointwise: np.ndarray) -> np.ndarray:
    """(k..., C, M) depthwise and (1..., C*M, O) pointwise kernels -> (k..., C, O)."""
    cin, mult = depthwise.shape[-2:]
    pw = np.asarray(pointwise, np.float64).reshape(cin, mult, -1)
    return np.einsum("...cm,cmo->...co", np.asarray(depthwise, np.float64), pw)


class Separable(_Windowed):
    types = ("SeparableConv1D", "SeparableConv2D")

    def count_edges(self, spec: LayerSpec) -> int:
        return conv_window(spec).count() * spec.inputs[0].shape[-1] * spec.output.shape[-1]

    def edges(self, spec: LayerSpec, lo: int, hi: int, max_edges: int) -> Iterator[EdgeChunk]:
        src_t, out_t = spec.inputs[0], spec.output
        cin, cout = src_t.shape[-1], out_t.shape[-1]
        window = conv_window(spec)
        kernel = fused_kernel(spec.weights["depthwise_kernel"], spec.weights["pointwise_kernel"])
        for offset in window.offsets:
            src_pos, tgt_pos = window.positions(offset, lo, hi)
            if len(src_pos) == 0:
                continue
            yield from emit_pairs(
                src_t.offset + src_pos * cin, out_t.offset + tgt_pos * cout,
                *full_pairs(cin, cout, kernel[offset]), Kind.SEPARABLE, max_edges,
            )
