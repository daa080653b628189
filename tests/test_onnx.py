"""The ONNX front end: models built with onnx.helper (seeded weights), walked into the neuron graph
and replayed over its edges against onnxruntime, node by node (every intermediate value)."""

from __future__ import annotations

import numpy as np
import onnx  # the test extra has onnx and onnxruntime: a missing one fails, never skips
import onnxruntime  # noqa: F401
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.errors import ModelError, UnsupportedLayerError, UsageError
from pipeline.extract import extract
from pipeline.onnx import SUPPORTED_OPS, load_onnx, verify_onnx, walk_onnx
from pipeline.plan import plan
from pipeline.spec import ModelSpec
from tests.helpers import TOL


class Net:
    """A small ONNX graph under construction: nodes, seeded initializers, one float input."""

    def __init__(self, shape: tuple[int, ...], seed: int = 0, opset: int = 17, batch: int | str = "N"):
        self.rng, self.batch = np.random.default_rng(seed), batch
        self.shape, self.opset = shape, opset
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def const(self, arr: np.ndarray) -> str:
        self.n += 1
        name = f"c{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    def ints(self, values) -> str:
        self.n += 1
        name = f"i{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
        return name

    def rand(self, *shape: int) -> str:
        return self.const(self.rng.normal(0, 0.5, shape))

    def op(self, op: str, inputs: list[str], name: str | None = None, **kw) -> str:
        self.n += 1
        out = f"{(name or op).lower()}_out{self.n}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name or f"{op.lower()}{self.n}", **kw))
        return out

    def model(self, *outputs: str) -> onnx.ModelProto:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [self.batch, *self.shape])
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        graph = helper.make_graph(self.nodes, "net", [x], outs, self.inits)
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        proto.ir_version = 8
        done = onnx.shape_inference.infer_shapes(proto).graph
        inferred = {v.name: v for v in [*done.value_info, *done.output]}
        for out in proto.graph.output:  # give the outputs their shapes, as exporters do
            if out.name in inferred:
                out.CopyFrom(inferred[out.name])
        return proto


