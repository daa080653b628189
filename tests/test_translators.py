"""Replay equality for every translator: the edges, replayed, must reproduce Keras's outputs.

Each case builds a tiny real Keras model (seeded weights, random nonzero biases), walks it, and
checks with :func:`tests.helpers.check_model` that replay matches ``model(x)`` for every layer that
owns neurons, and that the analytic plan's counts equal the counts extraction actually produces.
"""

from __future__ import annotations

import pytest

from pipeline.extract import extract
from pipeline.model import walk
from pipeline.plan import plan
from tests.helpers import check_model, functional, keras, sequential

K = keras()
L = K.layers

# (input h, w, c), filters, kernel, strides, dilation, padding, use_bias, activation
CONV_CASES = [
    ((7, 9, 2), 3, 1, 1, 1, "valid", True, None),
    ((7, 9, 2), 3, 1, 2, 1, "same", True, "relu"),
    ((7, 9, 2), 3, 2, 1, 1, "same", True, None),  # even kernel, same: pad 0 before, 1 after
    ((7, 9, 2), 3, 2, 2, 1, "valid", False, "tanh"),
    ((7, 9, 2), 2, 3, 1, 1, "same", True, "sigmoid"),
    ((7, 9, 2), 2, 3, 2, 1, "same", True, None),
    ((7, 9, 2), 2, 3, 3, 1, "valid", True, "relu"),
    ((11, 5, 2), 2, (2, 3), 1, 1, "same", True, None),  # non-square kernel
    ((11, 5, 2), 2, (2, 3), (2, 1), 1, "valid", True, None),  # non-square stride
    ((11, 5, 1), 2, (4, 1), (3, 2), 1, "same", True, "relu"),
    ((11, 5, 3), 2, (4, 1), 1, 1, "valid", False, None),
    ((8, 8, 3), 4, 4, (3, 2), 1, "same", True, None),  # even input, even kernel, mixed strides
    ((9, 7, 2), 2, 4, 3, 1, "same", True, "tanh"),  # odd total padding
    ((11, 5, 1), 2, 5, 1, 1, "same", True, None),
    ((11, 5, 2), 2, 5, 2, 1, "same", False, None),
    ((11, 9, 1), 1, 5, 3, 1, "valid", True, "sigmoid"),
    ((7, 9, 2), 2, 3, 1, 2, "same", True, None),  # dilation 2
    ((7, 9, 2), 2, 3, 1, 2, "valid", True, "relu"),
    ((9, 11, 2), 2, 2, 1, (2, 3), "same", True, None),  # non-square dilation, even kernel
    ((9, 11, 1), 3, 3, 1, (2, 3), "valid", False, None),
    ((1, 1, 3), 2, 3, 1, 1, "same", True, None),  # every kernel offset but the centre is padding
    ((2, 3, 2), 2, 5, 2, 1, "same", True, None),  # kernel larger than the input
]


def _id(case) -> str:
    shape, f, k, s, d, pad, bias, act = case
    return f"in{'x'.join(map(str, shape))}-f{f}-k{k}-s{s}-d{d}-{pad}-{'b' if bias else 'nb'}-{act}"


@pytest.mark.parametrize("case", CONV_CASES, ids=[_id(c) for c in CONV_CASES])
def test_conv2d_replays(case):
    shape, filters, kernel, strides, dilation, padding, use_bias, act = case
    model = sequential(
        shape,
        [L.Conv2D(filters, kernel, strides=strides, dilation_rate=dilation, padding=padding,
                  use_bias=use_bias, activation=act, name="conv")],
    )
    graph, result = check_model(model)
    assert set(result.errors) == {"conv"}
    bias = graph.layer("conv").weights.get("bias")
    assert (bias is not None and (bias != 0).all()) if use_bias else bias is None


