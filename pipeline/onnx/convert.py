"""One converter per ONNX op: each builds the LayerSpecs (Keras type and config) an existing
translator turns into exactly the edges of the op's ONNX semantics.

Weights are moved from ONNX layouts to Keras's (Conv ``(M, C/g, *k)`` -> ``(*k, C/g, M)``, Gemm ``B``
as ``(K, M)`` scaled by alpha, rows read through a Flatten's feature order). Explicit pads are
Keras's ``'valid'`` or ``'same'`` when they are the same geometry, else a ZeroPadding step
(``<node>/pad``, a part of the node) before a ``'valid'`` convolution, and explicit window pads for
pooling; see docs/onnx.md. Ops that only move values are in :mod:`pipeline.onnx.reindex`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from onnx import NodeProto, helper

from pipeline import activations
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


def spatial_input(w: Walker, node: NodeProto) -> Value:
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


def _zero_pad(w: Walker, name: str, x: Value, in_sp, out_sp, pads, kernel, strides, dil, exact: bool = False) -> Value:
    """A ZeroPadding part ``<name>/pad`` with the pads a 'valid' window of out_sp needs.

    ``exact``: at most the node's own pads (windows past them, as ``ceil_mode`` gives, are cut there).
    """
    used = [(b, min(e, need) if exact else need)
            for i, o, (b, e), k, s, d in zip(in_sp, out_sp, pads, kernel, strides, dil, strict=True)
            for need in [max(0, (o - 1) * s + (k - 1) * d + 1 - i - b)]]
    shape = (*(i + b + a for i, (b, a) in zip(in_sp, used, strict=True)), x.channels())
    pad_name = w.unique(f"{name}/pad")
    return w.emit(pad_name, f"ZeroPadding{len(in_sp)}D", {"padding": [list(p) for p in used]}, {}, [x], shape,
                  spatial=True, part_of=name)


def conv(w: Walker, node: NodeProto) -> None:
    """Conv: Conv{n}D (groups), DepthwiseConv{n}D when every group is one input channel."""
    name, op = label(node), node.op_type
    x = spatial_input(w, node)
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


def conv_transpose(w: Walker, node: NodeProto) -> None:
    """ConvTranspose (group 1): Conv{n}DTranspose; pads Keras has no geometry for are cropped after.

    The Keras layer's 'valid' output (every position some input reaches, plus output_padding past
    the pads) feeds a Cropping (the node's layer; the transpose is its part ``<node>/full``) when
    the ONNX pads are not Keras's 'valid' or 'same'.
    """
    name, op = label(node), node.op_type
    x = spatial_input(w, node)
    kernel_w = w.const(node.input[1])
    bias = w.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if kernel_w is None or (len(node.input) > 2 and node.input[2] and bias is None):
        w.refuse(name, op, "its weights W and B must be initializers (constants)")
    a = attrs(node)
    n, in_sp, cin = x.onnx_rank - 2, x.tensor.shape[:-1], x.channels()
    if int(a.get("group", 1)) != 1:
        w.refuse(name, op, f"group {a['group']}: only group 1 is supported")
    if kernel_w.shape[0] != cin:
        w.refuse(name, op, f"W of shape {kernel_w.shape} does not take {cin} input channels")
    kernel, cout = tuple(kernel_w.shape[2:]), kernel_w.shape[1]
    strides, dil = tuple(a.get("strides", [1] * n)), tuple(a.get("dilations", [1] * n))
    opad = tuple(a.get("output_padding", [0] * n))
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dil, strict=True)]
    full = [s * (i - 1) + o + sp for i, s, o, sp in zip(in_sp, strides, opad, spans, strict=True)]
    auto, out_shape = a.get("auto_pad", "NOTSET"), a.get("output_shape")
    if out_shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):  # pads from the output size
        target = list(out_shape)[-n:] if out_shape is not None else [i * s for i, s in zip(in_sp, strides, strict=True)]
        totals = [f - t for f, t in zip(full, target, strict=True)]
        if min(totals) < 0:
            w.refuse(name, op, f"output_shape {target} is larger than the full output {full}")
        upper = auto == "SAME_UPPER"
        pads = [(t // 2, t - t // 2) if upper else (t - t // 2, t // 2) for t in totals]
    elif auto == "VALID":
        pads = [(0, 0)] * n
    else:
        p = list(a.get("pads", [0] * (2 * n)))
        if len(p) != 2 * n or min(p) < 0:
            w.refuse(name, op, f"pads {p} are not {2 * n} non-negative values")
        pads = list(zip(p[:n], p[n:], strict=True))
    out_sp = [f - b - e for f, (b, e) in zip(full, pads, strict=True)]
    if min(out_sp) < 1:
        w.refuse(name, op, f"pads {pads} leave no output of the full size {full}")
    name = w.unique(name)
    cfg: dict[str, Any] = {"filters": cout, "kernel_size": list(kernel), "strides": list(strides),
                           "dilation_rate": list(dil), "data_format": "channels_last", "activation": "linear",
                           "use_bias": bias is not None}
    weights = {"kernel": kernel_w.transpose(*range(2, 2 + n), 1, 0)}
    if bias is not None:
        weights["bias"] = bias.reshape(-1)
    type_ = f"Conv{n}DTranspose"
    geometry = list(zip(in_sp, out_sp, pads, strides, spans, strict=True))
    same = all(-(-o // s) == i and b == max((i - 1) * s + sp - o, 0) // 2 for i, o, (b, _), s, sp in geometry)
    valid = all(b == 0 and (o - sp) // s + 1 == i for i, o, (b, _), s, sp in geometry)
    if same or valid:
        w.emit(name, type_, {**cfg, "padding": "same" if same else "valid"}, weights, [x], (*out_sp, cout),
               spatial=True, onnx_value=node.output[0])
        return
    # a 'valid' transpose as long as the output needs (its positions past `full - e` get only the bias)
    ends = [max(o + b, (i - 1) * s + sp) for i, o, (b, _), s, sp in geometry]
    if any(e - (i - 1) * s - sp >= s for i, e, s, sp in zip(in_sp, ends, strides, spans, strict=True)):
        w.refuse(name, op, f"output_padding {list(opad)} reaches a whole stride past the pads")
    whole = w.emit(w.unique(f"{name}/full"), type_, {**cfg, "padding": "valid"}, weights, [x], (*ends, cout),
                   spatial=True, part_of=name)
    crop = [[b, e - b - o] for e, o, (b, _) in zip(ends, out_sp, pads, strict=True)]
    w.emit(name, f"Cropping{n}D", {"cropping": crop, "data_format": "channels_last"}, {}, [whole], (*out_sp, cout),
           spatial=True, onnx_value=node.output[0])


def pool(w: Walker, node: NodeProto) -> None:
    """MaxPool / AveragePool: Keras pooling; pads that are not Keras's geometry as explicit window pads."""
    name, op = label(node), node.op_type
    x = spatial_input(w, node)
    a = attrs(node)
    n, in_sp = x.onnx_rank - 2, x.tensor.shape[:-1]
    kernel = tuple(a["kernel_shape"])
    strides, dil = tuple(a.get("strides", [1] * n)), tuple(a.get("dilations", [1] * n))
    if len(node.output) > 1 and node.output[1]:
        w.refuse(name, op, "its Indices output is used: only the values are supported")
    pads = _pads(w, node, a, in_sp, kernel, strides, dil)
    is_max, include = op == "MaxPool", bool(a.get("count_include_pad", 0))
    out_sp = []
    for i, (b, e), k, s, d in zip(in_sp, pads, kernel, strides, dil, strict=True):
        span = (k - 1) * d + 1
        o = (i + b + e - span) // s + 1
        if a.get("ceil_mode", 0):
            o = -(-(i + b + e - span) // s) + 1
            o -= (o - 1) * s >= i + b  # the last window must start inside the input or its left pad
        out_sp.append(o)
    if min(out_sp) < 1:
        w.refuse(name, op, f"the window is larger than the padded input {in_sp}")
    name = w.unique(name)
    src = x
    if not is_max and include and any(b or e for b, e in pads):  # the divisor counts the pads: real zeros
        src = _zero_pad(w, name, x, in_sp, out_sp, pads, kernel, strides, dil, exact=True)
        in_sp, pads = src.tensor.shape[:-1], [(0, 0)] * n
    padding: Any = _keras_padding(in_sp, out_sp, pads, kernel, strides, dil)
    if padding is None:  # a window over its real members only, wherever the pads are
        padding = [[b, max(0, (o - 1) * s + (k - 1) * d + 1 - i - b)]
                   for i, o, (b, _), k, s, d in zip(in_sp, out_sp, pads, kernel, strides, dil, strict=True)]
    cfg = {"pool_size": list(kernel), "strides": list(strides), "padding": padding, "data_format": "channels_last"}
    if any(d != 1 for d in dil):
        cfg["dilation_rate"] = list(dil)
    type_ = f"{'Max' if is_max else 'Average'}Pooling{n}D"
    w.emit(name, type_, cfg, {}, [src], (*out_sp, x.channels()), spatial=True,
           onnx_value=node.output[0])


def global_pool(w: Walker, node: NodeProto) -> None:
    """GlobalAveragePool / GlobalMaxPool (keepdims), and ReduceMean / ReduceMax over every spatial axis."""
    name, op = label(node), node.op_type
    x = spatial_input(w, node)
    n, keep = x.onnx_rank - 2, True
    if op.startswith("Reduce"):
        a = attrs(node)
        given = w.const(node.input[1]) if len(node.input) > 1 and node.input[1] else a.get("axes")
        axes = sorted(int(ax) % x.onnx_rank for ax in np.ravel(given)) if given is not None else None
        if axes != list(range(2, 2 + n)):
            w.refuse(name, op, f"axes {None if given is None else list(np.ravel(given))}: only all the spatial "
                     "axes (a global pooling) are supported")
        keep = bool(a.get("keepdims", 1))
    type_ = f"Global{'Max' if op in ('GlobalMaxPool', 'ReduceMax') else 'Average'}Pooling{n}D"
    w.emit(w.unique(name), type_, {"keepdims": keep, "data_format": "channels_last"}, {}, [x],
           (*[1] * n, x.channels()) if keep else (x.channels(),), spatial=keep, onnx_value=node.output[0])


def _flat_input(w: Walker, node: NodeProto, features_last: bool = False) -> Value:
    """A (N, K) input; with ``features_last`` also (N, ..., K), the features on the last axis (MatMul)."""
    x = w.value(node.input[0], label(node), node.op_type, features_last=features_last)
    if x.spatial or (x.onnx_rank > 2 and not features_last):
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
           {"kernel": x.to_ours(kernel), **({"bias": bias} if bias is not None else {})}, [x],
           (*x.tensor.shape[:-1], kernel.shape[1]), spatial=False, onnx_value=out)


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
    """MatMul by a constant: Dense (on the last axis); a following Add of a constant vector becomes its bias
    (named after the Add)."""
    name, op = label(node), node.op_type
    x = _flat_input(w, node, features_last=True)
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
    if not x.spatial and x.onnx_rank > 2:
        w.refuse(name, op, f"its input of shape {x.tensor.shape} has its features last, not on ONNX's channel axis")
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


def layernorm(w: Walker, node: NodeProto) -> None:
    """LayerNormalization over the features (the last axis of a features-last value, a (N, F) vector,
    or the channels of a 1x1 map): Keras LayerNormalization over our last axis."""
    name, op = label(node), node.op_type
    x = w.value(node.input[0], name, op, features_last=True)
    a = attrs(node)
    rank = x.onnx_rank
    axis = int(a.get("axis", -1)) % rank
    one_position = x.spatial and math.prod(x.tensor.shape[:-1]) == 1
    if axis != _channel_axis(x) or not (not x.spatial and axis == rank - 1 or one_position and axis == 1):
        w.refuse(name, op, f"axis {a.get('axis', -1)} of shape {x.onnx_ids().shape}: only the features (the "
                 "last axis, after a Transpose to channels last) are supported")
    if any(o for o in node.output[1:]):
        w.refuse(name, op, "its Mean and InvStdDev outputs are used")
    scale = w.const(node.input[1])
    bias = w.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if scale is None or (len(node.input) > 2 and node.input[2] and bias is None):
        w.refuse(name, op, "Scale and B must be constants")
    c = x.channels()
    gamma = _vector(w, node, scale, c, "Scale")
    beta = _vector(w, node, bias, c, "B") if bias is not None else np.zeros(c)
    cfg = {"axis": -1, "epsilon": float(a.get("epsilon", 1e-5)), "center": True, "scale": True}
    w.emit(w.unique(name), "LayerNormalization", cfg, {"gamma": x.to_ours(gamma), "beta": x.to_ours(beta)}, [x],
           x.tensor.shape, spatial=x.spatial, perm=x.perm, onnx_value=node.output[0])


_ACTIVATIONS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "HardSwish": "hard_swish", "Erf": "erf"}


