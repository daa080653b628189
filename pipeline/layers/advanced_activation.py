"""Parametrised activation layers: LeakyReLU, ELU, Softmax, and PReLU with one shared alpha.

Like :class:`~pipeline.layers.activation.Activation`: identity edges into new neurons whose
activation name carries the parameters (``relu(max_value=None,negative_slope=0.3,threshold=0.0)``,
``elu(alpha=0.5)``), so the name alone determines the function replay applies.

PReLU with one alpha value is a leaky ReLU. Any other alpha (per channel, or per neuron without
``shared_axes``) is split by the walker (``PReLU.split``), as ``prelu(x) = x + (1 - alpha) * relu(-x)``:
``<name>/negative`` neurons ``relu(-x)`` (identity edges of weight -1, activation ``relu``), then
``<name>`` neurons, linear, with an edge of weight 1 from ``x`` and one of weight ``1 - alpha`` from
``<name>/negative`` (kind ``add``): three edges and two neurons per value instead of one and one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np

from pipeline import activations
from pipeline.layers.activation import Activation, identity_edges
from pipeline.layers.base import ChannelRules, EdgeChunk, Part
from pipeline.schema import Kind
from pipeline.spec import LayerSpec, Tensor


class ParamActivation(Activation):
    types = ("LeakyReLU", "ELU", "Softmax")

    def check(self, spec: LayerSpec) -> None:
        if spec.type == "Softmax":
            axis = spec.config.get("axis", -1)
            axes = [axis] if isinstance(axis, int) else list(axis)
            rank = len(spec.output.shape) + 1
            if len(axes) != 1 or int(axes[0]) % rank != rank - 1:
                self.unsupported(spec, f"axis {axis!r}: only the last axis is supported")
        super().check(spec)

    def activation(self, spec: LayerSpec) -> str:
        cfg = spec.config
        if spec.type == "LeakyReLU":
            return activations.relu_name(None, cfg.get("negative_slope", cfg.get("alpha", 0.3)), 0.0)
        if spec.type == "ELU":
            return activations.elu_name(cfg.get("alpha", 1.0))
        return "softmax"


class PReLU(Activation):
    """PReLU: a leaky ReLU when alpha holds one value, else split (see the module docstring)."""

    types = ("PReLU",)

    def alpha(self, spec: LayerSpec) -> np.ndarray:
        """Alpha per neuron of the output (float64, broadcast over shared axes)."""
        return np.broadcast_to(np.asarray(spec.weights["alpha"], np.float64), spec.output.shape)

    def is_split(self, spec: LayerSpec) -> bool:
        return spec.part_of is not None or len(spec.inputs) == 2

    def split(self, spec: LayerSpec) -> list[LayerSpec]:
        if np.unique(np.asarray(spec.weights["alpha"])).size == 1:
            return [spec]
        out, name = spec.output, f"{spec.name}/negative"
        mid = Tensor(key=out.key, shape=out.shape, offset=out.offset, owner=name)
        out.offset += mid.size
        negative = LayerSpec(
            index=spec.index, name=name, type=spec.type, config={"name": name}, weights={}, inputs=spec.inputs,
            output=mid, inbound=spec.inbound, part_of=spec.name,
        )
        return [negative, dataclasses.replace(spec, inputs=[spec.inputs[0], mid], inbound=[*spec.inbound, name])]

    def activation(self, spec: LayerSpec) -> str:
        if spec.part_of is not None:
            return "relu"
        if self.is_split(spec):
            return "linear"
        return activations.relu_name(None, float(np.asarray(spec.weights["alpha"]).reshape(-1)[0]), 0.0)

    def count_edges(self, spec: LayerSpec) -> int:
        return spec.output.size * (2 if len(spec.inputs) == 2 else 1)

    def channel_parts(self, cg: ChannelRules, spec: LayerSpec) -> list[Part]:
        if spec.part_of is not None:  # <name>/negative: relu(-x)
            return [cg.diagonal(spec, spec.inputs[0], -1.0, Kind.IDENTITY)]
        if not self.is_split(spec):
            return [cg.diagonal(spec, spec.inputs[0], 1.0, Kind.IDENTITY)]
        alpha = self.alpha(spec).reshape(-1, spec.output.shape[-1])
        if not np.all(alpha == alpha[:1]):
            cg.refuse(spec, "a PReLU whose alpha varies by position (no shared_axes) has no channel-level form")
        return [cg.diagonal(spec, spec.inputs[0], 1.0, Kind.ADD), cg.diagonal(spec, spec.inputs[1], 1.0 - alpha[0], Kind.ADD)]

    def edges(self, spec: LayerSpec, lo: int, hi: int, max_edges: int) -> Iterator[EdgeChunk]:
        if not self.is_split(spec):
            yield from identity_edges(spec, lo, hi, max_edges)
            return
        per_row = math.prod(spec.output.shape[1:])
        scale = 1.0 - self.alpha(spec).reshape(-1) if spec.part_of is None else None
        for start in range(lo * per_row, hi * per_row, max_edges):
            i = np.arange(start, min(start + max_edges, hi * per_row), dtype=np.int64)
            if scale is None:  # <name>/negative: relu(-x)
                yield EdgeChunk(spec.inputs[0].offset + i, spec.output.offset + i, np.full(len(i), -1, np.float32), Kind.IDENTITY)
                continue
            yield EdgeChunk(spec.inputs[0].offset + i, spec.output.offset + i, np.ones(len(i), np.float32), Kind.ADD)
            yield EdgeChunk(spec.inputs[1].offset + i, spec.output.offset + i, scale[i].astype(np.float32), Kind.ADD)
