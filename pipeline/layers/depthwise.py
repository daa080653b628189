"""Depthwise and separable convolutions (1-D, 2-D; strides, dilation, depth multiplier, padding).

DepthwiseConv: input channel c feeds output channels ``c * M + m`` (M = depth multiplier) with
weight ``kernel[offset][c, m]`` at every kernel offset (kind ``depthwise``).

SeparableConv: Keras never materialises the depthwise result, so it is no tensor and gets no
neurons; the two kernels are fused into one convolution,
``K[offset][c, o] = sum_m depthwise[offset][c, m] * pointwise[c * M + m, o]`` (kind ``separable``),
which is exactly the map the layer computes before its bias and activation.
"""

from __future__ import annotations

import numpy as np

from pipeline.layers.base import full_pair_ids, pair_weights
from pipeline.layers.conv import Windowed
from pipeline.model import LayerSpec
from pipeline.schema import Kind


class Depthwise(Windowed):
    types = ("DepthwiseConv1D", "DepthwiseConv2D")
    kind = Kind.DEPTHWISE

    def pair_ids(self, spec: LayerSpec) -> tuple[np.ndarray, np.ndarray]:
        cin, cout = spec.inputs[0].shape[-1], spec.output.shape[-1]
        return np.repeat(np.arange(cin, dtype=np.int64), cout // cin), np.arange(cout, dtype=np.int64)

    def kernel(self, spec: LayerSpec) -> np.ndarray:
        return np.asarray(spec.weights["kernel"], dtype=np.float32)

    def offset_weights(self, spec: LayerSpec, kernel: np.ndarray | None, offset: tuple[int, ...]) -> np.ndarray:
        return kernel[offset].reshape(-1)


def fused_kernel(depthwise: np.ndarray, pointwise: np.ndarray) -> np.ndarray:
    """(k..., C, M) depthwise and (1..., C*M, O) pointwise kernels -> (k..., C, O)."""
    cin, mult = depthwise.shape[-2:]
    pw = np.asarray(pointwise, np.float64).reshape(cin, mult, -1)
    return np.einsum("...cm,cmo->...co", np.asarray(depthwise, np.float64), pw)


class Separable(Windowed):
    types = ("SeparableConv1D", "SeparableConv2D")
    kind = Kind.SEPARABLE

    def pair_ids(self, spec: LayerSpec) -> tuple[np.ndarray, np.ndarray]:
        return full_pair_ids(spec.inputs[0].shape[-1], spec.output.shape[-1])

    def kernel(self, spec: LayerSpec) -> np.ndarray:
        return fused_kernel(spec.weights["depthwise_kernel"], spec.weights["pointwise_kernel"])

    def offset_weights(self, spec: LayerSpec, kernel: np.ndarray | None, offset: tuple[int, ...]) -> np.ndarray:
        return pair_weights(kernel[offset])