def activation(w: Walker, node: NodeProto) -> None:
    """Relu, Sigmoid, Tanh, HardSigmoid, HardSwish, Gelu, Erf, LeakyRelu, Elu, Softmax (channel axis),
    Clip(0, max): activation layers."""
    name, op = label(node), node.op_type
    x = w.value(node.input[0], name, op, features_last=True)
    a = attrs(node)
    if op in _ACTIVATIONS:
        type_, cfg = "Activation", {"activation": _ACTIVATIONS[op]}
    elif op == "HardSigmoid":  # max(0, min(1, alpha x + beta)); ONNX's defaults are not Keras's 1/6
        fn = activations.hard_sigmoid_name(a.get("alpha", 0.2), a.get("beta", 0.5))
        type_, cfg = "Activation", {"activation": fn}
    elif op == "Gelu":
        approx = a.get("approximate", "none")
        if approx not in ("none", "tanh"):
            w.refuse(name, op, f"approximate {approx!r}: only 'none' and 'tanh' are defined")
        type_, cfg = "Activation", {"activation": "gelu" if approx == "none" else "gelu_tanh"}
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
        ok = axis == _channel_axis(x) and (w.opset >= 13 or spatial_size == 1 or not x.spatial)
        if not ok:
            w.refuse(name, op, f"axis {axis} (opset {w.opset}): only the channel/feature axis is supported")
        type_, cfg = "Softmax", {"axis": -1}
    w.emit(w.unique(name), type_, cfg, {}, [x], x.tensor.shape, spatial=x.spatial, perm=x.perm,
           onnx_value=node.output[0])


