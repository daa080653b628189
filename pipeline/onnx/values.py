"""The walker's state: ONNX values as our tensors (layout, feature order, sign), and layer emission.

An ONNX tensor ``(N, C, *spatial)`` is our tensor ``(*spatial, C)``: its element ``[0, c, h, w]`` is
the neuron at ``(h, w, c)``. A 2-D ONNX tensor ``(N, F)`` is our ``(F,)``; when it is the Flatten of
a channels-first map its ONNX feature ``f`` (order ``(c, h, w)``) is our neuron ``perm[f]`` (order
``(h, w, c)``): the ids alias the map's, and consumers (Gemm, MatMul, per-feature constants) read
their weights through ``perm``, so no neuron or edge is spent on the re-ordering.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import UnsupportedLayerError
from pipeline.spec import LayerSpec, Tensor

#: Where the supported ONNX ops and the semantics they map to are documented.
ONNX_DOC = "docs/onnx.md"


@dataclass
class Value:
    """One ONNX value that has neurons (or aliases some)."""

    tensor: Tensor
    layer: str  # the layer that made it (aliases included), for ``inbound``
    spatial: bool  # True: ONNX (N, C, *spatial); False: ONNX (N, F)
    perm: np.ndarray | None = None  # flat only: ONNX feature f is our neuron perm[f]
    nonneg: bool = False  # every value is >= 0 by construction (after Relu, Sigmoid, ...)

    @property
    def onnx_rank(self) -> int:
        """Rank of the ONNX tensor, batch axis included."""
        return len(self.tensor.shape) + 1

    def channels(self) -> int:
        return self.tensor.shape[-1]

    def to_ours(self, vec: np.ndarray) -> np.ndarray:
        """A per-feature vector in ONNX feature order, put in our neuron order."""
        if self.perm is None:
            return vec
        out = np.empty_like(vec)
        out[self.perm] = vec
        return out


@dataclass
class Reference:
    """How to read a layer's values from onnxruntime: the ONNX value and its layout."""

    value: str
    spatial: bool
    perm: np.ndarray | None = None

    def to_ours(self, arr: np.ndarray) -> np.ndarray:
        """onnxruntime's array (N, ...) in our layout (N, *our shape)."""
        if self.spatial:
            return np.moveaxis(arr, 1, -1)
        flat = arr.reshape(arr.shape[0], -1)
        if self.perm is None:
            return flat
        out = np.empty_like(flat)
        out[:, self.perm] = flat
        return out


class Weight:
    """A constant array dressed as a variable (``numpy()``), for the walk's weight readers."""

    def __init__(self, value: np.ndarray):
        self.value = value

    def numpy(self) -> np.ndarray:
        return self.value


@dataclass
class Walker:
    """Tensors, layers and id offsets as the nodes are converted, in topological order."""

    constants: dict[str, np.ndarray]
    supported: list[str]
    reader: Any = None
    values: dict[str, Value] = field(default_factory=dict)
    layers: list[LayerSpec] = field(default_factory=list)
    references: dict[str, Reference] = field(default_factory=dict)
    offset: int = 0
    names: set[str] = field(default_factory=set)
    opset: int = 13
    #: ONNX value -> the nodes that read it; values the graph outputs; nodes already converted.
    consumers: dict[str, list[Any]] = field(default_factory=dict)
    graph_outputs: set[str] = field(default_factory=set)
    done: set[int] = field(default_factory=set)

    def refuse(self, name: str, op: str, why: str) -> None:
        """Raise the error for a node this front end cannot express."""
        raise UnsupportedLayerError(name, f"ONNX {op}", self.supported, f"{why}; see {ONNX_DOC}")

    def value(self, name: str, node: str, op: str) -> Value:
        """The value named ``name`` (an input of node), or the error saying it is not a tensor we map."""
        if name not in self.values:
            what = "a constant" if name in self.constants else "not produced by a supported node"
            self.refuse(node, op, f"its input {name!r} is {what}; this input must be a computed tensor")
        return self.values[name]

    def const(self, name: str) -> np.ndarray | None:
        """The constant (initializer or Constant node) named ``name``, or None."""
        return self.constants.get(name) if name else None

    def unique(self, name: str) -> str:
        """``name``, or ``name_2``, ``name_3``, ... when taken: reserved for one layer."""
        base, n = name, 1
        while name in self.names:
            n += 1
            name = f"{base}_{n}"
        self.names.add(name)
        return name

    def emit(
        self, name: str, type_: str, config: dict[str, Any], weights: dict[str, np.ndarray], inputs: list[Value],
        shape: tuple[int, ...], *, spatial: bool, alias: bool = False, perm: np.ndarray | None = None,
        nonneg: bool = False, part_of: str | None = None, onnx_value: str | None = None,
    ) -> Value:
        """Append one LayerSpec named ``name`` (reserved with :meth:`unique`) and return its value.

        Its output owns new ids unless ``alias``; ``onnx_value`` is the ONNX value it holds.
        """
        shape = tuple(int(d) for d in shape)
        key = len(self.layers)
        if alias:
            src = inputs[0].tensor
            if math.prod(shape) != src.size:
                raise ValueError(f"alias {name} changes the size {src.size} to {shape}")
            out = Tensor(key=key, shape=shape, offset=src.offset, owner=src.owner, alias=True)
        else:
            out = Tensor(key=key, shape=shape, offset=self.offset, owner=name)
            self.offset += out.size
        read = self.reader or (lambda w: w.numpy())
        kept = {k: read(Weight(np.ascontiguousarray(v, dtype=np.float32))) for k, v in weights.items()}
        spec = LayerSpec(
            index=key, name=name, type=type_, config={"name": name, **config}, weights=kept,
            inputs=[v.tensor for v in inputs], output=out, inbound=[v.layer for v in inputs],
            params=int(sum(int(np.prod(w.shape)) for w in kept.values())), part_of=part_of,
        )
        self.layers.append(spec)
        value = Value(out, name, spatial, perm, nonneg)
        if onnx_value is not None:
            self.values[onnx_value] = value
            if not alias and part_of is None and type_ != "InputLayer":
                self.references[name] = Reference(onnx_value, spatial, perm)
        return value
