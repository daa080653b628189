"""LayerNormalization (over the channel axis) and ConvNeXt's LayerScale.

LayerNormalization normalises the channels at each position:
``y_c = gamma_c * (x_c - mean(x)) / sqrt(var(x) + eps) + beta_c``. Its neuron ``(p, c)`` gets an
edge from every neuron ``(p, c')`` of the same position (kind ``layernorm``) with weight
``gamma_c * (delta(c', c) - 1/C)``, so the weighted sum over the edges is exactly
``gamma_c * (x_c - mean(x))``; replay divides it by ``sqrt(var(sources) + eps)`` (the population
variance of the unweighted sources; eps from the layer config) and adds the bias ``beta_c``.

LayerScale (keras.applications.convnext): ``x * gamma``, a per-channel affine map (kind ``affine``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from pipeline.layers.base import EdgeChunk, Translator, emit_pairs
from pipeline.layers.normalization import ChannelAffine, _last_axis_only
from pipeline.layers.remap import channel_positions, channel_rows
from pipeline.model import LayerSpec
from pipeline.schema import Kind


class LayerNorm(Translator):
    types = ("LayerNormalization",)

    def check(self, spec: LayerSpec) -> None:
        if not _last_axis_only(spec.config.get("axis", -1), len(spec.output.shape) + 1):
            self.unsupported(spec, f"axis {spec.config.get('axis')!r}: only the last (channel) axis is supported")
        if spec.config.get("rms_scaling"):
            self.unsupported(spec, "rms_scaling is not supported")

    def activation(self, spec: LayerSpec) -> str:
        return "linear"

    def _gamma_beta(self, spec: LayerSpec) -> tuple[np.ndarray, np.ndarray]:
        c = spec.output.shape[-1]
        w = spec.weights
        gamma = np.asarray(w["gamma"], np.float64).reshape(-1) if "gamma" in w else np.ones(c)
        beta = np.asarray(w["beta"], np.float64).reshape(-1) if "beta" in w else np.zeros(c)
        return gamma, beta

    def bias(self, spec: LayerSpec) -> np.ndarray | None:
        return self._gamma_beta(spec)[1].astype(np.float32)

    def pair_weights(self, spec: LayerSpec) -> np.ndarray:
        """(C, C) weights: [source channel, target channel] = gamma[target] * (delta - 1/C)."""
        c = spec.output.shape[-1]
        gamma = self._gamma_beta(spec)[0]
        return (np.eye(c) - 1.0 / c) * gamma[None, :]

    def rows(self, spec: LayerSpec) -> int:
        return channel_rows(spec.output.shape)

    def count_edges(self, spec: LayerSpec) -> int:
        return spec.output.size * spec.output.shape[-1]

    def edges(self, spec: LayerSpec, lo: int, hi: int, max_edges: int) -> Iterator[EdgeChunk]:
        src_t, out_t = spec.inputs[0], spec.output
        c = out_t.shape[-1]
        pos = channel_positions(out_t.shape, lo, hi)
        a = np.repeat(np.arange(c, dtype=np.int64), c)
        o = np.tile(np.arange(c, dtype=np.int64), c)
        w = self.pair_weights(spec).reshape(-1).astype(np.float32)
        yield from emit_pairs(src_t.offset + pos * c, out_t.offset + pos * c, a, o, w, Kind.LAYERNORM, max_edges)


class LayerScale(ChannelAffine):
    types = ("LayerScale",)

    def check(self, spec: LayerSpec) -> None:
        if len(spec.weights) != 1:
            self.unsupported(spec, f"expected one weight (gamma), found {sorted(spec.weights)}")

    def scale_shift(self, spec: LayerSpec) -> tuple[np.ndarray, np.ndarray]:
        c = spec.output.shape[-1]
        gamma = np.broadcast_to(np.asarray(next(iter(spec.weights.values())), np.float64).reshape(-1), (c,))
        return gamma, np.zeros(c)
