"""Transposed convolutions (Conv1DTranspose, Conv2DTranspose, Conv3DTranspose), as TensorFlow
computes them: the gradient of a convolution with respect to its input.

Input position ``p`` feeds output position ``o = p * stride - pad + k * dilation`` at kernel offset
``k`` when ``0 <= o < out``, with weight ``kernel[k][o_c, i_c]`` (Keras stores the kernel as
``(k..., filters, in_channels)``; it is not flipped). ``pad`` is the padding TensorFlow would give a
convolution from the output back to the input, so the geometry is a :class:`Window` with the roles
of input and output swapped. Output positions no input reaches (``valid`` with strides larger than
the kernel, ``output_padding``) get no edges: only the bias. Tasks are input rows. Kind
``conv_transpose``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from pipeline.layers.base import ChannelRules, EdgeChunk, Part, Translator, emit_pairs, full_pair_ids
from pipeline.layers.window import Window
from pipeline.schema import Kind
from pipeline.spec import LayerSpec


class ConvTranspose(Translator):
    types = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
    kind = Kind.CONV_TRANSPOSE

    def window(self, spec: LayerSpec) -> Window:
        """The forward convolution from this layer's output to its input."""
        cfg = spec.config
        return Window.make(
            spec.output.shape[:-1], spec.inputs[0].shape[:-1], cfg["kernel_size"], cfg.get("strides", 1),
            cfg.get("dilation_rate", 1), cfg.get("padding", "valid").lower(),
        )

    def check(self, spec: LayerSpec) -> None:
        super().check(spec)
        try:
            self.window(spec)
        except ValueError as err:
            self.unsupported(spec, f"its output size does not invert a convolution: {err}")

    def rows(self, spec: LayerSpec) -> int:
        return spec.inputs[0].shape[0]

    def count_edges(self, spec: LayerSpec) -> int:
        return self.window(spec).count() * spec.inputs[0].shape[-1] * spec.output.shape[-1]

    def channel_kernel(self, spec: LayerSpec) -> np.ndarray:
        """The kernel as (taps, in_channels, filters)."""
        k = np.asarray(spec.weights["kernel"])
        return np.swapaxes(k.reshape(-1, *k.shape[-2:]), 1, 2)

    def channel_parts(self, cg: ChannelRules, spec: LayerSpec) -> list[Part]:
        return cg.mixing(spec, self.channel_kernel(spec), 1, Kind.CONV_TRANSPOSE)

    def edges(self, spec: LayerSpec, lo: int, hi: int, max_edges: int) -> Iterator[EdgeChunk]:
        src_t, out_t = spec.inputs[0], spec.output
        cin, cout = src_t.shape[-1], out_t.shape[-1]
        window = self.window(spec)
        kernel = np.asarray(spec.weights["kernel"])
        pair_src, pair_tgt = full_pair_ids(cin, cout)
        for offset in window.offsets:
            out_pos, in_pos = window.positions(offset, lo, hi)  # the window's rows are our input rows
            if len(in_pos) == 0:
                continue
            w = np.ascontiguousarray(kernel[offset].T, dtype=np.float32).reshape(-1)  # (cin, cout)
            yield from emit_pairs(
                src_t.offset + in_pos * cin, out_t.offset + out_pos * cout, pair_src, pair_tgt, w, self.kind, max_edges
            )
