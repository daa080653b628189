"""Elementwise keras.ops calls traced into a functional model: ``x + 3.0``, ``x * (1 / 6)``, ``x + y``.

Keras records such calls as operations, not layers (MobileNetV3's hard-sigmoid, ConvNeXt's
residual ``inputs + x``). :func:`describe_call` reads the operation's call arguments into a plain
config; the walk names the layer ``keras.ops.<Op>`` (``keras.ops.Add``, ``keras.ops.Subtract``,
``keras.ops.Multiply``, ``keras.ops.TrueDivide``).

- With one tensor and a Python number: a per-neuron affine map, identity-shaped edges (kind
  ``affine``) with weight = scale and node bias = offset: ``x + s`` (1, s), ``s - x`` (-1, s),
  ``x - s`` (1, -s), ``x * s`` (s, 0), ``x / s`` (1/s, 0). ``s / x`` is not affine and is refused.
- With two tensors: a merge, as the layers of :mod:`pipeline.layers.merge` (Add: weights 1 and 1,
  Subtract: 1 and -1, kind ``add``; Multiply: kind ``multiply``). Division of tensors is refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np

from pipeline.errors import UnsupportedLayerError
from pipeline.layers.base import ChannelRules, EdgeChunk, Part, Translator, supported_types
from pipeline.layers.merge import Elementwise
from pipeline.layers.normalization import ChannelAffine
from pipeline.spec import LayerSpec

PREFIX = "keras.ops."
#: keras.ops operation classes this module expresses, and the merge layer each acts as.
OPS = {"Add": "Add", "Subtract": "Subtract", "Multiply": "Multiply", "TrueDivide": None}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, np.number)):
        return float(value)
    if isinstance(value, np.ndarray) and value.size == 1:
        return float(value.reshape(-1)[0])
    return None


def describe_call(op, node) -> tuple[str, dict[str, Any]]:
    """(layer type, config) of a keras.ops call; UnsupportedLayerError when it has no graph form."""
    name = type(op).__name__
    type_name = PREFIX + name

    def refuse(why: str):
        raise UnsupportedLayerError(op.name, type_name, supported_types(), why)

    if name not in OPS:
        refuse(
            "an operation on symbolic tensors, not a layer; only elementwise Add, Subtract, Multiply "
            "and TrueDivide calls are supported: express it with layers to extract this model"
        )
    args = list(node.arguments.args) + list(node.arguments.kwargs.values())
    tensors = [i for i, a in enumerate(args) if hasattr(a, "_keras_history")]
    if len(args) != 2:
        refuse(f"{len(args)} arguments; two are supported")
    if len(tensors) == 2:
        if OPS[name] is None:
            refuse("division of two tensors is not a weighted sum or product")
        return type_name, {"name": op.name, "op": name}
    if len(tensors) != 1:
        refuse("no tensor argument")
    scalar = _number(args[1 - tensors[0]])
    if scalar is None:
        refuse(f"the constant {args[1 - tensors[0]]!r} is not a number")
    tensor_first = tensors[0] == 0
    if name == "TrueDivide" and not tensor_first:
        refuse("a number divided by a tensor is not affine")
    return type_name, {"name": op.name, "op": name, "scalar": scalar, "tensor_first": tensor_first}


class _ScalarAffine(ChannelAffine):
    def scale_shift(self, spec: LayerSpec) -> tuple[np.ndarray, np.ndarray]:
        cfg = spec.config
        s, op = float(cfg["scalar"]), cfg["op"]
        scale, shift = {
            "Add": (1.0, s),
            "Subtract": (1.0, -s) if cfg["tensor_first"] else (-1.0, s),
            "Multiply": (s, 0.0),
            "TrueDivide": (1.0 / s, 0.0),
        }[op]
        channels = spec.output.shape[-1] if spec.output.shape else 1
        return np.full(channels, scale), np.full(channels, shift)


class _TensorMerge(Elementwise):
    @staticmethod
    def as_layer(spec: LayerSpec) -> LayerSpec:
        return dataclasses.replace(spec, type=OPS[spec.config["op"]])


_AFFINE, _MERGE = _ScalarAffine(), _TensorMerge()


class OpsCall(Translator):
    """keras.ops elementwise calls: affine with a number, a merge between tensors."""

    types = tuple(PREFIX + name for name in OPS)

    def _impl(self, spec: LayerSpec) -> tuple[Translator, LayerSpec]:
        if "scalar" in spec.config:
            return _AFFINE, spec
        return _MERGE, _TensorMerge.as_layer(spec)

    def check(self, spec: LayerSpec) -> None:
        if "scalar" in spec.config and spec.inputs[0].shape != spec.output.shape:
            self.unsupported(spec, f"input shape {spec.inputs[0].shape} differs from output {spec.output.shape}")
        tr, s = self._impl(spec)
        tr.check(s)

    def activation(self, spec: LayerSpec) -> str:
        return "linear"

    def bias(self, spec: LayerSpec) -> np.ndarray | None:
        tr, s = self._impl(spec)
        return tr.bias(s)

    def rows(self, spec: LayerSpec) -> int:
        tr, s = self._impl(spec)
        return tr.rows(s)

    def count_edges(self, spec: LayerSpec) -> int:
        tr, s = self._impl(spec)
        return tr.count_edges(s)

    def edges(self, spec: LayerSpec, lo: int, hi: int, max_edges: int) -> Iterator[EdgeChunk]:
        tr, s = self._impl(spec)
        return tr.edges(s, lo, hi, max_edges)

    def channel_parts(self, cg: ChannelRules, spec: LayerSpec) -> list[Part]:
        tr, s = self._impl(spec)  # affine with a number, a merge between tensors
        return tr.channel_parts(cg, s)

    def delegate(self, spec: LayerSpec) -> tuple[Translator, LayerSpec]:
        """The translator (and the spec it reads) this call acts as: for the coarser granularities."""
        return self._impl(spec)