# (input h, w, c), pool size, strides, padding
POOL_CASES = [
    ((7, 9, 2), 2, None, "valid"),
    ((7, 9, 2), 2, None, "same"),  # odd sizes: the last window is partly padding
    ((7, 9, 2), 3, 2, "valid"),
    ((7, 9, 2), 3, 2, "same"),
    ((7, 9, 2), 2, 3, "valid"),  # strides larger than the window: gaps
    ((7, 9, 2), 2, 3, "same"),
    ((8, 6, 3), 3, 1, "same"),  # overlapping windows, padding on both sides
    ((11, 5, 1), (2, 3), (1, 2), "same"),
    ((11, 5, 2), (3, 2), (2, 1), "valid"),
    ((5, 5, 1), 4, 2, "same"),
]


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", POOL_CASES, ids=[f"in{'x'.join(map(str, c[0]))}-p{c[1]}-s{c[2]}-{c[3]}" for c in POOL_CASES])
def test_pooling_replays(kind, case):
    shape, pool, strides, padding = case
    cls = L.MaxPooling2D if kind == "max" else L.AveragePooling2D
    # A conv in front makes the pooled values depend on weights and biases, and negative.
    model = sequential(
        shape,
        [L.Conv2D(2, 1, name="pre"), cls(pool_size=pool, strides=strides, padding=padding, name="pool")],
    )
    graph, result = check_model(model)
    assert {"pre", "pool"} <= set(result.errors)
    assert plan(graph).layer("pool").activation == "linear"


def test_max_pooling_on_input_directly():
    model = sequential((6, 5, 3), [L.MaxPooling2D(3, strides=2, padding="same", name="pool")])
    check_model(model)


@pytest.mark.parametrize(
    "units, act, use_bias",
    [(4, None, True), (3, "relu", True), (5, "softmax", True), (1, "sigmoid", False), (6, "tanh", True)],
)
def test_dense_replays(units, act, use_bias):
    model = sequential((7,), [L.Dense(units, activation=act, use_bias=use_bias, name="fc")])
    graph, _ = check_model(model)
    lp = plan(graph).layer("fc")
    assert lp.edges == 7 * units and lp.nodes == units
    assert lp.activation == (act or "linear")


@pytest.mark.parametrize("act", [None, "softmax", "relu"])
def test_dense_on_rank3_input_acts_on_last_axis(act):
    model = sequential((3, 4, 5), [L.Dense(2, activation=act, name="fc")])
    graph, _ = check_model(model)
    spec = graph.layer("fc")
    assert spec.output.shape == (3, 4, 2)
    assert plan(graph).layer("fc").edges == 3 * 4 * 5 * 2  # no mixing across positions


def test_dense_after_conv_on_spatial_map():
    model = sequential((5, 4, 2), [L.Conv2D(3, 2, padding="same", name="conv"), L.Dense(4, activation="softmax", name="fc")])
    check_model(model)


@pytest.mark.parametrize(
    "alias_layers",
    [
        lambda: [L.Flatten(name="alias")],
        lambda: [L.Dropout(0.5, name="alias"), L.Flatten(name="flat")],
        lambda: [L.Flatten(name="flat"), L.Dropout(0.3, name="alias")],
        lambda: [L.Reshape((6, 10), name="alias")],
        lambda: [L.Reshape((60,), name="alias")],
        lambda: [L.SpatialDropout2D(0.5, name="alias"), L.Flatten(name="flat")],
    ],
    ids=["flatten", "dropout-flatten", "flatten-dropout", "reshape-rank2", "reshape-rank1", "spatialdropout"],
)
def test_aliasing_layers_make_no_neurons(alias_layers):
    model = sequential((4, 5, 3), [L.Conv2D(3, 3, padding="same", name="conv"), *alias_layers(), L.Dense(3, name="fc")])
    graph, _ = check_model(model)
    the_plan = plan(graph)
    counted = extract(graph, None).manifest
    by_name = {e["name"]: e for e in counted["layers"]}
    for spec in graph.layers:
        if spec.type in ("Flatten", "Dropout", "Reshape", "SpatialDropout2D"):
            assert not spec.makes_neurons
            assert the_plan.layer(spec.name).nodes == 0 and the_plan.layer(spec.name).edges == 0
            assert by_name[spec.name]["nodes"] == 0 and by_name[spec.name]["edges"] == 0
            conv = graph.layer("conv").output
            assert spec.output.offset == conv.offset and spec.output.owner == "conv"
    # fc's sources are exactly the conv's neurons, in Keras's row-major order.
    conv = graph.layer("conv").output
    assert graph.layer("fc").inputs[0].offset == conv.offset
    fc_size = graph.layer("fc").output.size
    assert the_plan.nodes == graph.total_neurons == 60 + 60 + fc_size  # input + conv + fc only


