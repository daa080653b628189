"""Converters of ops that only move values: Flatten, Reshape, Squeeze, Unsqueeze, Transpose,
Identity, Dropout; Pad (ZeroPadding, Cropping) and nearest Resize / Upsample (UpSampling).

Re-indexing ops compose the ONNX tensor's element -> neuron map (:meth:`Value.onnx_ids`) and make
no neurons when the result is in our order (an alias, a flat ``perm``); otherwise the value is
pending and settles where a consumer needs it: a Permute layer named after the node when it is a
transposition of its source's axes, else an error (see :meth:`Walker.settle`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from onnx import NodeProto

from pipeline.onnx.convert import attrs, label, spatial_input
from pipeline.onnx.values import Value, Walker


def _reindexed(w: Walker, node: NodeProto, x: Value, ids: np.ndarray, axes: tuple[int, ...] | None,
               type_: str = "Reshape") -> None:
    """Record the node's output as ``ids`` over x's neurons: an alias now when it is in our order."""
    value = w.pending(x, ids, axes, node)
    ours = ids.reshape(-1) if ids.ndim == 1 else np.moveaxis(ids, 0, -1).reshape(-1)
    channels_of_one = ids.ndim > 1 and ids.shape[0] == 1 and ids.shape[-1] > 1  # features last? its consumer says
    if ids.ndim == 1 or np.array_equal(ours, np.arange(ours.size)) and not channels_of_one:
        w.settle(value, type_)


def _out_shape(w: Walker, node: NodeProto, in_shape: tuple[int, ...], dims: list[int], allowzero: bool) -> tuple[int, ...]:
    """A Reshape target (0 copies, -1 infers) for one sample, batch axis first and kept."""
    full_in = (1, *in_shape)
    out = [full_in[i] if d == 0 and not allowzero and i < len(full_in) else d for i, d in enumerate(dims)]
    if out.count(-1) > 1 or any(d < -1 for d in out):
        w.refuse(label(node), node.op_type, f"shape {dims} is not a valid target")
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or math.prod(full_in) % known:
            w.refuse(label(node), node.op_type, f"shape {dims} does not fit the input {full_in}")
        out[out.index(-1)] = math.prod(full_in) // known
    if math.prod(out) != math.prod(full_in) or len(out) < 2 or out[0] != 1:
        w.refuse(label(node), node.op_type, f"shape {dims} of the input (N, {', '.join(map(str, in_shape))}): "
                 "the batch axis must stay first and alone")
    return tuple(out[1:])


def flatten(w: Walker, node: NodeProto) -> None:
    """Flatten (axis 1): an alias; a map's (c, h, w) feature order is kept as a permutation."""
    x = w.value(node.input[0], label(node), node.op_type, pending=True)
    if int(attrs(node).get("axis", 1)) % x.onnx_rank != 1:
        w.refuse(label(node), node.op_type, "only axis 1 (keep the batch axis) is supported")
    _reindexed(w, node, x, x.onnx_ids().reshape(-1), None, "Flatten")


def reshape(w: Walker, node: NodeProto) -> None:
    """Reshape to a constant shape that keeps the batch axis: a re-indexing (see the module docstring)."""
    name, op = label(node), node.op_type
    x = w.value(node.input[0], name, op, pending=True)
    target = w.const(node.input[1])
    if target is None:
        w.refuse(name, op, "its shape must be a constant")
    ids = x.onnx_ids()
    shape = _out_shape(w, node, ids.shape, [int(d) for d in target.reshape(-1)], bool(attrs(node).get("allowzero", 0)))
    _reindexed(w, node, x, ids.reshape(shape), x.onnx_axes() if shape == ids.shape else None)