def conv(net: Net, x: str, cin: int, cout: int, k: int = 3, group: int = 1, bias: bool = True, **kw) -> str:
    ins = [x, net.rand(cout, cin // group, k, k)] + ([net.rand(cout)] if bias else [])
    return net.op("Conv", ins, kernel_shape=[k, k], group=group, **kw)


def check(proto, samples: int = 2):
    """Walk, verify against onnxruntime, and check the plan's counts against generated ones."""
    model = load_onnx(proto)
    graph = model.walked.graph
    result = verify_onnx(model, graph, samples=samples)
    assert result.errors, "verify compared no layer"
    assert result.ok and result.worst < TOL, f"replay differs from onnxruntime: {result.errors}"
    counted = extract(graph, None)
    the_plan = plan(graph)
    assert counted.edges == the_plan.edges and counted.nodes == the_plan.nodes == graph.total_neurons
    return graph, result


def test_conv_asymmetric_pads_stride_dilation():
    net = Net((3, 9, 8))
    y = conv(net, "x", 3, 4, pads=[2, 0, 0, 1], strides=[2, 2], name="asym")
    y = conv(net, y, 4, 4, dilations=[2, 2], pads=[2, 2, 2, 2], name="dilated")  # Keras 'same' geometry
    y = conv(net, y, 4, 2, k=2, bias=False, name="plain")
    graph, result = check(net.model(y))
    types = {s.name: s.type for s in graph.layers}
    assert types["asym/pad"] == "ZeroPadding2D" and graph.layer("asym/pad").part_of == "asym"
    assert graph.layer("dilated").config["padding"] == "same" and "dilated/pad" not in types
    assert graph.layer("plain").config["padding"] == "valid"
    assert set(result.errors) == {"asym", "dilated", "plain"}
    assert graph.layer("asym").output.shape == (5, 4, 4)  # NCHW (4, 5, 5) as (h, w, c)


def test_group_and_depthwise_conv():
    net = Net((4, 6, 6))
    y = conv(net, "x", 4, 6, group=2, pads=[1, 1, 1, 1], name="grouped")
    y = conv(net, y, 6, 12, group=6, pads=[0, 1, 1, 0], name="depthwise")
    graph, _ = check(net.model(y))
    assert graph.layer("grouped").type == "Conv2D" and graph.layer("grouped").config["groups"] == 2
    assert graph.layer("depthwise").type == "DepthwiseConv2D"
    assert graph.layer("depthwise").config["depth_multiplier"] == 2


@pytest.mark.parametrize("include", [0, 1])
def test_average_pool_count_include_pad(include):
    net = Net((2, 7, 7))
    y = net.op("AveragePool", ["x"], name="avg", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
               count_include_pad=include)
    graph, result = check(net.model(y))
    assert set(result.errors) == {"avg"}
    # 7 -> 4 with pads (1, 1) is Keras's 'same' window, which divides by the members inside the input;
    # counting the pads too is a zero-padded 'valid' window
    names = {s.name for s in graph.layers}
    assert ("avg/pad" in names) == bool(include)
    assert graph.layer("avg").config["padding"] == ("valid" if include else "same")


def test_average_pool_count_exclude_with_keras_geometry():
    net = Net((2, 5, 5))
    y = net.op("AveragePool", ["x"], name="avg", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    graph, _ = check(net.model(y))
    assert graph.layer("avg").config["padding"] == "same"


def test_average_pool_exclude_with_other_pads_averages_real_members():
    net = Net((2, 6, 6))
    y = net.op("AveragePool", ["x"], name="avg", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    graph, _ = check(net.model(y))
    assert graph.layer("avg").config["padding"] == [[1, 0], [1, 0]]  # no window reaches the after pads
    assert "avg/pad" not in {s.name for s in graph.layers}


def test_max_pool_pads_ceil_mode_and_sign():
    net = Net((3, 8, 7))
    y = conv(net, "x", 3, 4, pads=[1, 1, 1, 1])
    y = net.op("Relu", [y], name="relu")
    y = net.op("MaxPool", [y], name="pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    y = net.op("MaxPool", [y], name="ceil", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)  # floor: 1x1
    graph, result = check(net.model(y))
    assert {"pool", "ceil", "relu"} <= set(result.errors)
    assert graph.layer("ceil").output.shape == (2, 2, 4)
    # the same pads on a signed input: a window over the real members only (no zeros)
    net = Net((3, 8, 8))
    y = net.op("MaxPool", ["x"], name="signed", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    graph, _ = check(net.model(y))
    assert graph.layer("signed").config["padding"] == [[1, 0], [1, 0]]  # the after pad no window reaches is dropped


def test_gemm_alpha_beta_transb_and_matmul_add():
    net = Net((6,))
    y = net.op("Gemm", ["x", net.rand(5, 6), net.rand(5)], name="fc", alpha=0.5, beta=2.0, transB=1)
    y = net.op("Tanh", [y], name="tanh")
    z = net.op("MatMul", [y, net.rand(5, 4)], name="mm")
    z = net.op("Add", [z, net.rand(4)], name="bias_add")
    z = net.op("Softmax", [z], name="probs", axis=-1)
    graph, result = check(net.model(z))
    assert graph.layer("bias_add").type == "Dense" and "mm" not in {s.name for s in graph.layers}
    assert set(result.errors) == {"fc", "tanh", "bias_add", "probs"}


def test_flatten_into_gemm_keeps_the_nchw_feature_order():
    net = Net((3, 4, 5))
    y = conv(net, "x", 3, 2, pads=[1, 1, 1, 1], name="conv")
    y = net.op("Flatten", [y], name="flat")
    y = net.op("Relu", [y], name="relu_flat")  # an elementwise op between Flatten and Gemm keeps the order
    y = net.op("Gemm", [y, net.rand(40, 3), net.rand(3)], name="fc")
    graph, result = check(net.model(y))
    flat = graph.layer("flat")
    assert flat.output.alias and flat.output.offset == graph.layer("conv").output.offset
    assert {"relu_flat", "fc"} <= set(result.errors)
    # Reshape (N, -1) is the same re-indexing
    net = Net((2, 3, 3))
    y = net.op("Reshape", [conv(net, "x", 2, 2, k=1), net.ints([0, -1])], name="reshape")
    check(net.model(net.op("Gemm", [y, net.rand(18, 2)], name="fc")))


def test_residual_add_concat_batchnorm_and_global_pool():
    net = Net((3, 5, 5))
    a = conv(net, "x", 3, 4, pads=[1, 1, 1, 1], name="a")
    bn = net.op("BatchNormalization", [a, net.const(net.rng.uniform(0.5, 2, 4)), net.rand(4), net.rand(4),
                                       net.const(net.rng.uniform(0.5, 2, 4))], name="bn", epsilon=1e-3)
    r = net.op("LeakyRelu", [bn], name="leaky", alpha=0.2)
    b = conv(net, r, 4, 4, pads=[1, 1, 1, 1], name="b")
    s = net.op("Add", [a, b], name="residual")
    c = net.op("Concat", [s, net.op("Sigmoid", [b], name="sig")], name="cat", axis=1)
    c = net.op("Mul", [c, net.const(net.rng.normal(0, 1, (8, 1, 1)))], name="scale")
    g = net.op("GlobalAveragePool", [c], name="gap")
    m = net.op("GlobalMaxPool", [c], name="gmp")
    out = net.op("Gemm", [net.op("Flatten", [net.op("Add", [g, m], name="pools")], name="flat"),
                          net.rand(8, 3)], name="fc")
    drop = net.op("Dropout", [out], name="drop")
    graph, result = check(net.model(net.op("Identity", [drop], name="ident")))
    assert graph.layer("residual").type == "Add" and graph.layer("cat").type == "Concatenate"
    assert graph.layer("scale").type == "Rescaling" and graph.layer("bn").type == "BatchNormalization"
    assert graph.layer("drop").output.alias and graph.layer("ident").output.alias
    assert {"bn", "leaky", "residual", "cat", "scale", "gap", "gmp", "pools", "fc"} <= set(result.errors)


def test_conv1d_and_a_fixed_batch_of_one():
    net = Net((2, 9), batch=1)  # exporters often fix the batch at 1: onnxruntime runs one sample at a time
    y = net.op("Conv", ["x", net.rand(3, 2, 3), net.rand(3)], name="conv1d", kernel_shape=[3], pads=[2, 0],
               strides=[2])
    y = net.op("MaxPool", [net.op("Relu", [y], name="relu")], name="pool", kernel_shape=[2], strides=[1])
    graph, _ = check(net.model(y), samples=3)
    assert graph.layer("conv1d").type == "Conv1D" and graph.layer("conv1d").output.shape == (5, 3)


def test_pipeline_model_walk_onnx_is_the_onnx_walk(tmp_path):
    """pipeline.model.walk_onnx (beside walk for Keras) takes a path or a ModelProto."""
    from pipeline import model

    net = Net((2, 5, 5))
    proto = net.model(net.op("Conv", ["x", net.rand(3, 2, 3, 3)], name="conv", kernel_shape=[3, 3]))
    onnx.save(proto, tmp_path / "m.onnx")
    ours = walk_onnx(proto)
    for source in (proto, tmp_path / "m.onnx"):
        graph = model.walk_onnx(source)
        assert [(s.name, s.type, s.output.shape) for s in graph.layers] == \
            [(s.name, s.type, s.output.shape) for s in ours.layers] == \
            [("x", "InputLayer", (5, 5, 2)), ("conv", "Conv2D", (3, 3, 3))]


def test_unsupported_op_names_node_op_and_doc():
    net = Net((2, 4, 4))
    y = net.op("LRN", [conv(net, "x", 2, 2)], name="norm", size=3)
    with pytest.raises(UnsupportedLayerError) as err:
        walk_onnx(net.model(y))
    msg = str(err.value)
    assert "'norm'" in msg and "LRN" in msg and "docs/onnx.md" in msg and "Conv" in msg
    assert err.value.layer == "norm"
    assert "LRN" not in SUPPORTED_OPS and "Transpose" in SUPPORTED_OPS


def test_onnx_file_through_build_and_the_cli(tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import cli
    from pipeline.model import build

    net = Net((2, 6, 6))
    y = net.op("Relu", [conv(net, "x", 2, 3, pads=[1, 1, 1, 1], name="conv")], name="relu")
    y = net.op("MaxPool", [y], name="pool", kernel_shape=[2, 2], strides=[2, 2])
    path = tmp_path / "tiny.onnx"
    onnx.save(net.model(y), str(path))
    model, graph = build(ModelSpec(str(path)))
    assert [s.name for s in graph.layers] == ["x", "conv", "relu", "pool"]
    assert graph.provenance["source_sha256"]
    assert verify_onnx(model, graph).ok
    with pytest.raises(UsageError, match="--input-shape"):
        build(ModelSpec(str(path), input_shape=(6, 6, 2)))
    runner = CliRunner()
    planned = runner.invoke(cli, ["plan", str(path)])
    assert planned.exit_code == 0, planned.output
    assert f"{graph.total_neurons:,}" in planned.output or str(graph.total_neurons) in planned.output
    out = tmp_path / "out"
    done = runner.invoke(cli, ["extract", str(path), "--out", str(out), "--workers", "1", "-s"])
    assert done.exit_code == 0, done.output
    assert verify_onnx(model, graph, folder=out).ok  # the written Parquet replays too
    for args in ([str(path)], [str(out)]):  # replay vs onnxruntime, from the model and from the folder
        checked = runner.invoke(cli, ["verify", *args, "--samples", "2", "-s"])
        assert checked.exit_code == 0 and "verify passed" in checked.output, checked.output


def test_bad_file_is_a_model_error(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a protobuf")
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        walk_onnx(path)
