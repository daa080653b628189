"""Channel granularity (DESIGN.md section 3): channel ids, and the helpers translators build their rules from.

Every tensor that owns neurons gets one node per channel (the last axis); channel ids are numbered
like neuron ids, layer by layer, contiguously. An edge is one *kernel slice*: all the neuron-level
weights that connect one source channel to one target channel. Each translator answers its own rule
(:meth:`~pipeline.layers.base.Translator.channel_parts`) with the shapes here: :meth:`ChannelGraph.mixing`
(conv, dense, pointwise, transposed conv), :meth:`~ChannelGraph.depthwise`, :meth:`~ChannelGraph.diagonal`
(per-channel maps, pooling, activations, merges) and :meth:`~ChannelGraph.concat`. The rules per
family are listed in :mod:`pipeline.extract.coarse`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.errors import UnsupportedLayerError
from pipeline.layers import registry
from pipeline.layers.base import Part, Translator, channels_of
from pipeline.layers.merge import concat_axis
from pipeline.schema import Kind
from pipeline.spec import LayerSpec, ModelGraph, Tensor

__all__ = ["ChannelGraph", "Part", "channels_of"]


class ChannelGraph:
    """Channel ids and channel-edge rules of a walked model."""

    def __init__(self, graph: ModelGraph):
        self.graph = graph
        self.by_name = {s.name: s for s in graph.layers}
        self.offset: dict[str, int] = {}
        n = 0
        for spec in graph.layers:
            if spec.makes_neurons:
                self.offset[spec.name] = n
                n += channels_of(spec.output)
        self.total = n

    # Source channels -------------------------------------------------------------------------
    def source_channels(self, spec: LayerSpec, t: Tensor) -> np.ndarray:
        """Owner channel of each index of t's last axis (identity unless t re-indexes a map)."""
        n = channels_of(t)
        if not t.alias:
            return np.arange(n, dtype=np.int64)
        owner_c = channels_of(self.by_name[t.owner].output)
        if n % owner_c:
            raise UnsupportedLayerError(
                spec.name, spec.type, registry.supported(),
                f"at channel granularity: its input (shape {t.shape}) re-indexes {t.owner}'s "
                f"{owner_c} channels into rows of {n}, which do not map to whole channels",
            )
        return np.arange(n, dtype=np.int64) % owner_c

    def source_id(self, t: Tensor) -> int:
        """The channel id of channel 0 of the layer that owns t's neurons."""
        return self.offset[t.owner]

    def target_id(self, spec: LayerSpec) -> int:
        """The channel id of channel 0 of spec's output."""
        return self.offset[spec.name]

    # Rules -----------------------------------------------------------------------------------
    def parts(self, spec: LayerSpec) -> list[Part]:
        """The channel edges of one layer, as parts; [] for layers that make none."""
        return self.parts_as(spec, registry.get(spec.type, spec.name))

    def parts_as(self, spec: LayerSpec, tr: Translator) -> list[Part]:
        """The channel edges of spec read by translator tr (its own rule)."""
        if not spec.makes_neurons:
            return []
        return tr.channel_parts(self, spec)

    def refuse(self, spec: LayerSpec, why: str) -> None:
        """Raise UnsupportedLayerError: spec has no channel-level form, for the reason given."""
        raise UnsupportedLayerError(spec.name, spec.type, registry.supported(), f"at channel granularity: {why}")

    def mixing(self, spec: LayerSpec, kernel: np.ndarray, groups: int, kind: str) -> list[Part]:
        """Conv/Dense/separable: kernel (S, n_in // groups, n_out), S spatial taps (1 for Dense)."""
        t = spec.inputs[0]
        cmap = self.source_channels(spec, t)
        taps, cin_g, n_out = kernel.shape
        cout_g = n_out // groups
        if np.array_equal(cmap, np.arange(len(cmap))):

            def block(lo: int, hi: int):
                q = np.arange(lo, hi, dtype=np.int64)
                a, o = q // n_out, q % n_out
                src = (o // cout_g) * cin_g + a
                return src, o, kernel[:, a, o].T.astype(np.float32)

            return [Part(t, cin_g * n_out, taps, kind, block)]
        if groups != 1:
            self.refuse(spec, "a grouped convolution over a re-indexed tensor")
        owners = np.unique(cmap)
        rows = np.stack([np.flatnonzero(cmap == c) for c in owners])  # equal counts per channel

        def block_regrouped(lo: int, hi: int):
            q = np.arange(lo, hi, dtype=np.int64)
            u, o = q // n_out, q % n_out
            # (n, taps, rows per channel): the slice is the channel's kernel rows in position order
            k = kernel[:, rows[u], o[:, None]]  # (taps, n, r)
            return owners[u], o, np.moveaxis(k, 0, -1).reshape(len(q), -1).astype(np.float32)

        return [Part(t, len(owners) * n_out, taps * rows.shape[1], kind, block_regrouped)]

    def depthwise(self, spec: LayerSpec) -> Part:
        """Depthwise (multiplier M): ``c -> c*M + m``, slice ``kernel[..., c, m]``."""
        t = spec.inputs[0]
        cmap = self.source_channels(spec, t)
        k = np.asarray(spec.weights["kernel"])
        k = k.reshape(-1, *k.shape[-2:])  # (taps, C, M)
        taps, cin, mult = k.shape

        def block(lo: int, hi: int):
            q = np.arange(lo, hi, dtype=np.int64)
            c, m = q // mult, q % mult
            return cmap[c], q, k[:, c, m].T.astype(np.float32)

        return Part(t, cin * mult, taps, Kind.DEPTHWISE, block)

    def diagonal(self, spec: LayerSpec, t: Tensor, scale: Any, kind: str) -> Part:
        """c -> c (or 0 -> every c for a one-channel input broadcast), slice [scale_c]."""
        cmap = self.source_channels(spec, t)
        n_out = channels_of(spec.output)
        scale = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), (n_out,)) if np.size(scale) in (1, n_out) else None
        if scale is None:
            self.refuse(spec, "per-channel scale of the wrong length")
        if len(cmap) not in (1, n_out):
            self.refuse(spec, f"an input of {len(cmap)} channels feeding {n_out}")

        def block(lo: int, hi: int):
            c = np.arange(lo, hi, dtype=np.int64)
            src = cmap[c] if len(cmap) == n_out else np.zeros_like(c) + cmap[0]
            return src, c, scale[lo:hi, None].astype(np.float32)

        return Part(t, n_out, 1, kind, block)

    def concat(self, spec: LayerSpec) -> list[Part]:
        """Concatenate: ``c -> start + c`` on the channel axis, else ``c -> c`` from each input."""
        rank = len(spec.output.shape)
        if concat_axis(spec) != rank - 1:
            return [self.diagonal(spec, t, 1.0, Kind.CONCAT) for t in spec.inputs]
        parts, start = [], 0
        for t in spec.inputs:
            cmap = self.source_channels(spec, t)

            def block(lo: int, hi: int, cmap=cmap, start=start):
                c = np.arange(lo, hi, dtype=np.int64)
                return cmap[c], start + c, np.ones((hi - lo, 1), np.float32)

            parts.append(Part(t, len(cmap), 1, Kind.CONCAT, block))
            start += len(cmap)
        return parts
