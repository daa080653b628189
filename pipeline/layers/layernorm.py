"""LayerNormalization (over the channel axis) and ConvNeXt's LayerScale.

LayerNormalization normalises the channels at each position:
``y_c = gamma_c * (x_c - mean(x)) / sqrt(var(x) + eps) + beta_c``. Its neuron ``(p, c)`` gets an
edge from every neuron ``(p, c')`` of the same position (kind ``layernorm``) with weight
``gamma_c * (delta(c', c) - 1/C)``, so the weighted sum over the edges is exactly
``gamma_c * (x_c - mean(x))``; replay divides it by ``sqrt(var(sources) + eps)`` (the population
variance of the unweighted sources; eps from the layer config) and adds the bias ``beta_c``.

GroupNormalization normalises each group of ``C / G`` channels over all positions together:
``y = gamma_c * (x - mean_g) / sqrt(var_g + eps) + beta_c`` over the group's ``n = P * C / G``
neurons. Its neuron ``(q, c)`` gets an edge from every neuron ``(p, c')`` of its group (kind
``groupnorm``, the same replay rule) with weight ``gamma_c * (delta((p, c'), (q, c)) - 1/n)``: that
is ``P**2 * C * C / G`` edges, quadratic in the positions (a 32x32x32 map in 8 groups: 134 M edges);
plan it before extracting.

LayerScale (keras.applications.convnext): ``x * gamma``, a per-channel affine map (kind ``affine``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from pipeline.layers.base import ChannelRules, EdgeChunk, Part, Translator, channels_of, emit_pairs
from pipeline.layers.normalization import ChannelAffine, last_axis_only
from pipeline.layers.remap import channel_positions, channel_rows
from pipeline.schema import Kind
from pipeline.spec import LayerSpec


class LayerNorm(Translator):
    types = ("LayerNormalization",)

    def check(self, spec: LayerSpec) -> None:
        if not last_axis_only(spec.config.get("axis", -1), len(spec.output.shape) + 1):
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

    def channel_parts(self, cg: ChannelRules, spec: LayerSpec) -> list[Part]:
        t = spec.inputs[0]
        cmap = cg.source_channels(spec, t)
        n = channels_of(spec.output)
        w = self.pair_weights(spec)  # (C_in, C_out)

        def block(lo: int, hi: int):
            q = np.arange(lo, hi, dtype=np.int64)
            a, o = q // n, q % n
            return cmap[a], o, w[a, o][:, None].astype(np.float32)

        return [Part(t, n * n, 1, Kind.LAYERNORM, block)]

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


class GroupNorm(LayerNorm):
    types = ("GroupNormalization",)

    def check(self, spec: LayerSpec) -> None:
        LayerNorm.check(self, spec)
        c = spec.output.shape[-1]
        if c % self.groups(spec):
            self.unsupported(spec, f"{self.groups(spec)} groups do not divide {c} channels")

    def groups(self, spec: LayerSpec) -> int:
        g = int(spec.config.get("groups", 32))
        return spec.output.shape[-1] if g == -1 else g

    def group_size(self, spec: LayerSpec) -> int:
        """n: the neurons one group normalises together (positions x channels in the group)."""
        return spec.output.size // self.groups(spec)

    def rows(self, spec: LayerSpec) -> int:
        return channel_rows(spec.output.shape)

    def count_edges(self, spec: LayerSpec) -> int:
        return spec.output.size * self.group_size(spec)

    def channel_parts(self, cg: ChannelRules, spec: LayerSpec) -> list[Part]:
        t = spec.inputs[0]
        cmap = cg.source_channels(spec, t)
        c = channels_of(spec.output)
        size, n = c // self.groups(spec), self.group_size(spec)
        gamma = self._gamma_beta(spec)[0]

        def block(lo: int, hi: int):
            q = np.arange(lo, hi, dtype=np.int64)
            o, a = q // size, q % size
            src = (o // size) * size + a
            return cmap[src], o, (gamma[o] * ((src == o) - 1.0 / n))[:, None].astype(np.float32)

        return [Part(t, c * size, 1, Kind.GROUPNORM, block)]

    def edges(self, spec: LayerSpec, lo: int, hi: int, max_edges: int) -> Iterator[EdgeChunk]:
        src_t, out_t = spec.inputs[0], spec.output
        c, g = out_t.shape[-1], self.groups(spec)
        cg, n = c // g, self.group_size(spec)
        gamma = self._gamma_beta(spec)[0]
        every = np.arange(out_t.size // c, dtype=np.int64)[:, None] * c  # every position, times c
        rows = channel_positions(out_t.shape, lo, hi)[:, None] * c
        for k in range(g):
            chans = np.arange(k * cg, (k + 1) * cg, dtype=np.int64)
            src = (every + chans).reshape(-1)  # the group's n members (flat)
            tgt = (rows + chans).reshape(-1)  # its targets in rows [lo, hi)
            total = len(tgt) * n
            for e0 in range(0, total, max_edges):
                e = np.arange(e0, min(e0 + max_edges, total), dtype=np.int64)
                s, t = src[e % n], tgt[e // n]
                w = gamma[t % c] * (np.where(s == t, 1.0, 0.0) - 1.0 / n)
                yield EdgeChunk(src_t.offset + s, out_t.offset + t, w.astype(np.float32), Kind.GROUPNORM)


class LayerScale(ChannelAffine):
    types = ("LayerScale",)

    def check(self, spec: LayerSpec) -> None:
        if len(spec.weights) != 1:
            self.unsupported(spec, f"expected one weight (gamma), found {sorted(spec.weights)}")

    def scale_shift(self, spec: LayerSpec) -> tuple[np.ndarray, np.ndarray]:
        c = spec.output.shape[-1]
        gamma = np.broadcast_to(np.asarray(next(iter(spec.weights.values())), np.float64).reshape(-1), (c,))
        return gamma, np.zeros(c)