def prelu(w: Walker, node: NodeProto) -> None:
    """PRelu with a constant slope (a scalar, per channel, or per element): the PReLU translator."""
    name, op = label(node), node.op_type
    x = w.value(node.input[0], name, op, features_last=True)
    slope = w.const(node.input[1])
    if slope is None:
        w.refuse(name, op, "its slope must be a constant")
    onnx_shape = x.onnx_ids().shape
    s = np.asarray(slope, np.float64)
    while s.ndim > len(onnx_shape) and s.shape[0] == 1:
        s = s[0]
    try:
        full = np.broadcast_to(s, onnx_shape)
    except ValueError:
        w.refuse(name, op, f"slope of shape {slope.shape} does not broadcast to the input {onnx_shape}")
    if x.spatial or x.onnx_rank > 2:  # to our layout, one value per channel when it is
        full = np.moveaxis(full, 0, -1) if x.spatial else full
        per_channel = full.reshape(-1, full.shape[-1])
        alpha = per_channel[0] if np.all(per_channel == per_channel[:1]) else full
    else:
        alpha = x.to_ours(full.reshape(-1))
    w.emit(w.unique(name), "PReLU", {"shared_axes": None}, {"alpha": alpha}, [x], x.tensor.shape,
           spatial=x.spatial, perm=x.perm, onnx_value=node.output[0])