@pytest.mark.parametrize(
    "make",
    [
        lambda: L.Activation("relu", name="act"),
        lambda: L.Activation("tanh", name="act"),
        lambda: L.Activation("sigmoid", name="act"),
        lambda: L.Activation("softmax", name="act"),
        lambda: L.Activation("linear", name="act"),
        lambda: L.ReLU(name="act"),
        lambda: L.ReLU(max_value=6.0, name="act"),
        lambda: L.ReLU(max_value=0.4, name="act"),
        lambda: L.ReLU(negative_slope=0.2, name="act"),
        lambda: L.ReLU(threshold=0.3, name="act"),
        lambda: L.ReLU(max_value=0.5, negative_slope=0.1, threshold=0.2, name="act"),
    ],
    ids=["relu", "tanh", "sigmoid", "softmax", "linear", "ReLU", "ReLU6", "ReLU-max0.4", "ReLU-slope",
         "ReLU-threshold", "ReLU-all"],
)
def test_activation_layers(make):
    # The conv's outputs are scaled up so that clipping at max_value and the threshold both bite.
    model = sequential((5, 6, 2), [L.Conv2D(3, 3, padding="same", name="conv",
                                            kernel_initializer=K.initializers.RandomNormal(0.0, 1.0)), make()])
    graph, result = check_model(model)
    assert "act" in result.errors
    lp = plan(graph).layer("act")
    assert lp.nodes == 5 * 6 * 3 and lp.edges == 5 * 6 * 3  # identity edges into new neurons


def test_activation_on_dense_vector():
    model = sequential((6,), [L.Dense(5, name="fc"), L.Activation("softmax", name="act"), L.ReLU(max_value=0.3)])
    check_model(model)


def test_chain_sequential():
    model = sequential(
        (12, 11, 3),
        [
            L.Conv2D(4, 3, padding="same", activation="relu"),
            L.MaxPooling2D(2, padding="same"),
            L.Conv2D(5, (2, 3), strides=(1, 2), activation="tanh"),
            L.AveragePooling2D(3, strides=2, padding="same"),
            L.ReLU(negative_slope=0.1),
            L.Flatten(),
            L.Dropout(0.2),
            L.Dense(6, activation="relu"),
            L.Dense(3, activation="softmax"),
        ],
    )
    graph, result = check_model(model)
    owners = [s.name for s in graph.layers if s.makes_neurons and s.type != "InputLayer"]
    assert set(result.errors) == set(owners) and len(owners) == 7


def test_chain_functional_with_names():
    def body(x):
        x = L.Conv2D(3, 3, strides=2, padding="same", name="c1")(x)
        x = L.Activation("relu", name="a1")(x)
        x = L.Conv2D(4, 2, dilation_rate=2, name="c2")(x)
        x = L.Reshape((-1,), name="r")(x)
        return L.Dense(2, activation="sigmoid", name="out")(x)

    model = functional((9, 10, 2), body)
    graph, result = check_model(model)
    assert set(result.errors) == {"c1", "a1", "c2", "out"}


def test_branching_functional_model_with_two_outputs():
    def body(x):
        trunk = L.Conv2D(3, 3, padding="same", activation="relu", name="trunk")(x)
        a = L.Conv2D(2, 1, name="branch_a")(trunk)
        a = L.MaxPooling2D(2, name="pool_a")(a)
        b = L.Conv2D(4, (3, 2), strides=2, padding="same", name="branch_b")(trunk)
        b = L.Flatten(name="flat_b")(b)
        b = L.Dense(3, activation="softmax", name="fc_b")(b)
        return [a, b]

    model = functional((7, 8, 2), body)
    graph, result = check_model(model)
    assert set(result.errors) == {"trunk", "branch_a", "pool_a", "branch_b", "fc_b"}
    trunk = graph.layer("trunk").output
    assert graph.layer("branch_a").inputs[0].offset == trunk.offset
    assert graph.layer("branch_b").inputs[0].offset == trunk.offset
    # Every tensor that owns neurons gets its own, disjoint id range covering 0..total.
    ranges = sorted((s.output.offset, s.output.offset + s.output.size) for s in graph.layers if s.makes_neurons)
    assert ranges[0][0] == 0 and ranges[-1][1] == graph.total_neurons
    assert all(a[1] == b[0] for a, b in zip(ranges[:-1], ranges[1:], strict=True))