def squeeze(w: Walker, node: NodeProto) -> None:
    """Squeeze / Unsqueeze of non-batch axes: a Reshape."""
    name, op = label(node), node.op_type
    x = w.value(node.input[0], name, op, pending=True)
    ids = x.onnx_ids()
    given = w.const(node.input[1]) if len(node.input) > 1 and node.input[1] else attrs(node).get("axes")
    if given is None or np.size(given) == 0:  # Squeeze of every axis of size 1 also drops a batch of 1
        w.refuse(name, op, "its axes must be given (a constant)")
    shape = [1, *ids.shape]
    if op == "Squeeze":
        axes = sorted(int(a) % len(shape) for a in np.ravel(given))
        if any(shape[a] != 1 for a in axes if a):
            w.refuse(name, op, f"axes {list(np.ravel(given))} are not all of size 1")
        new = [d for i, d in enumerate(shape) if i not in axes]
    else:
        rank = len(shape) + len(np.ravel(given))
        axes = sorted(int(a) % rank for a in np.ravel(given))
        new, rest = [], iter(shape)
        for i in range(rank):
            new.append(1 if i in axes else next(rest))
    if 0 in axes or len(new) < 2:
        w.refuse(name, op, "it would move the batch axis")
    _reindexed(w, node, x, ids.reshape(new[1:]), None)


def transpose(w: Walker, node: NodeProto) -> None:
    """Transpose of the non-batch axes: a re-indexing (an alias, or a Permute where it is used)."""
    name, op = label(node), node.op_type
    x = w.value(node.input[0], name, op, pending=True)
    rank = x.onnx_rank
    perm = [int(p) % rank for p in attrs(node).get("perm", range(rank - 1, -1, -1))]
    if sorted(perm) != list(range(rank)) or perm[0] != 0:
        w.refuse(name, op, f"perm {perm}: only permutations that keep the batch axis first are supported")
    order = [p - 1 for p in perm[1:]]
    axes = x.onnx_axes()
    _reindexed(w, node, x, x.onnx_ids().transpose(order), None if axes is None else tuple(axes[p] for p in order))


def identity(w: Walker, node: NodeProto) -> None:
    """Identity and Dropout (inference): aliases of their input."""
    x = w.value(node.input[0], label(node), node.op_type)
    if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1]:
        w.refuse(label(node), node.op_type, "its mask output is used")
    type_ = "Dropout" if node.op_type == "Dropout" else "Reshape"
    cfg = {"rate": 0.0} if type_ == "Dropout" else {"target_shape": list(x.tensor.shape)}
    w.emit(w.unique(label(node)), type_, cfg, {}, [x], x.tensor.shape, spatial=x.spatial, alias=True, perm=x.perm,
           onnx_value=node.output[0])


