"""Standalone activation layers: identity edges into new neurons that carry the activation."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from pipeline import activations
from pipeline.layers.base import (
    ChannelRules,
    EdgeChunk,
    Part,
    Translator,
    activation_name,
    input_rows,
    output_rows_touched,
    runs,
)
from pipeline.schema import Kind
from pipeline.spec import LayerSpec


def identity_edges(spec: LayerSpec, lo: int, hi: int, max_edges: int, kind: str = Kind.IDENTITY) -> Iterator[EdgeChunk]:
    """Edge i -> i (weight 1) for the flat positions of output rows [lo, hi)."""
    per_row = math.prod(spec.output.shape[1:])
    for start in range(lo * per_row, hi * per_row, max_edges):
        i = np.arange(start, min(start + max_edges, hi * per_row), dtype=np.int64)
        yield EdgeChunk(spec.inputs[0].offset + i, spec.output.offset + i, np.ones(len(i), np.float32), kind)


class Activation(Translator):
    types = ("Activation", "ReLU")

    def check(self, spec: LayerSpec) -> None:
        try:
            activations.get(self.activation(spec))
        except KeyError as err:
            self.unsupported(spec, str(err))

    def activation(self, spec: LayerSpec) -> str:
        cfg = spec.config
        if spec.type == "ReLU":
            return activations.relu_name(
                cfg.get("max_value"), cfg.get("negative_slope", 0.0), cfg.get("threshold", 0.0)
            )
        return activation_name(cfg.get("activation"))

    def rows(self, spec: LayerSpec) -> int:
        return spec.output.shape[0]

    def count_edges(self, spec: LayerSpec) -> int:
        return spec.output.size

    def edges(self, spec: LayerSpec, lo: int, hi: int, max_edges: int) -> Iterator[EdgeChunk]:
        return identity_edges(spec, lo, hi, max_edges)

    def rows_touched(
        self, spec: LayerSpec, targets: np.ndarray | None, sources: np.ndarray | None
    ) -> list[tuple[int, int]]:
        if targets is not None:  # rows are output rows
            return output_rows_touched(spec, targets)
        if sources is not None and len(spec.inputs) == 1:  # ... and input rows, one to one
            return runs(input_rows(spec, sources))
        return super().rows_touched(spec, targets, sources)

    def channel_parts(self, cg: ChannelRules, spec: LayerSpec) -> list[Part]:
        return [cg.diagonal(spec, spec.inputs[0], 1.0, Kind.IDENTITY)]


class Input(Translator):
    types = ("InputLayer",)

    def activation(self, spec: LayerSpec) -> str:
        return "linear"

    def channel_parts(self, cg: ChannelRules, spec: LayerSpec) -> list[Part]:
        return []
