"""Merge layers with several inputs: Add, Subtract, Average, Maximum, Multiply and Concatenate.

Elementwise merges give every output neuron one edge from each input (broadcast inputs repeat
their cells, as Keras broadcasts): Add weight 1, Subtract 1 and -1, Average 1/n, and
keras.applications' CustomScaleLayer (InceptionResNetV2: ``x + up * scale``) 1 and scale (all kind
``add``, replayed as a weighted sum); Maximum weight 1, kind ``maximum`` (replayed as a maximum);
Multiply weight 1, kind ``multiply`` (replayed as the product of the sources).
Concatenate: one identity edge from each input cell to its place in the new tensor.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from pipeline.layers.base import ChannelRules, EdgeChunk, Part, Translator
from pipeline.layers.remap import pull_edges, row_count
from pipeline.schema import Kind
from pipeline.spec import LayerSpec, Tensor


def broadcast_map(src_shape: tuple[int, ...], out_shape: tuple[int, ...]):
    """The source map of an input broadcast (numpy rules) to the output shape."""
    lead = len(out_shape) - len(src_shape)

    def source_of(coords):
        picked = coords[lead:]
        return tuple(
            np.zeros_like(c) if n == 1 and m != 1 else c
            for c, n, m in zip(picked, src_shape, out_shape[lead:], strict=True)
        ), None

    return source_of


def _broadcasts(src_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> bool:
    if len(src_shape) > len(out_shape):
        return False
    tail = out_shape[len(out_shape) - len(src_shape):]
    return all(n in (1, m) for n, m in zip(src_shape, tail, strict=True))


class Elementwise(Translator):
    types = ("Add", "Subtract", "Average", "Maximum", "Multiply", "CustomScaleLayer")

    def check(self, spec: LayerSpec) -> None:
        if len(spec.inputs) < 2:
            self.unsupported(spec, f"{len(spec.inputs)} tensor input(s): a merge needs two or more")
        if spec.type in ("Subtract", "CustomScaleLayer") and len(spec.inputs) != 2:
            self.unsupported(spec, f"{spec.type} needs exactly two inputs")
        for t in spec.inputs:
            if not _broadcasts(t.shape, spec.output.shape):
                self.unsupported(spec, f"input shape {t.shape} does not broadcast to {spec.output.shape}")

    def activation(self, spec: LayerSpec) -> str:
        return "linear"

    def weights(self, spec: LayerSpec) -> list[float]:
        n = len(spec.inputs)
        if spec.type == "Subtract":
            return [1.0, -1.0]
        if spec.type == "CustomScaleLayer":
            return [1.0, float(spec.config["scale"])]
        if spec.type == "Average":
            return [1.0 / n] * n
        return [1.0] * n

    def rows(self, spec: LayerSpec) -> int:
        return row_count(spec.output.shape)

    def count_edges(self, spec: LayerSpec) -> int:
        return len(spec.inputs) * spec.output.size

    def channel_parts(self, cg: ChannelRules, spec: LayerSpec) -> list[Part]:
        merge = spec.type.rsplit(".", 1)[-1]  # keras.ops merges name their layer twin
        kind = {"Maximum": Kind.MAXIMUM, "Multiply": Kind.MULTIPLY}.get(merge, Kind.ADD)
        return [cg.diagonal(spec, t, w, kind) for t, w in zip(spec.inputs, self.weights(spec), strict=True)]

    def edges(self, spec: LayerSpec, lo: int, hi: int, max_edges: int) -> Iterator[EdgeChunk]:
        kind = {"Maximum": Kind.MAXIMUM, "Multiply": Kind.MULTIPLY}.get(spec.type, Kind.ADD)
        for t, w in zip(spec.inputs, self.weights(spec), strict=True):
            yield from pull_edges(
                t, spec.output, broadcast_map(t.shape, spec.output.shape), lo, hi, max_edges, kind, w
            )


def concat_axis(spec: LayerSpec) -> int:
    """The concatenation axis among the non-batch axes."""
    rank = len(spec.output.shape) + 1
    return int(spec.config.get("axis", -1)) % rank - 1


def _slice_map(axis: int, start: int, size: int):
    def source_of(coords):
        c = coords[axis] - start
        ok = (c >= 0) & (c < size)
        return tuple(c if i == axis else x for i, x in enumerate(coords)), ok

    return source_of


class Concatenate(Translator):
    types = ("Concatenate",)

    def check(self, spec: LayerSpec) -> None:
        if concat_axis(spec) < 0:
            self.unsupported(spec, "concatenation along the batch axis")

    def activation(self, spec: LayerSpec) -> str:
        return "linear"

    def rows(self, spec: LayerSpec) -> int:
        return row_count(spec.output.shape)

    def count_edges(self, spec: LayerSpec) -> int:
        return sum(t.size for t in spec.inputs)

    def channel_parts(self, cg: ChannelRules, spec: LayerSpec) -> list[Part]:
        return cg.concat(spec)

    def edges(self, spec: LayerSpec, lo: int, hi: int, max_edges: int) -> Iterator[EdgeChunk]:
        axis = concat_axis(spec)
        start = 0
        for t in spec.inputs:
            yield from self._from(t, spec, axis, start, lo, hi, max_edges)
            start += t.shape[axis]

    def _from(self, t: Tensor, spec: LayerSpec, axis: int, start: int, lo, hi, max_edges) -> Iterator[EdgeChunk]:
        if axis == 0:  # rows are the concatenation axis: only rows inside this input's slice
            lo, hi = max(lo, start), min(hi, start + t.shape[0])
            if lo >= hi:
                return
        yield from pull_edges(t, spec.output, _slice_map(axis, start, t.shape[axis]), lo, hi, max_edges, Kind.CONCAT)
