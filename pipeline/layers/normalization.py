"""Per-channel affine maps: BatchNormalization (inference), Rescaling and Normalization.

Each output neuron gets one edge, from the input neuron at the same position, weighted by its
channel's scale; the channel's shift is the node bias. BatchNormalization at inference:
scale ``gamma / sqrt(var + eps)``, shift ``beta - mean * scale`` (gamma 1 without ``scale``, beta 0
without ``center``). Rescaling: ``x * scale + offset``. Normalization:
``(x - mean) / max(sqrt(var), 1e-7)``, or ``mean + x * max(sqrt(var), 1e-7)`` when inverted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from pipeline.layers.base import ChannelRules, EdgeChunk, Part, Translator, diagonal_pairs, emit_pairs
from pipeline.layers.remap import channel_positions, channel_rows
from pipeline.schema import Kind
from pipeline.spec import LayerSpec

#: keras.backend.epsilon(), the floor Normalization puts under the standard deviation.
KERAS_EPSILON = 1e-7


def last_axis_only(axis: Any, rank: int) -> bool:
    """True when a Keras ``axis`` config names exactly the last axis (batch axis included in rank)."""
    axes = [axis] if isinstance(axis, int) else list(axis or [])
    return len(axes) == 1 and int(axes[0]) % rank == rank - 1


def _per_channel(value: Any, channels: int) -> np.ndarray | None:
    """A scalar or a vector broadcast to ``channels`` float64 values; None when it cannot be."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 1:
        return np.full(channels, float(arr.reshape(-1)[0]))
    if arr.size == channels and arr.reshape(-1).shape == (channels,):
        return arr.reshape(-1)
    return None


class ChannelAffine(Translator):
    """Base of per-channel affine translators: subclasses give (scale, shift) per channel."""

    kind = Kind.AFFINE

    def scale_shift(self, spec: LayerSpec) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def activation(self, spec: LayerSpec) -> str:
        return "linear"

    def bias(self, spec: LayerSpec) -> np.ndarray | None:
        return self.scale_shift(spec)[1].astype(np.float32)

    def rows(self, spec: LayerSpec) -> int:
        return channel_rows(spec.output.shape)

    def count_edges(self, spec: LayerSpec) -> int:
        return spec.output.size

    def edges(self, spec: LayerSpec, lo: int, hi: int, max_edges: int) -> Iterator[EdgeChunk]:
        src_t, out_t = spec.inputs[0], spec.output
        channels = out_t.shape[-1]
        pos = channel_positions(out_t.shape, lo, hi)
        pair_src, pair_tgt, _ = diagonal_pairs(channels)
        scale = self.scale_shift(spec)[0].astype(np.float32)
        yield from emit_pairs(
            src_t.offset + pos * channels, out_t.offset + pos * channels,
            pair_src, pair_tgt, scale, self.kind, max_edges,
        )

    def channel_parts(self, cg: ChannelRules, spec: LayerSpec) -> list[Part]:
        return [cg.diagonal(spec, spec.inputs[0], self.scale_shift(spec)[0], self.kind)]


class BatchNorm(ChannelAffine):
    types = ("BatchNormalization",)
    kind = Kind.BATCHNORM

    def check(self, spec: LayerSpec) -> None:
        super().check(spec)
        if not last_axis_only(spec.config.get("axis", -1), len(spec.output.shape) + 1):
            self.unsupported(spec, f"axis {spec.config.get('axis')!r}: only the last (channel) axis is supported")
        if spec.config.get("renorm"):
            self.unsupported(spec, "batch renormalization is not supported")

    def scale_shift(self, spec: LayerSpec) -> tuple[np.ndarray, np.ndarray]:
        w = spec.weights
        channels = spec.output.shape[-1]
        mean = np.asarray(w["moving_mean"], np.float64).reshape(-1)
        var = np.asarray(w["moving_variance"], np.float64).reshape(-1)
        gamma = np.asarray(w["gamma"], np.float64).reshape(-1) if "gamma" in w else np.ones(channels)
        beta = np.asarray(w["beta"], np.float64).reshape(-1) if "beta" in w else np.zeros(channels)
        scale = gamma / np.sqrt(var + float(spec.config.get("epsilon", 1e-3)))
        return scale, beta - mean * scale


class Rescaling(ChannelAffine):
    types = ("Rescaling",)

    def check(self, spec: LayerSpec) -> None:
        channels = spec.output.shape[-1]
        for key in ("scale", "offset"):
            if _per_channel(spec.config.get(key, 0.0), channels) is None:
                self.unsupported(spec, f"{key} must be a scalar or one value per channel")

    def scale_shift(self, spec: LayerSpec) -> tuple[np.ndarray, np.ndarray]:
        channels = spec.output.shape[-1]
        scale = _per_channel(spec.config.get("scale", 1.0), channels)
        offset = _per_channel(spec.config.get("offset", 0.0), channels)
        assert scale is not None and offset is not None
        return scale, offset


class Normalization(ChannelAffine):
    types = ("Normalization",)

    def check(self, spec: LayerSpec) -> None:
        rank = len(spec.output.shape) + 1
        if not last_axis_only(spec.config.get("axis", -1), rank):
            self.unsupported(spec, f"axis {spec.config.get('axis')!r}: only the last (channel) axis is supported")
        if self._mean_var(spec) is None:
            self.unsupported(spec, "mean and variance must be scalars or one value per channel")

    def _mean_var(self, spec: LayerSpec) -> tuple[np.ndarray, np.ndarray] | None:
        channels = spec.output.shape[-1]
        cfg = spec.config
        if cfg.get("mean") is not None:
            mean, var = cfg["mean"], cfg["variance"]
        else:
            mean, var = spec.weights.get("mean", 0.0), spec.weights.get("variance", 1.0)
        mean, var = _per_channel(mean, channels), _per_channel(var, channels)
        return None if mean is None or var is None else (mean, var)

    def scale_shift(self, spec: LayerSpec) -> tuple[np.ndarray, np.ndarray]:
        mean_var = self._mean_var(spec)
        assert mean_var is not None
        mean, var = mean_var
        std = np.maximum(np.sqrt(var), KERAS_EPSILON)
        if spec.config.get("invert"):
            return std, mean
        return 1.0 / std, -mean / std
