"""Layers that move cells without mixing them: ZeroPadding, Cropping, UpSampling (nearest), Permute.

Each output neuron pulls from at most one input cell with an identity edge (weight 1, kind
``identity``). ZeroPadding's padded cells are new neurons with no incoming edge and bias 0, so
replay gives them 0, as Keras does. Nearest upsampling repeats a cell: several edges leave it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from pipeline.layers.base import ChannelRules, EdgeChunk, Part, Translator
from pipeline.layers.remap import SourceMap, pull_edges, row_count
from pipeline.schema import Kind
from pipeline.spec import LayerSpec


def before_after(value: Any, n: int) -> list[tuple[int, int]]:
    """A Keras padding/cropping config value as (before, after) per spatial axis."""
    if isinstance(value, int):
        return [(value, value)] * n
    items = list(value)
    if n == 1 and len(items) == 2 and all(isinstance(v, int) for v in items):
        return [(int(items[0]), int(items[1]))]
    out = [(int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1])) for v in items]
    if len(out) != n:
        raise ValueError(f"{value!r} does not give (before, after) for {n} axes")
    return out


def _sizes(value: Any, n: int) -> list[int]:
    return [int(value)] * n if isinstance(value, int) else [int(v) for v in value]


class _Pull(Translator):
    """Base: subclasses give the expected output shape and the source map."""

    def expected_shape(self, spec: LayerSpec) -> tuple[int, ...]:
        raise NotImplementedError

    def source_map(self, spec: LayerSpec) -> SourceMap:
        raise NotImplementedError

    def check(self, spec: LayerSpec) -> None:
        super().check(spec)
        try:
            expected = self.expected_shape(spec)
        except (ValueError, TypeError, IndexError) as err:
            self.unsupported(spec, f"cannot read its configuration: {err}")
        if tuple(expected) != tuple(spec.output.shape):
            self.unsupported(spec, f"output shape {spec.output.shape} differs from the expected {expected}")

    def activation(self, spec: LayerSpec) -> str:
        return "linear"

    def rows(self, spec: LayerSpec) -> int:
        return row_count(spec.output.shape)

    def count_edges(self, spec: LayerSpec) -> int:
        return spec.output.size

    def edges(self, spec: LayerSpec, lo: int, hi: int, max_edges: int) -> Iterator[EdgeChunk]:
        yield from pull_edges(spec.inputs[0], spec.output, self.source_map(spec), lo, hi, max_edges, Kind.IDENTITY)

    def channel_parts(self, cg: ChannelRules, spec: LayerSpec) -> list[Part]:
        return [cg.diagonal(spec, spec.inputs[0], 1.0, Kind.IDENTITY)]


class ZeroPadding(_Pull):
    types = ("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D")

    def _pads(self, spec: LayerSpec) -> list[tuple[int, int]]:
        return before_after(spec.config["padding"], len(spec.inputs[0].shape) - 1)

    def expected_shape(self, spec: LayerSpec) -> tuple[int, ...]:
        shape = spec.inputs[0].shape
        return (*(s + a + b for s, (a, b) in zip(shape[:-1], self._pads(spec), strict=True)), shape[-1])

    def count_edges(self, spec: LayerSpec) -> int:
        return spec.inputs[0].size

    def source_map(self, spec: LayerSpec) -> SourceMap:
        pads, in_shape = self._pads(spec), spec.inputs[0].shape

        def source_of(coords):
            src = [c - a for c, (a, _) in zip(coords[:-1], pads, strict=True)]
            ok = np.ones(len(coords[0]), dtype=bool)
            for c, n in zip(src, in_shape, strict=False):
                ok &= (c >= 0) & (c < n)
            return (*src, coords[-1]), ok

        return source_of


class Cropping(_Pull):
    types = ("Cropping1D", "Cropping2D", "Cropping3D")

    def _crops(self, spec: LayerSpec) -> list[tuple[int, int]]:
        return before_after(spec.config["cropping"], len(spec.inputs[0].shape) - 1)

    def expected_shape(self, spec: LayerSpec) -> tuple[int, ...]:
        shape = spec.inputs[0].shape
        return (*(s - a - b for s, (a, b) in zip(shape[:-1], self._crops(spec), strict=True)), shape[-1])

    def source_map(self, spec: LayerSpec) -> SourceMap:
        before = [a for a, _ in self._crops(spec)]

        def source_of(coords):
            return (*(c + a for c, a in zip(coords[:-1], before, strict=True)), coords[-1]), None

        return source_of


class UpSampling(_Pull):
    types = ("UpSampling1D", "UpSampling2D", "UpSampling3D")

    def check(self, spec: LayerSpec) -> None:
        if spec.config.get("interpolation", "nearest") != "nearest":
            self.unsupported(spec, f"interpolation {spec.config['interpolation']!r}: only 'nearest' is supported")
        super().check(spec)

    def _size(self, spec: LayerSpec) -> list[int]:
        return _sizes(spec.config["size"], len(spec.inputs[0].shape) - 1)

    def expected_shape(self, spec: LayerSpec) -> tuple[int, ...]:
        shape = spec.inputs[0].shape
        return (*(s * k for s, k in zip(shape[:-1], self._size(spec), strict=True)), shape[-1])

    def source_map(self, spec: LayerSpec) -> SourceMap:
        size = self._size(spec)

        def source_of(coords):
            return (*(c // k for c, k in zip(coords[:-1], size, strict=True)), coords[-1]), None

        return source_of


class Permute(_Pull):
    types = ("Permute",)

    def check(self, spec: LayerSpec) -> None:
        dims = [int(d) for d in spec.config["dims"]]
        if sorted(dims) != list(range(1, len(spec.output.shape) + 1)):
            self.unsupported(spec, f"dims {dims} is not a permutation of the non-batch axes")
        super().check(spec)

    def expected_shape(self, spec: LayerSpec) -> tuple[int, ...]:
        return tuple(spec.inputs[0].shape[int(d) - 1] for d in spec.config["dims"])

    def channel_parts(self, cg: ChannelRules, spec: LayerSpec) -> list[Part]:
        dims = list(spec.config.get("dims", []))
        if dims and dims[-1] != len(dims):
            cg.refuse(spec, "a Permute that moves the channel axis has no channel-level form")
        return super().channel_parts(cg, spec)

    def source_map(self, spec: LayerSpec) -> SourceMap:
        dims = [int(d) - 1 for d in spec.config["dims"]]

        def source_of(coords):
            src: list[Any] = [None] * len(coords)
            for i, d in enumerate(dims):
                src[d] = coords[i]
            return tuple(src), None

        return source_of
