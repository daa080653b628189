"""One converter per ONNX op: each builds the LayerSpecs (Keras type and config) an existing
translator turns into exactly the edges of the op's ONNX semantics.

Weights are moved from ONNX layouts to Keras's (Conv ``(M, C/g, *k)`` -> ``(*k, C/g, M)``, Gemm ``B``
as ``(K, M)`` scaled by alpha, rows read through a Flatten's feature order). Explicit pads are
Keras's ``'valid'`` or ``'same'`` when they are the same geometry, else a ZeroPadding step
(``<node>/pad``, a part of the node) before a ``'valid'`` window; see docs/onnx.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from onnx import NodeProto, helper

from pipeline.onnx.values import Value, Walker


def attrs(node: NodeProto) -> dict[str, Any]:
    """The node's attributes as Python values (bytes decoded)."""
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def label(node: NodeProto) -> str:
    """The name a node's layer gets: the node's name, else its first output's."""
    return node.name or node.output[0]


def _spatial_input(w: Walker, node: NodeProto) -> Value:
    x = w.value(node.input[0], label(node), node.op_type)
    if not x.spatial or not 1 <= x.onnx_rank - 2 <= 3:
        w.refuse(label(node), node.op_type, f"input of shape {x.tensor.shape} is not a (N, C, *spatial) map "
                 "with 1 to 3 spatial axes")
    return x