def test_input_layer_owns_input_neurons():
    model = sequential((3, 4, 2), [L.Conv2D(1, 1, name="conv")])
    graph = walk(model)
    first = graph.layers[0]
    assert first.type == "InputLayer" and first.output.offset == 0
    lp = plan(graph).layer(first.name)
    assert lp.nodes == 24 and lp.edges == 0
    assert graph.layer("conv").output.offset == 24


OTHER_RANKS = {
    "conv1d-same-s2": ((9, 2), lambda: [L.Conv1D(3, 4, strides=2, padding="same")]),
    "conv1d-causal-d2": ((9, 2), lambda: [L.Conv1D(3, 3, dilation_rate=2, padding="causal")]),
    "conv3d-same": ((4, 5, 3, 2), lambda: [L.Conv3D(2, (2, 3, 2), strides=(1, 2, 1), padding="same")]),
    "conv2d-groups": ((5, 5, 4), lambda: [L.Conv2D(6, 3, groups=2, padding="same")]),
    "maxpool1d-same": ((9, 2), lambda: [L.Conv1D(2, 1), L.MaxPooling1D(3, strides=2, padding="same")]),
    "avgpool3d-same": ((4, 5, 3, 2), lambda: [L.AveragePooling3D(2, strides=(1, 2, 2), padding="same")]),
    "dense-rank2-softmax": ((3, 4), lambda: [L.Dense(2, activation="softmax")]),
}


@pytest.mark.parametrize("name", sorted(OTHER_RANKS))
def test_other_ranks_replay(name):
    shape, make = OTHER_RANKS[name]
    check_model(sequential(shape, make()))


@pytest.mark.parametrize(
    "act", ["relu6", "elu", "selu", "softplus", "softsign", "swish", "silu", "gelu", "exponential",
            "hard_sigmoid", "hard_silu"],
)
def test_fused_activations(act):
    graph, _ = check_model(sequential((4, 4, 2), [L.Conv2D(3, 3, padding="same", activation=act, name="conv")]))
    assert plan(graph).layer("conv").activation in {act, {"swish": "silu"}.get(act)}  # Keras renames swish


def test_two_inputs_in_other_order_than_walk():
    """The walk numbers input b first (the first output needs it); replay must still feed a to a."""
    K.utils.set_random_seed(0)
    a, b = K.Input((5, 5, 2), name="in_a"), K.Input((4, 6, 1), name="in_b")
    model = K.Model([a, b], [L.Conv2D(2, 3, name="cb")(b), L.Conv2D(3, 3, name="ca")(a)])
    graph, result = check_model(model)
    assert [s.name for s in graph.layers if s.type == "InputLayer"] == ["in_b", "in_a"]
    assert set(result.errors) == {"ca", "cb"}


def test_shared_layer_is_replayed_or_refused():
    """A layer called twice: either both applications replay (with distinct names), or walk refuses.

    Today walk gives both applications the layer's name, so the manifest's per-layer entries
    collide and verify compares the second application against the first's Keras output.
    """
    from pipeline.errors import ModelError

    def body(x):
        shared = L.Conv2D(2, 3, padding="same", name="shared")
        a = shared(x)
        return [a, shared(L.Conv2D(2, 1, name="mid")(a))]

    model = functional((5, 5, 2), body)
    try:
        graph = walk(model)
    except ModelError as err:
        assert "shared" in str(err)
        return
    names = [s.name for s in graph.layers]
    assert len(names) == len(set(names)), f"duplicate layer names in the graph: {names}"
    check_model(model)