def pad(w: Walker, node: NodeProto) -> None:
    """Pad (constant 0) of the spatial axes: ZeroPadding; negative pads: Cropping (both: pad, then crop)."""
    name, op = label(node), node.op_type
    x = spatial_input(w, node)
    a = attrs(node)
    if a.get("mode", "constant") != "constant":
        w.refuse(name, op, f"mode {a['mode']!r}: only 'constant' (zeros) is supported")
    rank = x.onnx_rank
    if w.opset >= 11:
        pads = w.const(node.input[1]) if len(node.input) > 1 else None
        value = w.const(node.input[2]) if len(node.input) > 2 and node.input[2] else 0.0
        axes = w.const(node.input[3]) if len(node.input) > 3 and node.input[3] else np.arange(rank)
        if pads is None or value is None or axes is None:
            w.refuse(name, op, "pads, constant_value and axes must be constants")
    else:
        pads, value, axes = np.asarray(a.get("pads", [])), a.get("value", 0.0), np.arange(rank)
    if float(np.asarray(value).reshape(-1)[0] if np.size(value) else 0.0) != 0.0:
        w.refuse(name, op, f"constant_value {value}: only 0 is supported")
    pads, axes = [int(p) for p in np.ravel(pads)], [int(ax) % rank for ax in np.ravel(axes)]
    if len(pads) != 2 * len(axes):
        w.refuse(name, op, f"pads {pads} are not (begin, end) for axes {axes}")
    full = [(0, 0)] * rank
    for j, ax in enumerate(axes):
        full[ax] = (pads[j], pads[len(axes) + j])
    if full[0] != (0, 0) or full[1] != (0, 0):
        w.refuse(name, op, f"pads {pads} pad the batch or channel axis: only spatial axes are supported")
    spatial = full[2:]
    grow = [[max(b, 0), max(e, 0)] for b, e in spatial]
    cut = [[max(-b, 0), max(-e, 0)] for b, e in spatial]
    n, in_sp = rank - 2, x.tensor.shape[:-1]
    if any(i + b + e < 1 for i, (b, e) in zip(in_sp, spatial, strict=True)):
        w.refuse(name, op, f"pads {pads} leave nothing of the input {in_sp}")
    name = w.unique(name)
    grown = tuple(i + b + e for i, (b, e) in zip(in_sp, grow, strict=True))
    cfg = {"data_format": "channels_last"}
    if not any(map(any, cut)):
        w.emit(name, f"ZeroPadding{n}D", {**cfg, "padding": grow}, {}, [x], (*grown, x.channels()), spatial=True,
               onnx_value=node.output[0])
        return
    src = x
    if any(map(any, grow)):
        src = w.emit(w.unique(f"{name}/pad"), f"ZeroPadding{n}D", {**cfg, "padding": grow}, {}, [x],
                     (*grown, x.channels()), spatial=True, part_of=name)
    out = tuple(g - b - e for g, (b, e) in zip(grown, cut, strict=True))
    w.emit(name, f"Cropping{n}D", {**cfg, "cropping": cut}, {}, [src], (*out, x.channels()), spatial=True,
           onnx_value=node.output[0])


def slice_(w: Walker, node: NodeProto) -> None:
    """Slice of spatial axes with step 1: Cropping (channels and batch are kept whole)."""
    name, op = label(node), node.op_type
    x = spatial_input(w, node)
    rank, in_sp = x.onnx_rank, x.tensor.shape[:-1]
    if w.opset >= 10:
        given = [node.input[k] if len(node.input) > k else "" for k in range(1, 5)]
        starts, ends, axes, steps = (w.const(i) for i in given)
        if starts is None or ends is None or any(i and w.const(i) is None for i in given):
            w.refuse(name, op, "starts, ends, axes and steps must be constants")
    else:
        a = attrs(node)
        starts, ends, axes, steps = a.get("starts"), a.get("ends"), a.get("axes"), None
    starts, ends = [int(v) for v in np.ravel(starts)], [int(v) for v in np.ravel(ends)]
    axes = list(range(len(starts))) if axes is None else [int(v) % rank for v in np.ravel(axes)]
    steps = [1] * len(starts) if steps is None else [int(v) for v in np.ravel(steps)]
    full = [1, x.channels(), *in_sp]
    crop = [[0, 0] for _ in in_sp]
    for ax, b, e, st in zip(axes, starts, ends, steps, strict=True):
        dim = full[ax]
        b, e = (max(0, min(dim, v + dim if v < 0 else v)) for v in (b, e))
        if st != 1 or (ax < 2 and (b, e) != (0, dim)):
            w.refuse(name, op, f"axis {ax} from {b} to {e} step {st}: only spatial axes with step 1 are supported")
        if ax >= 2:
            if e <= b:
                w.refuse(name, op, f"axis {ax} from {b} to {e} is empty")
            crop[ax - 2] = [b, dim - e]
    out = tuple(i - b - e for i, (b, e) in zip(in_sp, crop, strict=True))
    w.emit(w.unique(name), f"Cropping{rank - 2}D", {"cropping": crop, "data_format": "channels_last"}, {}, [x],
           (*out, x.channels()), spatial=True, onnx_value=node.output[0])


