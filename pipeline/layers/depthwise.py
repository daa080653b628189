"""Depthwise and separable convolutions (1-D, 2-D; strides, dilation, depth multiplier, padding).

DepthwiseConv: input channel c feeds output channels ``c * M + m`` (M = depth multiplier) with
weight ``kernel[offset][c, m]`` at every kernel offset (kind ``depthwise``).

SeparableConv: split by the walker into two specs (``Separable.split``). ``<name>/depthwise`` is
the depthwise step as a DepthwiseConv spec (no bias, linear; its neurons own the ids right before the
layer's); ``<name>`` is the pointwise step, a 1x1 convolution from those neurons with the layer's
bias and activation (kind ``pointwise``). Edges: ``k*C*M + C*M*O`` per position instead of the
``k*C*O`` of fused kernels.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.layers.base import ChannelRules, Part, full_pair_ids, pair_weights
from pipeline.layers.conv import Windowed
from pipeline.layers.window import Window
from pipeline.schema import Kind
from pipeline.spec import LayerSpec, Tensor


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

    def channel_parts(self, cg: ChannelRules, spec: LayerSpec) -> list[Part]:
        return [cg.depthwise(spec)]


class Separable(Windowed):
    """The pointwise step of a split SeparableConv (see the module docstring)."""

    types = ("SeparableConv1D", "SeparableConv2D")
    kind = Kind.POINTWISE

    def split(self, spec: LayerSpec) -> list[LayerSpec]:
        cfg, out = spec.config, spec.output
        cin, mult = spec.inputs[0].shape[-1], int(cfg.get("depth_multiplier", 1))
        name = f"{spec.name}/depthwise"
        mid = Tensor(key=out.key, shape=(*out.shape[:-1], cin * mult), offset=out.offset, owner=name)
        out.offset += mid.size
        keep = ("kernel_size", "strides", "padding", "dilation_rate", "data_format", "depth_multiplier")
        dw_kernel = spec.weights["depthwise_kernel"]
        depthwise = LayerSpec(
            index=spec.index, name=name, type=f"DepthwiseConv{len(out.shape) - 1}D",
            config={"name": name, **{k: cfg[k] for k in keep if k in cfg}, "activation": "linear", "use_bias": False},
            weights={"kernel": dw_kernel}, inputs=spec.inputs, output=mid, inbound=spec.inbound,
            params=int(np.prod(dw_kernel.shape)), part_of=spec.name,
        )
        weights = {k: v for k, v in spec.weights.items() if k != "depthwise_kernel"}
        pointwise = dataclasses.replace(
            spec, inputs=[mid], inbound=[name], weights=weights,
            params=int(sum(int(np.prod(w.shape)) for w in weights.values())),
        )
        return [depthwise, pointwise]

    def window(self, spec: LayerSpec) -> Window:
        return Window.make(spec.inputs[0].shape[:-1], spec.output.shape[:-1], 1, 1, 1, "valid")

    def pair_ids(self, spec: LayerSpec) -> tuple[np.ndarray, np.ndarray]:
        return full_pair_ids(spec.inputs[0].shape[-1], spec.output.shape[-1])

    def kernel(self, spec: LayerSpec) -> np.ndarray:
        return spec.weights["pointwise_kernel"]

    def offset_weights(self, spec: LayerSpec, kernel: np.ndarray | None, offset: tuple[int, ...]) -> np.ndarray:
        return pair_weights(kernel[offset])

    def channel_parts(self, cg: ChannelRules, spec: LayerSpec) -> list[Part]:
        k = np.asarray(spec.weights["pointwise_kernel"])  # its depthwise step is a Depthwise spec
        return cg.mixing(spec, k.reshape(-1, *k.shape[-2:]), 1, Kind.POINTWISE)
