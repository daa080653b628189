"""ONNX graphs against a naive reference of ONNX's own semantics, and Keras against ONNX (issue 16).

Part 1: the reference below is written from the ONNX operator definitions alone (NCHW values, OIHW
weights, ``pads = [h_begin, w_begin, h_end, w_end]``, strides, dilations, group, ceil_mode,
count_include_pad, Gemm alpha/beta/transB), as plain loops over output positions and kernel
offsets in ONNX index space: an edge is (ONNX input element, ONNX output element, weight). It is
first checked against onnxruntime numerically (its edges evaluated on a random input give
onnxruntime's values), so it follows ONNX and not the implementation; then ONNX element
``[0, c, h, w]`` of a layer is mapped to our neuron ``offset + (h * W + w) * C + c`` and the edges are
compared as exact sets (source, target, float32 weight bits, kind) with what cnngraph extracts.

Part 2: one small architecture built in Keras and, with the same weights, directly in ONNX gives
the same graph up to names: layer by layer the same types, shapes, ids, node rows and edge sets,
and both replay to the same values (and each to its own framework).
"""

from __future__ import annotations

import itertools

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pytest

from pipeline.extract.tables import node_tables
from pipeline.model import randomize_batchnorm, walk
from pipeline.onnx import load_onnx, verify_onnx, walk_onnx
from pipeline.replay import graph_layers, replay, verify
from pipeline.spec import ModelGraph, Tensor
from tests.helpers import TOL, f32_bits, keras, layer_edges, sequential
from tests.test_naive_reference import tf_padding
from tests.test_onnx import Net

#: (ONNX input index, ONNX output index, weight): an index is (c, h, w) of a map or (f,) of a vector.
RefEdge = tuple[tuple[int, ...], tuple[int, ...], float]


# --- the reference: ONNX semantics in ONNX index space ---------------------------------------------