def _nearest_source(o: np.ndarray, i: int, k: int, coord: str, nearest: str) -> np.ndarray | None:
    """The input index ONNX's nearest Resize reads for output indexes o (scale k), or None if undefined here."""
    out = i * k
    x = {
        "half_pixel": (o + 0.5) / k - 0.5, "half_pixel_symmetric": (o + 0.5) / k - 0.5,
        "pytorch_half_pixel": (o + 0.5) / k - 0.5 if out > 1 else 0.0 * o,
        "asymmetric": o / k, "tf_half_pixel_for_nn": (o + 0.5) / k,
        "align_corners": o * (i - 1) / (out - 1) if out > 1 else 0.0 * o,
    }.get(coord)
    if x is None:
        return None
    frac = x - np.floor(x)
    rounded = {
        "round_prefer_floor": np.where(frac == 0.5, np.floor(x), np.round(x)),
        "round_prefer_ceil": np.where(frac == 0.5, np.ceil(x), np.round(x)),
        "floor": np.floor(x), "ceil": np.ceil(x),
    }.get(nearest)
    return None if rounded is None else np.clip(rounded, 0, i - 1).astype(np.int64)


def resize(w: Walker, node: NodeProto) -> None:
    """Resize / Upsample, mode nearest, integer spatial scales that repeat every cell k times: UpSampling."""
    name, op = label(node), node.op_type
    x = spatial_input(w, node)
    a = attrs(node)
    rank, in_sp = x.onnx_rank, x.tensor.shape[:-1]
    if a.get("mode", "nearest") != "nearest":
        w.refuse(name, op, f"mode {a['mode']!r}: only 'nearest' is supported")
    if op == "Upsample" or w.opset < 11:
        scales = w.const(node.input[1]) if len(node.input) > 1 else np.asarray(a.get("scales", []))
        sizes, coord, nearest = None, "asymmetric", "floor"
    else:
        scales = w.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        sizes = w.const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        coord = a.get("coordinate_transformation_mode", "half_pixel")
        nearest = a.get("nearest_mode", "round_prefer_floor")
        if "axes" in a or a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
            w.refuse(name, op, "axes and keep_aspect_ratio_policy are not supported")
    if sizes is not None and np.size(sizes):
        full = np.ravel(sizes).astype(np.float64) / np.asarray([1, x.channels(), *in_sp], np.float64)
    elif scales is not None and np.size(scales):
        full = np.ravel(scales).astype(np.float64)
    else:
        w.refuse(name, op, "its scales or sizes must be constants")
    if full.size != rank or full[0] != 1 or full[1] != 1 or any(s < 1 or s != round(s) for s in full[2:]):
        w.refuse(name, op, f"scales {full.tolist()}: only integer scales >= 1 of the spatial axes are supported")
    size = [int(s) for s in full[2:]]
    for i, k in zip(in_sp, size, strict=True):
        o = np.arange(i * k)
        src = _nearest_source(o, i, k, coord, nearest)
        if src is None or not np.array_equal(src, o // k):
            w.refuse(name, op, f"coordinate_transformation_mode {coord!r} with nearest_mode {nearest!r} does not "
                     f"repeat each cell {k} times")
    w.emit(w.unique(name), f"UpSampling{rank - 2}D", {"size": size, "interpolation": "nearest",
                                                      "data_format": "channels_last"}, {}, [x],
           (*(i * k for i, k in zip(in_sp, size, strict=True)), x.channels()), spatial=True,
           onnx_value=node.output[0])


#: Re-indexing and moving ops -> converter.
CONVERTERS: dict[str, Callable[[Walker, NodeProto], None]] = {
    "Flatten": flatten, "Reshape": reshape, "Squeeze": squeeze, "Unsqueeze": squeeze, "Transpose": transpose,
    "Identity": identity, "Dropout": identity, "Pad": pad, "Slice": slice_, "Resize": resize, "Upsample": resize,
}
