"""More ONNX ops, each over a grid of attributes, replayed over the edges against onnxruntime:
ConvTranspose, Transpose / Reshape / Squeeze / Unsqueeze, Pad, PRelu, HardSigmoid, HardSwish, Gelu,
Erf, pooling with dilations and pads Keras has no geometry for, broadcasting merges (squeeze and
excitation, SiLU) and nearest Resize / Upsample."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper

from pipeline.errors import UnsupportedLayerError
from pipeline.onnx import load_onnx, verify_onnx, walk_onnx
from tests.test_onnx import Net, check, conv


def _types(graph) -> dict[str, str]:
    return {s.name: s.type for s in graph.layers}


# --- pooling: explicit pads, dilations, signed inputs, count_include_pad, ceil_mode ----------------

_POOL_GRID = [
    (k, s, p, d, ceil)
    for k, s, p, d, ceil in itertools.product([2, 3], [1, 2], [(0, 0, 0, 0), (1, 1, 1, 1), (1, 0, 0, 1), (0, 1, 1, 0)],
                                              [1, 2], [0, 1])
    if max(p) < k
]


@pytest.mark.parametrize(("k", "s", "pads", "d", "ceil"), _POOL_GRID)
def test_max_pool_grid_on_signed_input(k, s, pads, d, ceil):
    net = Net((2, 9, 8), seed=k * 7 + s)
    y = net.op("MaxPool", ["x"], name="pool", kernel_shape=[k, k], strides=[s, s], pads=list(pads),
               dilations=[d, d], ceil_mode=ceil)
    graph, result = check(net.model(y))
    assert set(result.errors) == {"pool"}
    assert _types(graph) == {"x": "InputLayer", "pool": "MaxPooling2D"}  # no zero-padding step


@pytest.mark.parametrize(("k", "s", "pads", "d", "ceil"), _POOL_GRID)
@pytest.mark.parametrize("include", [0, 1])
def test_average_pool_grid(k, s, pads, d, ceil, include):
    net = Net((2, 8, 9), seed=k + 3 * s, opset=19)  # AveragePool has dilations from opset 19
    y = net.op("AveragePool", ["x"], name="avg", kernel_shape=[k, k], strides=[s, s], pads=list(pads),
               dilations=[d, d], ceil_mode=ceil, count_include_pad=include)
    graph, result = check(net.model(y))
    assert set(result.errors) == {"avg"}
    # counting the pads in the divisor makes them real zeros (a part); excluding them needs none
    assert ("avg/pad" in _types(graph)) == bool(include and any(pads))


def test_pooling_1d_and_3d_explicit_pads():
    net = Net((2, 9))
    y = net.op("MaxPool", ["x"], name="p1", kernel_shape=[3], strides=[2], pads=[2, 0], ceil_mode=1)
    y = net.op("AveragePool", [y], name="a1", kernel_shape=[2], strides=[1], pads=[0, 1])
    check(net.model(y))
    net = Net((2, 4, 5, 5))
    y = net.op("MaxPool", ["x"], name="p3", kernel_shape=[2, 3, 2], strides=[1, 2, 2], pads=[1, 0, 1, 0, 2, 1],
               dilations=[2, 1, 1])
    y = net.op("AveragePool", [y], name="a3", kernel_shape=[2, 2, 2], pads=[1, 1, 0, 0, 1, 1])
    graph, _ = check(net.model(y))
    assert isinstance(graph.layer("p3").config["padding"], list) and graph.layer("p3").config["dilation_rate"] == [2, 1, 1]


# --- ConvTranspose --------------------------------------------------------------------------------

_CT_GRID = [
    (k, s, d, p, op)
    for k, s, d, p, op in itertools.product([1, 2, 3, 4], [1, 2, 3], [1, 2], [(0, 0, 0, 0), (1, 1, 1, 1), (2, 0, 1, 2)],
                                            [(0, 0), (1, 0), (1, 2)])
    if max(op) < s  # onnxruntime wants output_padding below the stride
    and min(s * (i - 1) + o + (k - 1) * d + 1 - p[j] - p[j + 2]
            for j, (i, o) in enumerate(zip((4, 5), op, strict=True))) >= 1  # pads leave an output
]


@pytest.mark.parametrize(("k", "s", "d", "pads", "opad"), _CT_GRID)
def test_conv_transpose_grid(k, s, d, pads, opad):
    net = Net((3, 4, 5), seed=k * 11 + s)
    y = net.op("ConvTranspose", ["x", net.rand(3, 2, k, k), net.rand(2)], name="up", kernel_shape=[k, k],
               strides=[s, s], dilations=[d, d], pads=list(pads), output_padding=list(opad))
    graph, result = check(net.model(y))
    assert set(result.errors) == {"up"}
    types = _types(graph)
    assert types["up"] in ("Conv2DTranspose", "Cropping2D")
    assert (types["up"] == "Cropping2D") == ("up/full" in types)


@pytest.mark.parametrize("auto", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_conv_transpose_auto_pad_output_shape_1d_3d_and_no_bias(auto):
    net = Net((2, 5, 4))
    y = net.op("ConvTranspose", ["x", net.rand(2, 3, 3, 2)], name="auto", kernel_shape=[3, 2], strides=[2, 2],
               auto_pad=auto)
    y = net.op("ConvTranspose", [y, net.rand(3, 2, 3, 3), net.rand(2)], name="shaped", kernel_shape=[3, 3],
               strides=[2, 1], output_shape=[21, 9] if auto == "VALID" else [19, 8])
    check(net.model(y))
    net = Net((2, 7))
    y = net.op("ConvTranspose", ["x", net.rand(2, 3, 4), net.rand(3)], name="t1", kernel_shape=[4], strides=[2],
               pads=[1, 2])
    net2 = Net((2, 3, 3, 2))
    z = net2.op("ConvTranspose", ["x", net2.rand(2, 2, 2, 2, 2)], name="t3", kernel_shape=[2, 2, 2], strides=[2, 1, 2],
                pads=[1, 0, 0, 0, 1, 1])
    check(net.model(y))
    check(net2.model(z))


def test_conv_transpose_keras_geometries_need_no_crop():
    net = Net((3, 5, 5))
    y = net.op("ConvTranspose", ["x", net.rand(3, 4, 4, 4), net.rand(4)], name="same", kernel_shape=[4, 4],
               strides=[2, 2], pads=[1, 1, 1, 1])  # PyTorch's k=4, s=2, p=1 doubling
    y = net.op("ConvTranspose", [y, net.rand(4, 2, 3, 3)], name="valid", kernel_shape=[3, 3], strides=[2, 2],
               output_padding=[1, 1])
    graph, _ = check(net.model(y))
    assert graph.layer("same").config["padding"] == "same" and graph.layer("valid").config["padding"] == "valid"
    assert graph.layer("valid").output.shape == (22, 22, 2)


def test_conv_transpose_groups_are_refused():
    net = Net((4, 3, 3))
    y = net.op("ConvTranspose", ["x", net.rand(4, 1, 2, 2)], name="grouped", kernel_shape=[2, 2], group=4)
    with pytest.raises(UnsupportedLayerError, match=r"'grouped'.*ConvTranspose.*group 4.*docs/onnx.md"):
        walk_onnx(net.model(y))


# --- Transpose, Reshape, Squeeze, Unsqueeze -------------------------------------------------------

def test_transpose_to_nhwc_then_flatten_is_an_alias():
    net = Net((3, 4, 5))
    y = conv(net, "x", 3, 2, pads=[1, 1, 1, 1], name="conv")
    t = net.op("Transpose", [y], name="nhwc", perm=[0, 2, 3, 1])
    f = net.op("Reshape", [t, net.ints([1, -1])], name="flat")
    out = net.op("Gemm", [f, net.rand(40, 3), net.rand(3)], name="fc", transB=0)
    graph, result = check(net.model(out))
    flat = graph.layer("flat")
    assert flat.output.alias and flat.output.offset == graph.layer("conv").output.offset
    assert "nhwc" not in _types(graph)  # (h, w, c) is already our order: no neuron, no edge
    assert set(result.errors) == {"conv", "fc"}


@pytest.mark.parametrize("perm", [p for p in itertools.permutations([1, 2, 3]) if p != (1, 2, 3)])
def test_transpose_before_a_conv_is_a_permute(perm):
    net = Net((2, 4, 5), seed=sum(perm))
    t = net.op("Transpose", ["x"], name="swap", perm=[0, *perm])
    shape = [(2, 4, 5)[p - 1] for p in perm]
    y = conv(net, t, shape[0], 3, k=2, name="conv")
    back = net.op("Transpose", [y], name="back", perm=[0, *np.argsort(perm) + 1])
    graph, result = check(net.model(net.op("Relu", [back], name="relu")))
    assert graph.layer("swap").type == "Permute"
    assert {"swap", "conv", "relu"} <= set(result.errors)


def test_tf_style_nhwc_input_transposed_twice_and_flattened():
    net = Net((6, 5, 2))  # an NHWC input, as tf2onnx exports
    t = net.op("Transpose", ["x"], name="to_nchw", perm=[0, 3, 1, 2])
    y = net.op("Relu", [conv(net, t, 2, 3, pads=[1, 1, 1, 1], name="conv")], name="relu")
    y = net.op("Transpose", [y], name="to_nhwc", perm=[0, 2, 3, 1])
    y = net.op("Flatten", [y], name="flat")
    graph, _ = check(net.model(net.op("Gemm", [y, net.rand(90, 4)], name="fc")))
    assert graph.layer("to_nchw").type == "Permute" and "to_nhwc" not in _types(graph)


def test_reshape_flat_to_map_squeeze_excitation():
    """Gemm -> Reshape (N, C, 1, 1) -> Mul broadcast over (N, C, H, W), and Unsqueeze / Squeeze."""
    net = Net((4, 5, 5))
    x = conv(net, "x", 4, 4, pads=[1, 1, 1, 1], name="conv")
    g = net.op("Flatten", [net.op("GlobalAveragePool", [x], name="gap")], name="squeeze")
    g = net.op("Relu", [net.op("Gemm", [g, net.rand(2, 4), net.rand(2)], name="fc1", transB=1)], name="r")
    g = net.op("Sigmoid", [net.op("Gemm", [g, net.rand(4, 2), net.rand(4)], name="fc2", transB=1)], name="gate")
    g = net.op("Reshape", [g, net.ints([-1, 4, 1, 1])], name="excite")
    y = net.op("Mul", [x, g], name="scale")
    u = net.op("Unsqueeze", [net.op("Flatten", [net.op("GlobalMaxPool", [y], name="gmp")], name="f2"),
                             net.ints([2, 3])], name="unsq")
    s = net.op("Add", [y, u], name="shift")
    sq = net.op("Squeeze", [net.op("GlobalMaxPool", [s], name="gmp2"), net.ints([3, -2])], name="sq")
    sq = net.op("Gemm", [sq, net.rand(4, 3)], name="fc3")
    graph, result = check(net.model(sq))
    assert graph.layer("sq").output.shape == (4,)
    assert graph.layer("excite").output.alias and graph.layer("excite").output.shape == (1, 1, 4)
    assert graph.layer("scale").type == "Multiply" and graph.layer("unsq").output.alias
    assert {"scale", "shift", "gate"} <= set(result.errors)


def test_reshape_spatial_merge_and_unflatten_are_aliases():
    net = Net((3, 4, 6))
    y = conv(net, "x", 3, 2, pads=[1, 1, 1, 1], name="conv")
    seq = net.op("Reshape", [y, net.ints([0, 0, -1])], name="merge")  # (N, C, H*W): our (h*w, c)
    z = net.op("Relu", [seq], name="relu1d")
    back = net.op("Reshape", [z, net.ints([0, 2, 4, 6])], name="split")
    f = net.op("Flatten", [back], name="flat")
    m = net.op("Reshape", [f, net.ints([1, 2, 4, 6])], name="unflat")  # undoes the Flatten's order
    graph, result = check(net.model(net.op("Sigmoid", [m], name="sig")))
    for layer in ("merge", "split", "flat", "unflat"):
        assert graph.layer(layer).output.alias
    assert graph.layer("relu1d").output.shape == (24, 2)
    assert {"relu1d", "sig"} <= set(result.errors)


def test_channel_shuffle_reshape_is_refused():
    net = Net((4, 3, 3))
    y = net.op("Reshape", ["x", net.ints([1, 2, 2, 3, 3])], name="groups")
    y = net.op("Transpose", [y], name="shuffle", perm=[0, 2, 1, 3, 4])
    y = net.op("Reshape", [y, net.ints([1, 4, 3, 3])], name="merged")
    y = conv(net, y, 4, 2, k=1, name="conv")
    with pytest.raises(UnsupportedLayerError, match=r"'merged'.*neither our row-major.*docs/onnx.md"):
        walk_onnx(net.model(y))


def test_reshape_that_moves_the_batch_is_refused():
    net = Net((2, 1, 1))
    y = net.op("Squeeze", ["x"], name="every")  # would drop a batch of 1 too
    with pytest.raises(UnsupportedLayerError, match=r"'every'.*Squeeze.*axes must be given"):
        walk_onnx(net.model(y))
    net = Net((2, 3, 3))
    y = net.op("Reshape", ["x", net.ints([-1, 9])], name="batchy")
    with pytest.raises(UnsupportedLayerError, match=r"'batchy'.*Reshape.*batch axis.*docs/onnx.md"):
        walk_onnx(net.model(y))
    net = Net((2, 3, 3))
    y = net.op("Transpose", ["x"], name="tb", perm=[1, 0, 2, 3])
    with pytest.raises(UnsupportedLayerError, match=r"'tb'.*Transpose.*batch axis first"):
        walk_onnx(net.model(y))


# --- Pad ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pads", [(1, 2, 0, 1), (0, 0, 3, 0), (-1, 0, -2, -1), (2, -1, -1, 1), (0, 0, 0, 0)])
def test_pad_grid(pads):
    net = Net((2, 5, 6))
    b, c, d, e = pads
    y = net.op("Pad", ["x", net.ints([0, 0, b, c, 0, 0, d, e])], name="pad")
    graph, result = check(net.model(net.op("Relu", [y], name="relu")))
    kind = graph.layer("pad").type
    if min(pads) >= 0:
        assert kind == "ZeroPadding2D"
    else:
        assert kind == "Cropping2D" and (("pad/pad" in _types(graph)) == (max(pads) > 0))
    assert graph.layer("pad").output.shape == (5 + b + d, 6 + c + e, 2)


def test_pad_1d_3d_axes_and_refusals():
    net = Net((2, 7))
    y = net.op("Pad", ["x", net.ints([0, 0, 2, 0, 0, 1]), net.const(np.float32(0.0))], name="p1")
    check(net.model(y))
    net = Net((1, 3, 3, 3), opset=18)  # Pad takes axes from opset 18
    y = net.op("Pad", ["x", net.ints([1, 0, 2, 1]), "", net.ints([2, -1])], name="p3")
    graph, _ = check(net.model(y))
    assert graph.layer("p3").output.shape == (6, 3, 4, 1)
    for kw, inputs, why in [({"mode": "reflect"}, [], "mode 'reflect'"),
                            ({}, ["value"], "constant_value"), ({}, ["channel"], "channel axis")]:
        net = Net((2, 4, 4))
        pads = [0, 1, 1, 1, 0, 0, 1, 1] if "channel" in inputs else [0, 0, 1, 1, 0, 0, 1, 1]
        ins = ["x", net.ints(pads)] + ([net.const(np.float32(1.5))] if "value" in inputs else [])
        y = net.op("Pad", ins, name="bad", **kw)
        with pytest.raises(UnsupportedLayerError, match=f"'bad'.*Pad.*{why}.*docs/onnx.md"):
            walk_onnx(net.model(y))


# --- activations: PRelu, HardSigmoid, HardSwish, Gelu, Erf ----------------------------------------

@pytest.mark.parametrize("slope", ["scalar", "channel", "element", "batch1"])
def test_prelu_slopes(slope):
    net = Net((3, 4, 4))
    shape = {"scalar": (1,), "channel": (3, 1, 1), "element": (3, 4, 4), "batch1": (1, 3, 1, 1)}[slope]
    y = net.op("PRelu", ["x", net.const(net.rng.uniform(-0.5, 0.9, shape))], name="prelu")
    f = net.op("Flatten", [y], name="flat")
    z = net.op("PRelu", [f, net.const(net.rng.uniform(0, 0.5, (48,)))], name="prelu_flat")  # through the perm
    graph, result = check(net.model(z))
    assert {"prelu", "prelu_flat"} <= set(result.errors)
    assert ("prelu/negative" in _types(graph)) == (slope != "scalar")


@pytest.mark.parametrize(("alpha", "beta"), [(None, None), (1 / 6, 0.5), (0.3, -0.1), (-0.5, 0.7)])
def test_hard_sigmoid_attributes_and_hard_swish(alpha, beta):
    net = Net((2, 5, 5))
    kw = {} if alpha is None else {"alpha": alpha, "beta": beta}
    x = net.op("Mul", ["x", net.const(np.float32(4.0))], name="wide")  # reach both saturations
    y = net.op("HardSigmoid", [x], name="hsig", **kw)
    z = net.op("HardSwish", [x], name="hswish")
    graph, result = check(net.model(net.op("Add", [y, z], name="sum")))
    expect = (0.2, 0.5) if alpha is None else (alpha, beta)
    got = graph.layer("hsig").config["activation"]
    assert got.startswith("hard_sigmoid(") and np.allclose([float(v.split("=")[1]) for v in got[13:-1].split(",")],
                                                            expect)
    assert graph.layer("hswish").config["activation"] == "hard_swish"
    assert {"hsig", "hswish", "sum"} <= set(result.errors)


def test_gelu_erf_pattern_and_silu():
    net = Net((3, 4, 4), opset=20)
    x = conv(net, "x", 3, 3, pads=[1, 1, 1, 1], name="conv")
    g = net.op("Gelu", [x], name="gelu")
    t = net.op("Gelu", [x], name="gelu_tanh", approximate="tanh")
    # the Erf pattern an older exporter writes: 0.5 * x * (1 + erf(x / sqrt 2)), as it stands
    e = net.op("Erf", [net.op("Div", [x, net.const(np.float32(np.sqrt(2.0)))], name="div")], name="erf")
    e = net.op("Mul", [net.op("Mul", [x, net.op("Add", [e, net.const(np.float32(1.0))], name="one")], name="xe"),
                       net.const(np.float32(0.5))], name="half")
    silu = net.op("Mul", [x, net.op("Sigmoid", [x], name="sig")], name="silu")
    out = net.op("Concat", [g, t, e, silu], name="cat", axis=1)
    graph, result = check(net.model(out))
    assert graph.layer("gelu").config["activation"] == "gelu"
    assert graph.layer("gelu_tanh").config["activation"] == "gelu_tanh"
    assert graph.layer("silu").type == "Multiply"
    assert {"gelu", "gelu_tanh", "erf", "half", "silu"} <= set(result.errors)


def test_mobilenet_v3_style_block():
    """Conv -> HardSwish -> depthwise -> SE (GlobalAveragePool, 1x1 convs, HardSigmoid, Mul) -> residual Add."""
    net = Net((4, 6, 6))
    x = net.op("HardSwish", [conv(net, "x", 4, 8, k=1, name="expand")], name="hs")
    x = conv(net, x, 8, 8, group=8, pads=[1, 1, 1, 1], name="dw")
    s = net.op("GlobalAveragePool", [x], name="gap")
    s = net.op("Relu", [conv(net, s, 8, 2, k=1, name="se1")], name="se_relu")
    s = net.op("HardSigmoid", [conv(net, s, 2, 8, k=1, name="se2")], name="se_gate", alpha=1 / 6, beta=0.5)
    x = net.op("Mul", [s, x], name="se_scale")  # (N, C, 1, 1) * (N, C, H, W)
    y = net.op("Add", [conv(net, x, 8, 4, k=1, name="project"), "x"], name="residual")
    graph, result = check(net.model(y))
    assert graph.layer("se_scale").output.shape == (6, 6, 8)
    assert {"se_scale", "residual", "se_gate"} <= set(result.errors)


# --- Resize / Upsample ----------------------------------------------------------------------------

_RESIZE_OK = [("half_pixel", "round_prefer_floor"), ("asymmetric", "floor"), ("pytorch_half_pixel", "round_prefer_ceil"),
              ("tf_half_pixel_for_nn", "floor"), ("half_pixel", "round_prefer_ceil"), ("asymmetric", "round_prefer_floor")]


@pytest.mark.parametrize(("coord", "nearest"), _RESIZE_OK)
@pytest.mark.parametrize("scale", [(1, 2), (2, 2), (3, 2)])
def test_resize_nearest_integer_scales(coord, nearest, scale):
    net = Net((2, 3, 4))
    scales = net.const(np.array([1, 1, *scale], np.float32))
    y = net.op("Resize", ["x", "", scales], name="up", mode="nearest", coordinate_transformation_mode=coord,
               nearest_mode=nearest)
    if coord == "asymmetric" and nearest == "round_prefer_floor" and max(scale) > 2:
        with pytest.raises(UnsupportedLayerError, match="'up'.*Resize.*does not repeat"):
            walk_onnx(net.model(y))
        return
    graph, result = check(net.model(y))
    assert graph.layer("up").type == "UpSampling2D" and graph.layer("up").config["size"] == list(scale)


def test_resize_sizes_upsample_and_refusals():
    net = Net((2, 3, 3))
    y = net.op("Resize", ["x", "", "", net.ints([1, 2, 6, 9])], name="sized", mode="nearest")
    check(net.model(y))
    net = Net((2, 5), opset=9)
    y = net.op("Upsample", ["x", net.const(np.array([1, 1, 3], np.float32))], name="old", mode="nearest")
    graph, _ = check(net.model(y))
    assert graph.layer("old").type == "UpSampling1D"
    net = Net((2, 3, 4), opset=10)  # Resize 10: X and scales, no coordinate modes
    check(net.model(net.op("Resize", ["x", net.const(np.array([1, 1, 2, 3], np.float32))], name="r10", mode="nearest")))
    for kw, scales, why in [({"mode": "linear"}, [1, 1, 2, 2], "mode 'linear'"),
                            ({"mode": "nearest"}, [1, 1, 1.5, 2], "integer scales"),
                            ({"mode": "nearest"}, [1, 2, 2, 2], "integer scales")]:
        net = Net((2, 4, 4))
        y = net.op("Resize", ["x", "", net.const(np.array(scales, np.float32))], name="bad", **kw)
        with pytest.raises(UnsupportedLayerError, match=f"'bad'.*Resize.*{why}.*docs/onnx.md"):
            walk_onnx(net.model(y))



# --- constant folding: the shape arithmetic exporters write ---------------------------------------

def test_shape_arithmetic_and_shared_weights_are_folded():
    """Shape -> Gather -> Concat -> Reshape (torch's x.view(x.size(0), -1)), ConstantOfShape -> Pad (F.pad),
    and a weight shared through Identity: computed on constants, then converted as constants."""
    net = Net((2, 4, 4))
    shape = net.op("Shape", ["x"], name="shape")
    batch = net.op("Gather", [shape, net.ints(0)], name="gather", axis=0)
    dims = net.op("Concat", [net.op("Unsqueeze", [batch, net.ints([0])], name="unsq"), net.ints([-1])], name="dims",
                  axis=0)
    zeros = net.op("ConstantOfShape", [net.ints([4])], name="zeros",
                   value=helper.make_tensor("v", TensorProto.INT64, [1], [0]))
    pads = net.op("Concat", [zeros, net.ints([0, 0, 1, 2])], name="pads", axis=0)  # (0, 0, 0, 0, 0, 0, 1, 2)
    y = net.op("Pad", ["x", pads], name="pad")
    w = net.op("Identity", [net.rand(3, 2, 1, 1)], name="shared")
    y = net.op("Conv", [y, w], name="conv", kernel_shape=[1, 1])
    flat = net.op("Reshape", [y, dims], name="view")
    graph, result = check(net.model(net.op("Gemm", [flat, net.rand(3 * 5 * 6, 2)], name="fc")))
    assert [s.name for s in graph.layers] == ["x", "pad", "conv", "view", "fc"]
    assert graph.layer("pad").output.shape == (5, 6, 2)
    assert {"pad", "conv", "fc"} <= set(result.errors)


@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_mean_and_max_over_the_spatial_axes(keepdims):
    net = Net((3, 4, 5), opset=17)
    y = conv(net, "x", 3, 4, pads=[1, 1, 1, 1], name="conv")
    m = net.op("ReduceMean", [y], name="mean", axes=[-1, 2], keepdims=keepdims)
    net18 = Net((3, 4, 5), opset=18)  # axes as an input
    z = net18.op("ReduceMax", ["x", net18.ints([2, 3])], name="max", keepdims=keepdims)
    graph, result = check(net.model(m))
    assert graph.layer("mean").type == "GlobalAveragePooling2D" and "mean" in result.errors
    assert graph.layer("mean").output.shape == ((1, 1, 4) if keepdims else (4,))
    graph, _ = check(net18.model(z))
    assert graph.layer("max").type == "GlobalMaxPooling2D"
    net = Net((3, 4, 5))
    y = net.op("ReduceMean", ["x"], name="channels", axes=[1])
    with pytest.raises(UnsupportedLayerError, match=r"'channels'.*ReduceMean.*all the spatial axes"):
        walk_onnx(net.model(y))


# --- features last: Transpose NCHW -> NHWC, then LayerNormalization and MatMul on the last axis ----

def test_convnext_style_block_features_last():
    """Depthwise conv -> Transpose NHWC -> LayerNormalization -> MatMul + Add -> Gelu -> MatMul + Add ->
    Transpose NCHW -> layer scale -> residual Add: the NHWC tensor is our (h, w, c) tensor, no neurons
    spent on either Transpose."""
    net = Net((4, 5, 5), opset=20)
    x = conv(net, "x", 4, 4, k=3, group=4, pads=[1, 1, 1, 1], name="dw")
    t = net.op("Transpose", [x], name="nhwc", perm=[0, 2, 3, 1])
    n = net.op("LayerNormalization", [t, net.const(net.rng.uniform(0.5, 2, 4)), net.rand(4)], name="ln", axis=-1,
               epsilon=1e-6)
    h = net.op("Add", [net.op("MatMul", [n, net.rand(4, 8)], name="mm1"), net.rand(8)], name="pw1")
    h = net.op("Gelu", [h], name="gelu")
    h = net.op("Add", [net.op("MatMul", [h, net.rand(8, 4)], name="mm2"), net.rand(4)], name="pw2")
    h = net.op("Softmax", [h], name="soft", axis=-1)
    h = net.op("Concat", [h, net.op("Relu", [h], name="relu")], name="cat", axis=3)
    h = net.op("PRelu", [h, net.const(net.rng.uniform(0, 0.5, (8,)))], name="prelu")
    b = net.op("Transpose", [h], name="nchw", perm=[0, 3, 1, 2])
    b = net.op("Mul", [b, net.const(net.rng.uniform(0.1, 1, (8, 1, 1)))], name="scale")
    y = net.op("Add", [b, conv(net, x, 4, 8, k=1, name="proj")], name="residual")
    graph, result = check(net.model(y))
    types = _types(graph)
    assert "nhwc" in types and graph.layer("nhwc").output.alias and graph.layer("nhwc").output.shape == (5, 5, 4)
    assert types["ln"] == "LayerNormalization" and types["pw1"] == "Dense" and "mm1" not in types
    assert graph.layer("pw1").output.shape == (5, 5, 8) and graph.layer("nchw").output.alias
    assert {"ln", "pw1", "gelu", "pw2", "soft", "cat", "prelu", "scale", "residual"} <= set(result.errors)


def test_layernorm_on_vectors_and_refusals():
    net = Net((6,), opset=17)
    y = net.op("LayerNormalization", ["x", net.rand(6)], name="ln", axis=1)
    check(net.model(y))
    net = Net((2, 3, 3), opset=17)
    y = net.op("LayerNormalization", ["x", net.rand(2, 3, 3)], name="whole", axis=1)  # over (C, H, W) together
    with pytest.raises(UnsupportedLayerError, match=r"'whole'.*LayerNormalization.*only the features"):
        walk_onnx(net.model(y))
    net = Net((2, 3, 3))
    t = net.op("Transpose", ["x"], name="nhwc", perm=[0, 2, 3, 1])
    y = net.op("MatMul", [t, net.rand(2, 4)], name="mm")
    y = net.op("BatchNormalization", [y, *[net.const(np.ones(3, np.float32))] * 4], name="bn")
    with pytest.raises(UnsupportedLayerError, match=r"'bn'.*BatchNormalization.*features last"):
        walk_onnx(net.model(y))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "convnext_tiny"])
def test_torchvision_exports_replay_exactly(arch, tmp_path):
    """Real exporter output (torch.onnx, TorchScript exporter): squeeze and excitation with HardSigmoid
    and HardSwish; ConvNeXt's NHWC blocks (Transpose, LayerNormalization, MatMul, the Erf GELU)."""
    import torch  # make test-full installs the torch extra: a missing one fails, never skips
    from torchvision import models
    torch.manual_seed(0)
    net = getattr(models, arch)(weights=None).eval()
    path = tmp_path / f"{arch}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.randn(1, 3, 32, 32), str(path), dynamo=False, opset_version=17)
    model = load_onnx(path)
    result = verify_onnx(model, model.walked.graph, samples=1)
    assert result.ok and len(result.errors) > 50, result.errors


@pytest.mark.parametrize(("starts", "ends", "axes"), [([1], [4], [2]), ([0, -3], [-1, 100], [-2, 3]),
                                                      ([0, 0, 1], [2, 99, 5], [1, 0, 3])])
def test_slice_of_spatial_axes_is_a_cropping(starts, ends, axes):
    net = Net((2, 5, 6))
    y = net.op("Slice", ["x", net.ints(starts), net.ints(ends), net.ints(axes)], name="crop")
    graph, result = check(net.model(net.op("Relu", [y], name="relu")))
    assert graph.layer("crop").type == "Cropping2D" and {"crop", "relu"} <= set(result.errors)


def test_slice_of_channels_or_with_steps_is_refused():
    for starts, ends, axes, steps in [([0], [1], [1], [1]), ([0], [4], [2], [2])]:
        net = Net((2, 5, 6))
        y = net.op("Slice", ["x", net.ints(starts), net.ints(ends), net.ints(axes), net.ints(steps)], name="bad")
        with pytest.raises(UnsupportedLayerError, match=r"'bad'.*Slice.*only spatial axes with step 1"):
            walk_onnx(net.model(y))