def out_size(size: int, k: int, s: int, d: int, begin: int, end: int, ceil: bool = False) -> int:
    """ONNX's output length along one axis (Conv and pooling with explicit pads)."""
    num = size + begin + end - ((k - 1) * d + 1)
    o = (-(-num // s) if ceil else num // s) + 1
    if ceil and (o - 1) * s >= size + begin:  # "sliding windows that would start in the right padded region are ignored"
        o -= 1
    return o


def ref_conv(w: np.ndarray, x_shape, pads, strides, dil, group: int) -> tuple[list[RefEdge], tuple[int, ...]]:
    """Conv: Y[m, oh, ow] = sum W[m, j, kh, kw] * X[g * C/g + j, oh * sh - hb + kh * dh, ...] over the
    in-bounds members (the zero pads add nothing), g = m // (M / group)."""
    m_n, per_in, kh_n, kw_n = w.shape
    _, h_n, w_n = x_shape
    hb, wb, he, we = pads
    oh_n = out_size(h_n, kh_n, strides[0], dil[0], hb, he)
    ow_n = out_size(w_n, kw_n, strides[1], dil[1], wb, we)
    per_out = m_n // group
    edges = []
    for m, oh, ow in itertools.product(range(m_n), range(oh_n), range(ow_n)):
        g = m // per_out
        for j, kh, kw in itertools.product(range(per_in), range(kh_n), range(kw_n)):
            ih, iw = oh * strides[0] - hb + kh * dil[0], ow * strides[1] - wb + kw * dil[1]
            if 0 <= ih < h_n and 0 <= iw < w_n:
                edges.append(((g * per_in + j, ih, iw), (m, oh, ow), float(w[m, j, kh, kw])))
    return edges, (m_n, oh_n, ow_n)


def ref_pool(op: str, x_shape, kernel, strides, pads, dil=(1, 1), ceil: int = 0,
             include: int = 0) -> tuple[list[RefEdge], tuple[int, ...]]:
    """MaxPool (the max of the real members: ONNX pads with -inf) and AveragePool.

    AveragePool divides by the real members (count_include_pad=0) or by the members inside the
    padded input (count_include_pad=1: the pads count, as zeros). A ``ceil_mode`` window may run
    past the end pad; the spec only says "the number of elements", and onnxruntime (like PyTorch,
    whose output-size rule ONNX quotes) does not count cells past the padded input: checked here
    against onnxruntime on every case.
    """
    c_n, h_n, w_n = x_shape
    hb, wb, he, we = pads
    oh_n = out_size(h_n, kernel[0], strides[0], dil[0], hb, he, bool(ceil))
    ow_n = out_size(w_n, kernel[1], strides[1], dil[1], wb, we, bool(ceil))
    edges = []
    for c, oh, ow in itertools.product(range(c_n), range(oh_n), range(ow_n)):
        real, padded = [], 0
        for kh, kw in itertools.product(range(kernel[0]), range(kernel[1])):
            ph, pw = oh * strides[0] + kh * dil[0], ow * strides[1] + kw * dil[1]  # in padded coordinates
            padded += ph < hb + h_n + he and pw < wb + w_n + we
            if hb <= ph < hb + h_n and wb <= pw < wb + w_n:
                real.append((c, ph - hb, pw - wb))
        weight = 1.0 if op == "MaxPool" else 1.0 / (padded if include else len(real))
        edges.extend((src, (c, oh, ow), weight) for src in real)
    return edges, (c_n, oh_n, ow_n)


def ref_gemm(b: np.ndarray, alpha: float, trans_b: int) -> list[RefEdge]:
    """Gemm on (N, K): Y[j] = alpha * sum_f A[f] * B'[f, j] + beta * C[j], B' = B.T when transB.

    alpha and beta are FLOAT attributes: 32-bit in the proto, so 0.7 is float32(0.7). The product
    of two float32 is exact in float64; the edge weight is it rounded once to float32.
    """
    bt, alpha = (b.T if trans_b else b), float(np.float32(alpha))
    return [((f,), (j,), alpha * float(bt[f, j])) for f in range(bt.shape[0]) for j in range(bt.shape[1])]


def ref_eval(edges: list[RefEdge], out_shape, x: np.ndarray, rule: str = "sum", bias=None) -> np.ndarray:
    """The reference's values: sum of weight * source (or the max of the sources), plus a bias per
    channel (axis 0)."""
    y = np.full(out_shape, -np.inf if rule == "max" else 0.0)
    for src, tgt, weight in edges:
        y[tgt] = max(y[tgt], x[src]) if rule == "max" else y[tgt] + weight * x[src]
    if bias is not None:
        y += np.asarray(bias, np.float64).reshape(-1, *[1] * (len(out_shape) - 1))
    return y


def onnx_values(proto, x: np.ndarray) -> dict[str, np.ndarray]:
    """onnxruntime's value of each graph output for one sample ``x`` (ONNX layout, no batch axis)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3  # onnx's shape inference gives ceil_mode windows that start in the end pad
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return {n: v[0] for n, v in zip(names, sess.run(names, {"x": x[None].astype(np.float32)}), strict=True)}


# --- from ONNX index space to our ids, and the implementation's edges -------------------------------

def neuron_id(tensor: Tensor, index: tuple[int, ...]) -> int:
    """Our neuron id of ONNX element ``[0, *index]`` of the value a layer holds.

    ``(c, h, w)`` of a map is our ``(h, w, c)``; a vector index ``(f,)`` into a map tensor is a
    Flatten's feature: ONNX flattens ``(c, h, w)`` row-major, so ``f`` is unravelled in that order.
    """
    if len(index) == 1 and len(tensor.shape) == 3:
        index = tuple(int(i) for i in np.unravel_index(index[0], (tensor.shape[-1], *tensor.shape[:-1])))
    ours = (*index[1:], index[0]) if len(index) > 1 else index
    return tensor.offset + int(np.ravel_multi_index(ours, tensor.shape))


def as_ids(edges: list[RefEdge], kind: str, source: Tensor, target: Tensor) -> set[tuple[int, int, int, str]]:
    """The reference edges as (source id, target id, float32 weight bits, kind), asserting none repeats."""
    rows = {(neuron_id(source, s), neuron_id(target, t), f32_bits(w), kind) for s, t, w in edges}
    assert len(rows) == len(edges), "the reference emits an edge twice"
    return rows


def node_column(graph: ModelGraph, name: str, column: str) -> np.ndarray:
    """One column of a layer's node table, in id order."""
    return pa.concat_tables(list(node_tables(graph.layer(name)))).column(column).to_numpy()


def composed_edges(graph: ModelGraph, name: str) -> tuple[set[tuple[int, int, int, str]], int]:
    """The node's edges from its ONNX input, composed through its ``<name>/pad`` part if it has one;
    and how many edges came from zero cells.

    Where ONNX pads with zeros that a window multiplies (Conv's pads; AveragePool's with
    count_include_pad=1, whose divisor counts them) the implementation makes the pads real: a
    ZeroPadding part whose cells are either an identity copy of one input neuron (weight 1) or a
    zero neuron (no incoming edge, bias 0, linear) feeding a 'valid' layer. An edge from a copy is
    the input's edge with the same weight (1 * w, exact); an edge from a zero cell adds 0 * w and
    has no counterpart in the reference (its windows list the real members only), so it is dropped
    here, after checking that the cell is a constant zero.
    """
    own = layer_edges(graph, name)
    parts = [s for s in graph.layers if s.part_of == name]
    if not parts:
        return own, 0
    (pad,) = parts
    assert pad.type == "ZeroPadding2D" and graph.layer(name).inputs[0].offset == pad.output.offset
    copies: dict[int, int] = {}
    for src, tgt, bits, kind in layer_edges(graph, pad.name):
        assert kind == "identity" and bits == f32_bits(1.0) and tgt not in copies
        copies[tgt] = src
    ids = node_column(graph, pad.name, "id")
    zero = ~np.isin(ids, list(copies))
    assert not node_column(graph, pad.name, "bias")[zero].any()
    assert set(node_column(graph, pad.name, "activation").tolist()) == {"linear"}
    zeros = set(ids[zero].tolist())
    out = {(copies[s], t, w, k) for s, t, w, k in own if s in copies}
    dropped = sum(s in zeros for s, *_ in own)
    assert len(out) + dropped == len(own), "an edge of the node comes from outside its input and its pad part"
    return out, dropped


def diff(got: set, expected: set) -> str:
    return f"missing {sorted(expected - got)[:5]} ({len(expected - got)}), extra {sorted(got - expected)[:5]} ({len(got - expected)})"


# --- part 1: Conv, MaxPool, AveragePool, Flatten + Gemm against the reference ------------------------

CONV_CASES = [  # pads[1] != pads[2] in most cases: [h_begin, w_begin, h_end, w_end] is not misread
    # (C, H, W), M, kernel, pads [h_begin, w_begin, h_end, w_end], strides, dilations, group, a /pad part
    pytest.param((3, 6, 7), 4, (3, 3), [2, 0, 1, 1], (2, 2), (1, 1), 1, True, id="asymmetric-stride2"),
    pytest.param((3, 7, 6), 2, (3, 2), [1, 2, 0, 1], (1, 1), (2, 2), 1, True, id="dilation2"),
    pytest.param((4, 6, 7), 6, (3, 3), [0, 1, 2, 0], (2, 1), (1, 1), 2, True, id="group2"),
    pytest.param((4, 6, 7), 8, (3, 3), [1, 0, 2, 1], (1, 2), (2, 1), 4, True, id="depthwise-mult2"),
    pytest.param((3, 6, 7), 3, (2, 3), [0, 1, 1, 1], (1, 1), (1, 1), 3, False, id="depthwise-keras-same"),
    pytest.param((3, 6, 7), 2, (3, 3), [0, 0, 0, 0], (2, 2), (1, 1), 1, False, id="valid-stride2"),
]


@pytest.mark.parametrize(("x_shape", "m", "kernel", "pads", "strides", "dil", "group", "part"), CONV_CASES)
def test_conv_equals_onnx_reference(x_shape, m, kernel, pads, strides, dil, group, part):
    net = Net(x_shape, seed=m + group)
    w = net.rng.normal(0, 0.5, (m, x_shape[0] // group, *kernel)).astype(np.float32)
    b = net.rng.normal(0, 0.5, m).astype(np.float32)
    y = net.op("Conv", ["x", net.const(w), net.const(b)], name="conv", kernel_shape=list(kernel), pads=pads,
               strides=list(strides), dilations=list(dil), group=group)
    proto = net.model(y)
    edges, out_shape = ref_conv(w, x_shape, pads, strides, dil, group)
    x = net.rng.normal(0, 1, x_shape)
    expected_y = onnx_values(proto, x)[y]
    assert expected_y.shape == out_shape
    np.testing.assert_allclose(ref_eval(edges, out_shape, x, bias=b), expected_y, rtol=1e-5, atol=1e-5)

    graph = walk_onnx(proto)
    spec = graph.layer("conv")
    assert spec.output.shape == (*out_shape[1:], out_shape[0])
    kind = "depthwise" if group == x_shape[0] > 1 else "conv"
    got, dropped = composed_edges(graph, "conv")
    assert ("conv/pad" in {s.name for s in graph.layers}) == part and (dropped > 0) == part
    expected = as_ids(edges, kind, graph.layer("x").output, spec.output)
    assert got == expected, diff(got, expected)
    assert node_column(graph, "conv", "bias").view(np.uint32).tolist() == np.tile(b, out_shape[1] * out_shape[2]).view(np.uint32).tolist()


POOL_CASES = [
    # (C, H, W), kernel, strides, pads [h_begin, w_begin, h_end, w_end], dilations, ceil_mode
    pytest.param((2, 6, 7), (3, 3), (2, 2), [1, 0, 2, 1], (1, 1), 0, id="asymmetric"),
    pytest.param((2, 6, 7), (3, 2), (2, 2), [0, 1, 2, 0], (1, 1), 1, id="asymmetric-ceil"),
    # ceil: the last column window (padded cells 6..8) runs past the end pad (cell 7)
    pytest.param((2, 7, 7), (3, 3), (2, 2), [0, 0, 0, 1], (1, 1), 1, id="ceil-past-the-pads"),
    # ceil: a fifth row window would start in the end pad and is ignored; the last column one is half pad
    pytest.param((2, 7, 6), (2, 2), (2, 2), [1, 1, 1, 1], (1, 1), 1, id="ceil-start-in-pad"),
    pytest.param((2, 6, 7), (2, 3), (1, 2), [1, 1, 0, 2], (2, 1), 0, id="dilated"),
    pytest.param((2, 6, 7), (3, 3), (2, 2), [1, 1, 1, 1], (1, 1), 0, id="symmetric"),
]


@pytest.mark.parametrize(("op", "include"), [("MaxPool", 0), ("AveragePool", 0), ("AveragePool", 1)])
@pytest.mark.parametrize(("x_shape", "kernel", "strides", "pads", "dil", "ceil"), POOL_CASES)
def test_pooling_equals_onnx_reference(op, include, x_shape, kernel, strides, pads, dil, ceil):
    net = Net(x_shape, seed=sum(pads) + ceil, opset=19)  # AveragePool has dilations from opset 19
    extra = {"count_include_pad": include} if op == "AveragePool" else {}
    y = net.op(op, ["x"], name="pool", kernel_shape=list(kernel), strides=list(strides), pads=pads,
               dilations=list(dil), ceil_mode=ceil, **extra)
    proto = net.model(y)
    edges, out_shape = ref_pool(op, x_shape, kernel, strides, pads, dil, ceil, include)
    x = net.rng.normal(0, 1, x_shape)  # signed: a max over pads of 0 would differ
    expected_y = onnx_values(proto, x)[y]
    assert expected_y.shape == out_shape
    rule = "max" if op == "MaxPool" else "sum"
    np.testing.assert_allclose(ref_eval(edges, out_shape, x, rule), expected_y, rtol=1e-5, atol=1e-6)

    graph = walk_onnx(proto)
    spec = graph.layer("pool")
    assert spec.output.shape == (*out_shape[1:], out_shape[0])
    # MaxPool and count_include_pad=0 have edges from real members only (explicit window pads, no
    # part); count_include_pad=1 has a /pad part whose zero cells feed the windows (weight 1/k^2)
    got, dropped = composed_edges(graph, "pool")
    assert (dropped > 0) == bool(include)
    kind = "max_pool" if op == "MaxPool" else "avg_pool"
    expected = as_ids(edges, kind, graph.layer("x").output, spec.output)
    assert got == expected, diff(got, expected)
    weights = {w for _, _, w, _ in got}
    if op == "AveragePool" and not include:  # border windows have fewer real members: the divisor varies
        assert len(weights) > 1
    if op == "AveragePool" and include and pads == [0, 0, 0, 1] and ceil:
        # the last column window has 2 of its 3 columns inside the padded input: 1/6 there, 1/9 elsewhere
        assert weights == {f32_bits(1 / 9), f32_bits(1 / 6)}


def _flatten_gemm_net():
    """x (3, 4, 5) -> Conv 'conv' -> Flatten 'flat' -> Gemm 'fc1' (transB, alpha, beta) -> Gemm 'fc2'."""
    net = Net((3, 4, 5), seed=5)
    w = net.rng.normal(0, 0.5, (2, 3, 3, 3)).astype(np.float32)
    conv = net.op("Conv", ["x", net.const(w), net.rand(2)], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    flat = net.op("Flatten", [conv], name="flat")
    b1 = net.rng.normal(0, 0.5, (6, 40)).astype(np.float32)
    c1 = net.rng.normal(0, 0.5, 6).astype(np.float32)
    fc1 = net.op("Gemm", [flat, net.const(b1), net.const(c1)], name="fc1", alpha=0.7, beta=1.3, transB=1)
    b2 = net.rng.normal(0, 0.5, (6, 3)).astype(np.float32)
    c2 = net.rng.normal(0, 0.5, 3).astype(np.float32)
    fc2 = net.op("Gemm", [fc1, net.const(b2), net.const(c2)], name="fc2")
    return net, (conv, fc1, fc2), (w, b1, c1, b2, c2)


def test_flatten_then_gemm_equals_onnx_reference():
    net, (conv, fc1, fc2), (w, b1, c1, b2, c2) = _flatten_gemm_net()
    proto = net.model(conv, fc1, fc2)
    conv_e, conv_shape = ref_conv(w, (3, 4, 5), [1, 1, 1, 1], (1, 1), (1, 1), 1)
    fc1_e, fc2_e = ref_gemm(b1, 0.7, 1), ref_gemm(b2, 1.0, 0)
    x = net.rng.normal(0, 1, (3, 4, 5))
    values = onnx_values(proto, x)
    beta = float(np.float32(1.3))  # a FLOAT attribute (see ref_gemm)
    assert values[conv].shape == conv_shape
    # the reference's Gemm reads ONNX's flattened features: f over (c, h, w), row-major
    np.testing.assert_allclose(ref_eval(fc1_e, (6,), values[conv].reshape(-1), bias=beta * c1.astype(np.float64)),
                               values[fc1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ref_eval(fc2_e, (3,), values[fc1], bias=c2), values[fc2], rtol=1e-5, atol=1e-5)

    graph = walk_onnx(proto)
    conv_t, fc1_t, fc2_t = (graph.layer(n).output for n in ("conv", "fc1", "fc2"))
    assert graph.layer("flat").output.alias and graph.layer("fc1").inputs[0].offset == conv_t.offset
    assert layer_edges(graph, "conv") == as_ids(conv_e, "conv", graph.layer("x").output, conv_t)
    # Dense edges go from the map's neurons directly: ONNX feature f = (c, h, w) is our (h, w, c)
    got = layer_edges(graph, "fc1")
    expected = as_ids(fc1_e, "dense", conv_t, fc1_t)
    assert got == expected, diff(got, expected)
    assert layer_edges(graph, "fc2") == as_ids(fc2_e, "dense", fc1_t, fc2_t)
    assert node_column(graph, "fc1", "bias").tolist() == (beta * c1.astype(np.float64)).astype(np.float32).tolist()
    assert node_column(graph, "fc2", "bias").tolist() == c2.tolist()
    # the same weights read in Keras's (h, w, c) flatten order are not the graph's
    keras_order = [((cc, hh, ww), t, wt) for (f,), t, wt in fc1_e
                   for hh, ww, cc in [tuple(int(i) for i in np.unravel_index(f, conv_t.shape))]]
    assert got != as_ids(keras_order, "dense", conv_t, fc1_t)


def test_the_comparison_catches_a_wrong_weight():
    """The exact-set comparison fails on one weight one float32 ulp off (the reference guards itself once)."""
    net, (conv, fc1, fc2), (w, *_) = _flatten_gemm_net()
    graph = walk_onnx(net.model(fc2))
    wrong = w.copy()
    wrong[1, 2, 0, 1] = np.nextafter(wrong[1, 2, 0, 1], np.float32(np.inf))
    edges, _ = ref_conv(wrong, (3, 4, 5), [1, 1, 1, 1], (1, 1), (1, 1), 1)
    got = layer_edges(graph, "conv")
    bad = as_ids(edges, "conv", graph.layer("x").output, graph.layer("conv").output)
    assert got != bad
    uses = {(s, t) for s, t, _, _ in got ^ bad}
    # W[1, 2, 0, 1] (kernel row 0 reads row oh - 1, column 1 is the centre) is used at 3 x 5 outputs
    assert len(got - bad) == len(bad - got) == len(uses) == 3 * 5


# --- part 2: the same architecture in Keras and in ONNX ---------------------------------------------

INPUT = (8, 7, 3)  # (h, w, c)


def _keras_model():
    L = keras().layers
    model = sequential(INPUT, [
        L.Conv2D(4, 3, padding="same", name="conv1"),
        L.BatchNormalization(name="bn"),
        L.ReLU(name="relu"),
        L.MaxPooling2D(2, strides=1, padding="same", name="maxpool"),  # pads (0, 1) per axis
        L.Conv2D(5, 3, strides=2, padding="same", name="conv2"),  # rows (0, 1), columns (1, 1)
        L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw"),
        L.Conv2D(6, 2, strides=2, padding="valid", name="conv3"),
        L.AveragePooling2D(2, strides=1, padding="same", name="avgpool"),
        L.Flatten(name="flat"),
        L.Dense(5, name="fc"),
    ], seed=3)
    randomize_batchnorm(model, 3)
    return model


def _same_pads(in_hw, kernel, strides, dil=(1, 1)) -> list[int]:
    """TensorFlow's 'same' pads as ONNX ``pads`` [h_begin, w_begin, h_end, w_end]."""
    begin, end = [], []
    for size, k, s, d in zip(in_hw, kernel, strides, dil, strict=True):
        out, before = tf_padding(size, k, s, d, "same")
        begin.append(before)
        end.append(max((out - 1) * s + (k - 1) * d + 1 - size, 0) - before)
    return begin + end


def keras_to_onnx(model, nudge: str | None = None):
    """The Sequential model written directly as ONNX nodes named after its layers, with its weights.

    Kernels (kh, kw, cin, cout) -> W (cout, cin, kh, kw); depthwise (kh, kw, C, mult) -> W (C * mult,
    1, kh, kw), group C (output channel c * mult + m, as TensorFlow orders them); 'same' -> the pads
    TensorFlow uses; Dense kernel rows permuted: ONNX flattens (c, h, w), Keras (h, w, c).
    ``nudge``: the layer whose first kernel element is moved one float32 ulp (the sanity check).
    """
    h, w, c = INPUT
    net = Net((c, h, w))
    y = "x"
    for layer in model.layers:
        kind, cfg, weights = type(layer).__name__, layer.get_config(), layer.get_weights()
        if layer.name == nudge:
            weights[0] = weights[0].copy()
            weights[0].flat[0] = np.nextafter(weights[0].flat[0], np.float32(np.inf))
        in_hw = tuple(layer.input.shape[1:3])
        if kind in ("Conv2D", "DepthwiseConv2D", "MaxPooling2D", "AveragePooling2D"):
            size = cfg["pool_size"] if "pool_size" in cfg else cfg["kernel_size"]
            strides, dil = tuple(cfg["strides"]), tuple(cfg.get("dilation_rate", (1, 1)))
            pads = _same_pads(in_hw, size, strides, dil) if cfg["padding"] == "same" else [0, 0, 0, 0]
            geo = {"kernel_shape": list(size), "strides": list(strides), "pads": pads}
        if kind == "Conv2D":
            y = net.op("Conv", [y, net.const(weights[0].transpose(3, 2, 0, 1)), net.const(weights[1])], name=layer.name,
                       dilations=list(dil), **geo)
        elif kind == "DepthwiseConv2D":
            kh, kw, ch, mult = weights[0].shape
            wd = weights[0].transpose(2, 3, 0, 1).reshape(ch * mult, 1, kh, kw)
            y = net.op("Conv", [y, net.const(wd), net.const(weights[1])], name=layer.name, group=ch,
                       dilations=list(dil), **geo)
        elif kind == "BatchNormalization":
            y = net.op("BatchNormalization", [y, *map(net.const, weights)], name=layer.name, epsilon=cfg["epsilon"])
        elif kind == "ReLU":
            y = net.op("Relu", [y], name=layer.name)
        elif kind == "MaxPooling2D":
            y = net.op("MaxPool", [y], name=layer.name, **geo)
        elif kind == "AveragePooling2D":
            y = net.op("AveragePool", [y], name=layer.name, count_include_pad=0, **geo)
        elif kind == "Flatten":
            mh, mw, mc = layer.input.shape[1:]
            flat_shape = (mh, mw, mc)
            y = net.op("Flatten", [y], name=layer.name, axis=1)
        elif kind == "Dense":
            # ONNX feature f = (c, h, w) takes Keras's row (h * W + w) * C + c
            rows = [np.ravel_multi_index((hh, ww, cc), flat_shape)
                    for cc, hh, ww in itertools.product(range(flat_shape[2]), range(flat_shape[0]), range(flat_shape[1]))]
            y = net.op("Gemm", [y, net.const(weights[0][rows]), net.const(weights[1])], name=layer.name)
        else:
            raise AssertionError(f"no ONNX writing of {kind}")
    return net.model(y)


@pytest.fixture(scope="module")
def pair():
    model = _keras_model()
    proto = keras_to_onnx(model)
    return model, walk(model), proto, load_onnx(proto)


def test_keras_and_onnx_give_the_same_graph(pair):
    model, kgraph, _, omodel = pair
    ograph = omodel.walked.graph
    assert kgraph.total_neurons == ograph.total_neurons
    assert len(kgraph.layers) == len(ograph.layers) == len(model.layers) + 1  # no parts: every pad is Keras's
    same_type = {"ReLU": "Activation"}  # Keras's ReLU layer; ONNX's Relu is an Activation layer
    for k, o in zip(kgraph.layers, ograph.layers, strict=True):
        where = f"{k.name} / {o.name}"
        assert same_type.get(k.type, k.type) == o.type, where
        assert (k.output.shape, k.output.offset, k.output.alias) == (o.output.shape, o.output.offset, o.output.alias), where
        assert [t.offset for t in k.inputs] == [t.offset for t in o.inputs], where
        if k.makes_neurons:
            for column in ("id", "h", "w", "c", "activation"):
                assert node_column(kgraph, k.name, column).tolist() == node_column(ograph, o.name, column).tolist(), where
            np.testing.assert_array_equal(node_column(kgraph, k.name, "bias").view(np.uint32),
                                          node_column(ograph, o.name, "bias").view(np.uint32), err_msg=where)
        kedges, oedges = layer_edges(kgraph, k.name), layer_edges(ograph, o.name)
        # every weight is a moved float32 (1/n for pooling, gamma/sqrt(var+eps) from the same
        # float32 inputs for BN), so the sets are equal bit for bit
        assert kedges == oedges, f"{where}: {diff(oedges, kedges)}"
        assert bool(kedges) == (k.type not in ("InputLayer", "Flatten")), where
    kinds = {kind for s in kgraph.layers for *_, kind in layer_edges(kgraph, s.name)}
    assert kinds == {"conv", "batchnorm", "identity", "max_pool", "depthwise", "avg_pool", "dense"}


def test_keras_and_onnx_replay_to_the_same_outputs(pair):
    model, kgraph, proto, omodel = pair
    ograph = omodel.walked.graph
    kres, ores = verify(model, kgraph, samples=2), verify_onnx(omodel, ograph, samples=2)
    assert kres.ok and kres.worst < TOL, kres.errors
    assert ores.ok and ores.worst < TOL, ores.errors
    assert set(ores.errors) == set(kres.errors) == {s.name for s in kgraph.layers if s.makes_neurons} - {kgraph.layers[0].name}
    x = np.random.default_rng(1).normal(0, 1, (2, *INPUT))
    kvals = dict(replay(graph_layers(kgraph), {0: x}, kgraph.total_neurons))
    ovals = dict(replay(graph_layers(ograph), {0: x}, ograph.total_neurons))
    assert list(kvals) == list(ovals)
    for name in kvals:
        np.testing.assert_allclose(kvals[name], ovals[name], rtol=1e-12, atol=1e-12, err_msg=name)
    # and the two frameworks agree with each other on the model's output
    keras_out = np.asarray(model(x.astype(np.float32), training=False))
    onnx_out = np.concatenate([onnx_values(proto, np.moveaxis(s, -1, 0))[proto.graph.output[0].name][None] for s in x])
    scale = float(np.abs(keras_out).max())
    assert float(np.abs(keras_out - onnx_out).max()) / scale < TOL
    assert float(np.abs(kvals["fc"] - keras_out).max()) / scale < TOL


def test_keras_onnx_comparison_catches_a_wrong_weight(pair):
    """One kernel element one ulp off in the ONNX copy: that layer's edge sets differ, the others not."""
    model, kgraph, _, _ = pair
    ograph = walk_onnx(keras_to_onnx(model, nudge="conv2"))
    differs = {k.name for k, o in zip(kgraph.layers, ograph.layers, strict=True)
               if layer_edges(kgraph, k.name) != layer_edges(ograph, o.name)}
    assert differs == {"conv2"}
    kedges, oedges = layer_edges(kgraph, "conv2"), layer_edges(ograph, "conv2")
    # kernel[0, 0, 0, 0] is used where its tap is inside the input: every row (top pad 0), columns
    # 1..3 of 4 (left pad 1), output channel 0; the same (source, target) pairs, other weights
    assert len(kedges - oedges) == len(oedges - kedges) == 4 * 3
    assert {(s, t) for s, t, _, _ in kedges - oedges} == {(s, t) for s, t, _, _ in oedges - kedges}