def _channel_axis(x: Value) -> int:
    """The ONNX axis of x's channels (features): 1 for a map, the last for features-last values."""
    return 1 if x.spatial else x.onnx_rank - 1


_MERGES = {"Add": "Add", "Sub": "Subtract", "Mul": "Multiply", "Max": "Maximum"}


def _per_channel(w: Walker, node: NodeProto, x: Value, c: np.ndarray) -> np.ndarray:
    """A constant operand as one value per channel (feature) of x, in our order."""
    rank = x.onnx_rank
    axis = _channel_axis(x)
    shape = (1,) * (rank - c.ndim) + tuple(c.shape) if c.ndim <= rank else None
    if shape is None or any(d != 1 for i, d in enumerate(shape) if i != axis) or shape[axis] not in (1, x.channels()):
        w.refuse(label(node), node.op_type, f"constant of shape {c.shape} is not one value per channel")
    vec = np.broadcast_to(c.reshape(-1).astype(np.float64), (x.channels(),)).copy()
    return x.to_ours(vec)


def binary(w: Walker, node: NodeProto) -> None:
    """Add, Sub, Mul, Max of two tensors (Keras merges); Add, Sub, Mul, Div by a per-channel constant (Rescaling)."""
    name, op = label(node), node.op_type
    consts = [w.const(i) for i in node.input]
    if sum(c is not None for c in consts) == 1 and op != "Max":
        k = 0 if consts[0] is not None else 1
        x = w.value(node.input[1 - k], name, op, features_last=True)
        c = _per_channel(w, node, x, consts[k])
        ones, zeros = np.ones_like(c), np.zeros_like(c)
        if op == "Div" and k == 0:
            w.refuse(name, op, "a constant divided by a tensor is not linear")
        scale, shift = {"Add": (ones, c), "Mul": (c, zeros), "Div": (1.0 / c, zeros),
                        "Sub": (ones, -c) if k == 1 else (-ones, c)}[op]
        w.emit(w.unique(name), "Rescaling", {"scale": scale.tolist(), "offset": shift.tolist()}, {}, [x],
               x.tensor.shape, spatial=x.spatial, perm=x.perm, onnx_value=node.output[0])
        return
    if op == "Div" or any(c is not None for c in consts):
        w.refuse(name, op, "supported: two computed tensors (Add, Sub, Mul, Max), or a tensor and one constant")
    xs = [w.value(i, name, op, features_last=True) for i in node.input]
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
           onnx_value=node.output[0])