def _pads(w: Walker, node: NodeProto, a: dict[str, Any], in_sp, kernel, strides, dil) -> list[tuple[int, int]]:
    """(before, after) per spatial axis from ``pads`` or ``auto_pad``."""
    n = len(in_sp)
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for i, k, s, d in zip(in_sp, kernel, strides, dil, strict=True):
            total = max((-(-i // s) - 1) * s + (k - 1) * d + 1 - i, 0)
            small = total // 2
            out.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
        return out
    if auto == "VALID":
        return [(0, 0)] * n
    p = list(a.get("pads", [0] * (2 * n)))
    if len(p) != 2 * n or min(p) < 0:
        w.refuse(label(node), node.op_type, f"pads {p} are not {2 * n} non-negative values")
    return list(zip(p[:n], p[n:], strict=True))


def _keras_padding(in_sp, out_sp, pads, kernel, strides, dil) -> str | None:
    """'valid' or 'same' when Keras's window has these pads-before and output sizes, else None."""
    if all(b == 0 for b, _ in pads) and all(
        o == (i - (k - 1) * d - 1) // s + 1 for i, o, k, s, d in zip(in_sp, out_sp, kernel, strides, dil, strict=True)
    ):
        return "valid"
    for i, o, (b, _), k, s, d in zip(in_sp, out_sp, pads, kernel, strides, dil, strict=True):
        same_o = -(-i // s)
        if o != same_o or b != max((same_o - 1) * s + (k - 1) * d + 1 - i, 0) // 2:
            return None
    return "same"


def _zero_pad(w: Walker, name: str, x: Value, in_sp, out_sp, pads, kernel, strides, dil) -> Value:
    """A ZeroPadding part ``<name>/pad`` with the pads a 'valid' window of out_sp needs."""
    used = [(b, max(0, (o - 1) * s + (k - 1) * d + 1 - i - b))
            for i, o, (b, _), k, s, d in zip(in_sp, out_sp, pads, kernel, strides, dil, strict=True)]
    shape = (*(i + b + a for i, (b, a) in zip(in_sp, used, strict=True)), x.channels())
    pad_name = w.unique(f"{name}/pad")
    return w.emit(pad_name, f"ZeroPadding{len(in_sp)}D", {"padding": [list(p) for p in used]}, {}, [x], shape,
                  spatial=True, part_of=name, nonneg=x.nonneg)


def conv(w: Walker, node: NodeProto) -> None:
    """Conv: Conv{n}D (groups), DepthwiseConv{n}D when every group is one input channel."""
    name, op = label(node), node.op_type
    x = _spatial_input(w, node)
    kernel_w = w.const(node.input[1])
    bias = w.const(node.input[2]) if len(node.input) > 2 else None
    if kernel_w is None or (len(node.input) > 2 and node.input[2] and bias is None):
        w.refuse(name, op, "its weights W and B must be initializers (constants)")
    a = attrs(node)
    n, in_sp, cin = x.onnx_rank - 2, x.tensor.shape[:-1], x.channels()
    kernel = tuple(kernel_w.shape[2:])
    strides, dil = tuple(a.get("strides", [1] * n)), tuple(a.get("dilations", [1] * n))
    group, cout = int(a.get("group", 1)), kernel_w.shape[0]
    if cin % group or cout % group or kernel_w.shape[1] != cin // group:
        w.refuse(name, op, f"W of shape {kernel_w.shape} does not fit {cin} input channels in {group} groups")
    pads = _pads(w, node, a, in_sp, kernel, strides, dil)
    out_sp = [(i + b + e - (k - 1) * d - 1) // s + 1 for i, (b, e), k, s, d in zip(in_sp, pads, kernel, strides, dil, strict=True)]
    if min(out_sp) < 1:
        w.refuse(name, op, f"the window is larger than the padded input {in_sp}")
    name = w.unique(name)
    padding = _keras_padding(in_sp, out_sp, pads, kernel, strides, dil)
    src = x
    if padding is None:
        src, padding = _zero_pad(w, name, x, in_sp, out_sp, pads, kernel, strides, dil), "valid"
    order = (*range(2, 2 + n), 1, 0)
    cfg: dict[str, Any] = {"kernel_size": list(kernel), "strides": list(strides), "dilation_rate": list(dil),
                           "padding": padding, "data_format": "channels_last", "activation": "linear",
                           "use_bias": bias is not None}
    weights = {"bias": bias.reshape(-1)} if bias is not None else {}
    if group == cin and group > 1 and n <= 2:
        mult = cout // cin
        weights["kernel"] = kernel_w.reshape(cin, mult, *kernel).transpose(*range(2, 2 + n), 0, 1)
        type_, cfg = f"DepthwiseConv{n}D", {**cfg, "depth_multiplier": mult}
    else:
        weights["kernel"] = kernel_w.transpose(order)
        type_, cfg = f"Conv{n}D", {**cfg, "filters": cout, "groups": group}
    w.emit(name, type_, cfg, weights, [src], (*out_sp, cout), spatial=True, onnx_value=node.output[0])


def pool(w: Walker, node: NodeProto) -> None:
    """MaxPool / AveragePool: Keras pooling, padded as ONNX pads (see the module docstring)."""
    name, op = label(node), node.op_type
    x = _spatial_input(w, node)
    a = attrs(node)
    n, in_sp = x.onnx_rank - 2, x.tensor.shape[:-1]
    kernel = tuple(a["kernel_shape"])
    strides, dil = tuple(a.get("strides", [1] * n)), tuple(a.get("dilations", [1] * n))
    if any(d != 1 for d in dil):
        w.refuse(name, op, f"dilations {list(dil)}: only 1 is supported for pooling")
    if len(node.output) > 1 and node.output[1]:
        w.refuse(name, op, "its Indices output is used: only the values are supported")
    pads = _pads(w, node, a, in_sp, kernel, strides, dil)
    is_max, include = op == "MaxPool", bool(a.get("count_include_pad", 0))
    out_sp = []
    for i, (b, e), k, s in zip(in_sp, pads, kernel, strides, strict=True):
        o = (i + b + e - k) // s + 1
        if a.get("ceil_mode", 0):
            o = -(-(i + b + e - k) // s) + 1
            o -= (o - 1) * s >= i + b  # the last window must start inside the input or its left pad
        out_sp.append(o)
    overflow = any((o - 1) * s + k > i + b + e for i, o, (b, e), k, s in zip(in_sp, out_sp, pads, kernel, strides, strict=True))
    name = w.unique(name)
    padding = _keras_padding(in_sp, out_sp, pads, kernel, strides, dil)
    src = x
    padded = any(b or e for b, e in pads)
    if is_max and padding is None:
        if not x.nonneg:
            w.refuse(name, op, f"pads {pads} differ from Keras's 'same' geometry and its input can be negative "
                     "(exact when the input is >= 0, e.g. after Relu)")
        src, padding = _zero_pad(w, name, x, in_sp, out_sp, pads, kernel, strides, dil), "valid"
    elif not is_max and include and padded:
        if overflow:
            w.refuse(name, op, "count_include_pad=1 with ceil_mode windows past the pads")
        src, padding = _zero_pad(w, name, x, in_sp, out_sp, pads, kernel, strides, dil), "valid"
    elif not is_max and padding is None:
        w.refuse(name, op, f"count_include_pad=0 with pads {pads} that differ from Keras's 'same' geometry")
    cfg = {"pool_size": list(kernel), "strides": list(strides), "padding": padding, "data_format": "channels_last"}
    type_ = f"{'Max' if is_max else 'Average'}Pooling{n}D"
    w.emit(name, type_, cfg, {}, [src], (*out_sp, x.channels()), spatial=True, nonneg=x.nonneg,
           onnx_value=node.output[0])


def global_pool(w: Walker, node: NodeProto) -> None:
    """GlobalAveragePool / GlobalMaxPool: Keras global pooling with keepdims (ONNX keeps them)."""
    x = _spatial_input(w, node)
    n = x.onnx_rank - 2
    type_ = f"Global{'Max' if node.op_type == 'GlobalMaxPool' else 'Average'}Pooling{n}D"
    w.emit(w.unique(label(node)), type_, {"keepdims": True, "data_format": "channels_last"}, {}, [x],
           (*[1] * n, x.channels()), spatial=True, nonneg=x.nonneg, onnx_value=node.output[0])


def _flat_input(w: Walker, node: NodeProto) -> Value:
    x = w.value(node.input[0], label(node), node.op_type)
    if x.spatial:
        w.refuse(label(node), node.op_type, f"input of shape {x.tensor.shape} is not 2-D (N, K): Flatten it first")
    return x


def _vector(w: Walker, node: NodeProto, c: np.ndarray | None, m: int, what: str) -> np.ndarray | None:
    if c is None:
        return None
    if c.size == 1:
        return np.full(m, float(c.reshape(-1)[0]))
    if c.size != m or c.reshape(-1).shape[0] != max(c.shape, default=1):
        w.refuse(label(node), node.op_type, f"{what} of shape {c.shape} is not one value per output unit ({m})")
    return c.reshape(-1).astype(np.float64)


def _dense(w: Walker, node: NodeProto, x: Value, kernel: np.ndarray, bias: np.ndarray | None, out: str, name: str) -> None:
    w.emit(w.unique(name), "Dense", {"units": kernel.shape[1], "activation": "linear", "use_bias": bias is not None},
           {"kernel": x.to_ours(kernel), **({"bias": bias} if bias is not None else {})}, [x], (kernel.shape[1],),
           spatial=False, onnx_value=out)


def gemm(w: Walker, node: NodeProto) -> None:
    """Gemm: Dense with kernel ``alpha * B'`` (K, M) and bias ``beta * C``."""
    name, op = label(node), node.op_type
    x = _flat_input(w, node)
    a = attrs(node)
    b = w.const(node.input[1])
    c = w.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if b is None or (len(node.input) > 2 and node.input[2] and c is None):
        w.refuse(name, op, "B and C must be initializers (constants)")
    if a.get("transA", 0):
        w.refuse(name, op, "transA=1 (the batch on the second axis) is not supported")
    b = b.T if a.get("transB", 0) else b
    if b.ndim != 2 or b.shape[0] != x.channels():
        w.refuse(name, op, f"B of shape {b.shape} does not take {x.channels()} input features")
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    bias = _vector(w, node, c, b.shape[1], "C")
    _dense(w, node, x, alpha * b.astype(np.float64), None if bias is None else beta * bias, node.output[0], name)


def matmul(w: Walker, node: NodeProto) -> None:
    """MatMul by a constant: Dense; a following Add of a constant vector becomes its bias (named after the Add)."""
    name, op = label(node), node.op_type
    x = _flat_input(w, node)
    b = w.const(node.input[1])
    if b is None or b.ndim != 2 or b.shape[0] != x.channels():
        w.refuse(name, op, f"B must be a constant (K={x.channels()}, M) matrix")
    users = w.consumers.get(node.output[0], [])
    if len(users) == 1 and users[0].op_type == "Add" and node.output[0] not in w.graph_outputs:
        add = users[0]
        other = [i for i in add.input if i != node.output[0]]
        c = w.const(other[0]) if len(other) == 1 else None
        if c is not None and c.size in (1, b.shape[1]) and c.ndim <= 2:
            w.done.add(id(add))
            _dense(w, add, x, b, _vector(w, add, c, b.shape[1], "the bias"), add.output[0], label(add))
            return
    _dense(w, node, x, b, None, node.output[0], name)


def batchnorm(w: Walker, node: NodeProto) -> None:
    """BatchNormalization (inference): Keras BatchNormalization over the channel axis."""
    name, op = label(node), node.op_type
    x = w.value(node.input[0], name, op)
    a = attrs(node)
    if a.get("training_mode", 0) or any(o for o in node.output[1:]):
        w.refuse(name, op, "training mode (running statistics outputs) is not supported")
    vecs = [w.const(i) for i in node.input[1:5]]
    if any(v is None or v.size != x.channels() for v in vecs):
        w.refuse(name, op, f"scale, B, mean and var must be constants of {x.channels()} values")
    keys = ("gamma", "beta", "moving_mean", "moving_variance")
    weights = {k: x.to_ours(v.reshape(-1)) for k, v in zip(keys, vecs, strict=True)}
    cfg = {"axis": -1, "epsilon": float(a.get("epsilon", 1e-5)), "center": True, "scale": True}
    w.emit(w.unique(name), "BatchNormalization", cfg, weights, [x], x.tensor.shape, spatial=x.spatial,
           perm=x.perm, onnx_value=node.output[0])


_ACTIVATIONS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}


def activation(w: Walker, node: NodeProto) -> None:
    """Relu, Sigmoid, Tanh, LeakyRelu, Elu, Softmax (channel axis), Clip(0, max): activation layers."""
    name, op = label(node), node.op_type
    x = w.value(node.input[0], name, op)
    a = attrs(node)
    nonneg = op in ("Relu", "Sigmoid", "Softmax", "Clip")
    if op in _ACTIVATIONS:
        type_, cfg = "Activation", {"activation": _ACTIVATIONS[op]}
    elif op == "LeakyRelu":
        type_, cfg = "LeakyReLU", {"negative_slope": float(a.get("alpha", 0.01))}
    elif op == "Elu":
        type_, cfg = "ELU", {"alpha": float(a.get("alpha", 1.0))}
    elif op == "Clip":
        lo = w.const(node.input[1]) if len(node.input) > 1 and node.input[1] else a.get("min")
        hi = w.const(node.input[2]) if len(node.input) > 2 and node.input[2] else a.get("max")
        if lo is None or float(np.asarray(lo)) != 0.0:
            w.refuse(name, op, "only Clip with min 0 (a ReLU capped at max) is supported")
        type_, cfg = "ReLU", {"max_value": None if hi is None else float(np.asarray(hi))}
    else:  # Softmax: over our last axis only
        rank = x.onnx_rank
        axis = int(a.get("axis", -1 if w.opset >= 13 else 1)) % rank
        spatial_size = math.prod(x.tensor.shape[:-1]) if x.spatial else 1
        ok = axis == 1 and (w.opset >= 13 or spatial_size == 1 or not x.spatial)
        if not ok:
            w.refuse(name, op, f"axis {axis} (opset {w.opset}): only the channel/feature axis is supported")
        type_, cfg = "Softmax", {"axis": -1}
    w.emit(w.unique(name), type_, cfg, {}, [x], x.tensor.shape, spatial=x.spatial, perm=x.perm, nonneg=nonneg,
           onnx_value=node.output[0])


_MERGES = {"Add": "Add", "Sub": "Subtract", "Mul": "Multiply", "Max": "Maximum"}


def _per_channel(w: Walker, node: NodeProto, x: Value, c: np.ndarray) -> np.ndarray:
    """A constant operand as one value per channel (feature) of x, in our order."""
    rank = x.onnx_rank
    shape = (1,) * (rank - c.ndim) + tuple(c.shape) if c.ndim <= rank else None
    if shape is None or any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, x.channels()):
        w.refuse(label(node), node.op_type, f"constant of shape {c.shape} is not one value per channel")
    vec = np.broadcast_to(c.reshape(-1).astype(np.float64), (x.channels(),)).copy()
    return x.to_ours(vec)


def binary(w: Walker, node: NodeProto) -> None:
    """Add, Sub, Mul, Max of two tensors (Keras merges); Add, Sub, Mul, Div by a per-channel constant (Rescaling)."""
    name, op = label(node), node.op_type
    consts = [w.const(i) for i in node.input]
    if sum(c is not None for c in consts) == 1 and op != "Max":
        k = 0 if consts[0] is not None else 1
        x = w.value(node.input[1 - k], name, op)
        c = _per_channel(w, node, x, consts[k])
        ones, zeros = np.ones_like(c), np.zeros_like(c)
        if op == "Div" and k == 0:
            w.refuse(name, op, "a constant divided by a tensor is not linear")
        scale, shift = {"Add": (ones, c), "Mul": (c, zeros), "Div": (1.0 / c, zeros),
                        "Sub": (ones, -c) if k == 1 else (-ones, c)}[op]
        w.emit(w.unique(name), "Rescaling", {"scale": scale.tolist(), "offset": shift.tolist()}, {}, [x],
               x.tensor.shape, spatial=x.spatial, perm=x.perm, onnx_value=node.output[0],
               nonneg=x.nonneg and op in ("Add", "Mul", "Div") and bool((scale >= 0).all() and (shift >= 0).all()))
        return
    if op == "Div" or any(c is not None for c in consts):
        w.refuse(name, op, "supported: two computed tensors (Add, Sub, Mul, Max), or a tensor and one constant")
    xs = [w.value(i, name, op) for i in node.input]
    first = xs[0]
    for x in xs[1:]:
        same_order = (x.perm is None) == (first.perm is None) and (x.perm is None or np.array_equal(x.perm, first.perm))
        if x.spatial != first.spatial or x.onnx_rank != first.onnx_rank or not same_order:
            w.refuse(name, op, "its inputs have different ranks or layouts")
    try:
        shape = np.broadcast_shapes(*(x.tensor.shape for x in xs))
    except ValueError:
        w.refuse(name, op, f"input shapes {[x.tensor.shape for x in xs]} do not broadcast")
    w.emit(w.unique(name), _MERGES[op], {}, {}, xs, shape, spatial=first.spatial, perm=first.perm,
           nonneg=all(x.nonneg for x in xs) and op != "Sub", onnx_value=node.output[0])


def concat(w: Walker, node: NodeProto) -> None:
    """Concat: Keras Concatenate on the matching axis (ONNX's channel axis is our last)."""
    name, op = label(node), node.op_type
    xs = [w.value(i, name, op) for i in node.input]
    first = xs[0]
    rank = first.onnx_rank
    axis = int(attrs(node)["axis"]) % rank
    if axis == 0 or any(x.spatial != first.spatial or x.onnx_rank != rank or x.perm is not None for x in xs):
        w.refuse(name, op, "inputs must share a layout (no Flatten of a map) and the axis must not be the batch")
    ours = len(first.tensor.shape) - 1 if axis == 1 else axis - 2
    shape = list(first.tensor.shape)
    shape[ours] = sum(x.tensor.shape[ours] for x in xs)
    w.emit(w.unique(name), "Concatenate", {"axis": -1 if axis == 1 else axis - 1}, {}, xs, shape,
           spatial=first.spatial, nonneg=all(x.nonneg for x in xs), onnx_value=node.output[0])


def _flatten_to(w: Walker, node: NodeProto, x: Value, type_: str, cfg: dict[str, Any]) -> None:
    """Alias x as a (N, F) tensor: a map's ONNX (c, h, w) feature order read through ``perm``."""
    perm = x.perm
    if x.spatial:
        shape = x.tensor.shape
        perm = np.arange(x.tensor.size, dtype=np.int64).reshape(shape)
        perm = np.moveaxis(perm, -1, 0).reshape(-1)
        if math.prod(shape[:-1]) == 1:
            perm = None
    w.emit(w.unique(label(node)), type_, cfg, {}, [x], (x.tensor.size,), spatial=False, alias=True, perm=perm,
           nonneg=x.nonneg, onnx_value=node.output[0])


def flatten(w: Walker, node: NodeProto) -> None:
    """Flatten (axis 1): an alias; its (c, h, w) feature order is kept as a permutation."""
    x = w.value(node.input[0], label(node), node.op_type)
    if int(attrs(node).get("axis", 1)) % x.onnx_rank != 1:
        w.refuse(label(node), node.op_type, "only axis 1 (keep the batch axis) is supported")
    _flatten_to(w, node, x, "Flatten", {})


def reshape(w: Walker, node: NodeProto) -> None:
    """Reshape to (N, -1) or (N, F): as Flatten; to the input's own shape: an alias."""
    name, op = label(node), node.op_type
    x = w.value(node.input[0], name, op)
    target = w.const(node.input[1])
    if target is None:
        w.refuse(name, op, "its shape must be a constant")
    dims = [int(d) for d in target.reshape(-1)]
    onnx_shape = ((x.tensor.shape[-1], *x.tensor.shape[:-1]) if x.spatial else x.tensor.shape)
    dims = [(onnx_shape[i - 1] if i > 0 else 1) if d == 0 else d for i, d in enumerate(dims)]
    if len(dims) == 2 and dims[0] in (1, -1) and dims[1] in (-1, x.tensor.size) and dims != [-1, -1]:
        _flatten_to(w, node, x, "Reshape", {"target_shape": [x.tensor.size]})
        return
    if dims[1:] == list(onnx_shape):
        identity(w, node)
        return
    w.refuse(name, op, f"shape {dims}: only a Flatten-like (N, -1) or the same shape is supported")


def identity(w: Walker, node: NodeProto) -> None:
    """Identity and Dropout (inference): aliases of their input."""
    x = w.value(node.input[0], label(node), node.op_type)
    if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1]:
        w.refuse(label(node), node.op_type, "its mask output is used")
    type_ = "Dropout" if node.op_type == "Dropout" else "Reshape"
    cfg = {"rate": 0.0} if type_ == "Dropout" else {"target_shape": list(x.tensor.shape)}
    w.emit(w.unique(label(node)), type_, cfg, {}, [x], x.tensor.shape, spatial=x.spatial, alias=True, perm=x.perm,
           nonneg=x.nonneg, onnx_value=node.output[0])


#: ONNX op type -> converter (the default domain).
CONVERTERS: dict[str, Callable[[Walker, NodeProto], None]] = {
    "Conv": conv, "MaxPool": pool, "AveragePool": pool,
    "GlobalAveragePool": global_pool, "GlobalMaxPool": global_pool,
    "Gemm": gemm, "MatMul": matmul, "BatchNormalization": batchnorm,
    **{op: activation for op in ("Relu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Softmax", "Clip")},
    **{op: binary for op in ("Add", "Sub", "Mul", "Div", "Max")},
    "Concat": concat, "Flatten": flatten, "Reshape": reshape, "Identity": identity, "Dropout": identity,
}
