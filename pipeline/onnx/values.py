"""The walker's state: ONNX values as our tensors (layout, feature order, re-indexing), and layer emission.

An ONNX tensor ``(N, C, *spatial)`` is our tensor ``(*spatial, C)``: its element ``[0, c, h, w]`` is
the neuron at ``(h, w, c)``. A 2-D ONNX tensor ``(N, F)`` is our ``(F,)``; when it is the Flatten of
a channels-first map its ONNX feature ``f`` (order ``(c, h, w)``) is our neuron ``perm[f]`` (order
``(h, w, c)``): the ids alias the map's, and consumers (Gemm, MatMul, per-feature constants) read
their weights through ``perm``, so no neuron or edge is spent on the re-ordering. A features-last
ONNX tensor ``(N, *dims, F)`` (after a Transpose to NHWC) is our ``(*dims, F)`` in the same order.

Transpose and Reshape re-index: their result is *pending* (``Value.ids``: the ONNX tensor's
elements as our neuron indexes) until a consumer needs a standard layout. It then becomes an alias
when the ids are already in our order (or a flat perm), a Permute layer when it is a transposition
of its source's axes, and is refused otherwise (:meth:`Walker.settle`).
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
    spatial: bool  # True: ONNX (N, C, *spatial); False: ONNX (N, F) or features last (N, ..., F)
    perm: np.ndarray | None = None  # flat only: ONNX feature f is our neuron perm[f]
    #: pending re-indexing: ONNX element j (batch axis dropped) is our neuron tensor.offset + ids[j]
    ids: np.ndarray | None = None
    #: ... and when ids is a transposition of the tensor: ONNX axis j (batch dropped) is our axis axes[j]
    axes: tuple[int, ...] | None = None
    node: str = ""  # the node that made a pending value (its layer's name once settled), and its op
    op: str = ""
    onnx_value: str = ""

    @property
    def onnx_rank(self) -> int:
        """Rank of the ONNX tensor, batch axis included."""
        return (self.ids.ndim if self.ids is not None else len(self.tensor.shape)) + 1

    def onnx_ids(self) -> np.ndarray:
        """Our neuron index (from ``tensor.offset``) of every ONNX element, in the ONNX shape without batch."""
        if self.ids is not None:
            return self.ids
        if not self.spatial:
            if self.perm is not None:
                return self.perm
            return np.arange(self.tensor.size, dtype=np.int64).reshape(self.tensor.shape)
        return np.moveaxis(np.arange(self.tensor.size, dtype=np.int64).reshape(self.tensor.shape), -1, 0)

    def onnx_axes(self) -> tuple[int, ...] | None:
        """Which of our tensor's axes each ONNX axis (batch dropped) is, when the layout is a transposition."""
        if self.ids is not None:
            return self.axes
        if not self.spatial:
            return tuple(range(len(self.tensor.shape))) if self.perm is None else None
        rank = len(self.tensor.shape)
        return (rank - 1, *range(rank - 1))

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
        if self.perm is None and arr.ndim > 2:  # features last: ONNX (N, ..., F) is our (..., F)
            return arr
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

    def value(self, name: str, node: str, op: str, pending: bool = False, features_last: bool = False) -> Value:
        """The value named ``name`` (an input of node), or the error saying it is not a tensor we map.

        A pending re-indexing is settled into our layout first, unless ``pending`` (re-indexing ops);
        ``features_last``: the node also takes a features-last value (see :meth:`settle`).
        """
        if name not in self.values:
            what = "a constant" if name in self.constants else "not produced by a supported node"
            self.refuse(node, op, f"its input {name!r} is {what}; this input must be a computed tensor")
        value = self.values[name]
        if value.ids is not None and not pending:
            value = self.settle(value, features_last=features_last)
        return value

    def settle(self, x: Value, type_: str = "Reshape", features_last: bool = False) -> Value:
        """A pending value (Transpose, Reshape) in our layout: an alias, a Permute layer, or refused.

        With ``features_last`` (a consumer that works on the last ONNX axis: MatMul, LayerNormalization,
        elementwise ops), a value whose ONNX elements are in our id order (NCHW -> NHWC) is an alias
        whose ONNX shape ``(N, *dims)`` is our shape ``dims``: features last, like Keras.
        """
        ids, shape = x.ids, x.ids.shape
        src = Value(x.tensor, x.layer, x.spatial)
        if len(shape) == 1:
            perm = None if np.array_equal(ids, np.arange(ids.size)) else ids.copy()
            cfg = {"target_shape": [ids.size]} if type_ == "Reshape" else {}
            return self.emit(self.unique(x.node), type_, cfg, {}, [src], shape, spatial=False, alias=True,
                             perm=perm, onnx_value=x.onnx_value)
        ours = (*shape[1:], shape[0])
        order = np.moveaxis(ids, 0, -1).reshape(-1)
        last = features_last and np.array_equal(ids.reshape(-1), np.arange(ids.size))
        # both orders hold when all but one axis have size 1: a channel axis of 1 is no map's
        if np.array_equal(order, np.arange(order.size)) and not (last and shape[0] == 1 and shape[-1] > 1):
            return self.emit(self.unique(x.node), "Reshape", {"target_shape": list(ours)}, {}, [src], ours,
                             spatial=True, alias=True, onnx_value=x.onnx_value)
        if last:
            return self.emit(self.unique(x.node), "Reshape", {"target_shape": list(shape)}, {}, [src], shape,
                             spatial=False, alias=True, onnx_value=x.onnx_value)
        if x.axes is None or len(x.axes) != len(x.tensor.shape):
            self.refuse(x.node, x.op, f"it re-orders the neurons of {x.layer!r} (ONNX shape {tuple(shape)}) in a "
                        "way that is neither our row-major (h, w, c) order nor a transposition of its axes")
        # our axis a is ONNX axis a + 1 (spatial) or 0 (the channel axis, our last)
        dims = [x.axes[a + 1 if a < len(ours) - 1 else 0] + 1 for a in range(len(ours))]
        return self.emit(self.unique(x.node), "Permute", {"dims": dims}, {}, [src], ours, spatial=True,
                         onnx_value=x.onnx_value)

    def pending(self, x: Value, ids: np.ndarray, axes: tuple[int, ...] | None, node: Any) -> Value:
        """Record a re-indexing of x (ids over x's tensor) by an ONNX node as its output, settled on use."""
        onnx_value = node.output[0]
        value = Value(x.tensor, x.layer, x.spatial, ids=ids, axes=axes, node=node.name or onnx_value,
                      op=node.op_type, onnx_value=onnx_value)
        self.values[onnx_value] = value
        return value

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

    def _split(self, spec: LayerSpec) -> list[LayerSpec]:
        """The spec as its translator splits it (a per-channel PReLU), parts' ids before the layer's."""
        from pipeline.layers import registry

        parts = registry.get(spec.type, spec.name).split(spec) if not spec.output.alias else [spec]
        if len(parts) > 1:
            self.offset = max(self.offset, spec.output.offset + spec.output.size)
        return parts

    def emit(
        self, name: str, type_: str, config: dict[str, Any], weights: dict[str, np.ndarray], inputs: list[Value],
        shape: tuple[int, ...], *, spatial: bool, alias: bool = False, perm: np.ndarray | None = None,
        part_of: str | None = None, onnx_value: str | None = None,
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
        parts = self._split(spec)
        for part in parts:
            part.index = len(self.layers)
            self.layers.append(part)
            self.names.add(part.name)
        value = Value(out, name, spatial, perm)
        if onnx_value is not None:
            self.values[onnx_value] = value
            if not alias and part_of is None and type_ != "InputLayer":
                self.references[name] = Reference(onnx_value, spatial, perm)
        return value