def concat(w: Walker, node: NodeProto) -> None:
    """Concat: Keras Concatenate on the matching axis (ONNX's channel axis is our last)."""
    name, op = label(node), node.op_type
    xs = [w.value(i, name, op, features_last=True) for i in node.input]
    first = xs[0]
    rank = first.onnx_rank
    axis = int(attrs(node)["axis"]) % rank
    if axis == 0 or any(x.spatial != first.spatial or x.onnx_rank != rank or x.perm is not None for x in xs):
        w.refuse(name, op, "inputs must share a layout (no Flatten of a map) and the axis must not be the batch")
    if first.spatial:
        ours = len(first.tensor.shape) - 1 if axis == 1 else axis - 2
    else:  # features last: ONNX axis a is our axis a - 1
        ours = axis - 1
    shape = list(first.tensor.shape)
    shape[ours] = sum(x.tensor.shape[ours] for x in xs)
    keras_axis = -1 if ours == len(shape) - 1 else ours + 1
    w.emit(w.unique(name), "Concatenate", {"axis": keras_axis}, {}, xs, shape,
           spatial=first.spatial, onnx_value=node.output[0])


#: ONNX op type -> converter (the default domain).
CONVERTERS: dict[str, Callable[[Walker, NodeProto], None]] = {
    "Conv": conv, "MaxPool": pool, "AveragePool": pool,
    **{op: global_pool for op in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax")},
    "Gemm": gemm, "MatMul": matmul, "BatchNormalization": batchnorm, "LayerNormalization": layernorm,
    **{op: activation for op in ("Relu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Softmax", "Clip", "HardSigmoid",
                                 "HardSwish", "Gelu", "Erf")},
    "PRelu": prelu, "ConvTranspose": conv_transpose,
    **{op: binary for op in ("Add", "Sub", "Mul", "Div", "Max")},
    "Concat": concat,
}
