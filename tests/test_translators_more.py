"""Replay equality for the keras.applications translators: normalization, merges, global pooling,
depthwise/separable convolutions, padding/cropping/upsampling/permute and parametrised activations.

Each case builds a tiny seeded Keras model, walks it, and checks with
:func:`tests.helpers.check_model` that replay reproduces Keras for every layer that owns neurons and
that the analytic plan's edge counts equal what extraction produces.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import UnsupportedLayerError
from pipeline.extract import extract
from pipeline.model import randomize_batchnorm, walk
from pipeline.plan import plan
from tests.helpers import check_model, f32_bits, functional, keras, layer_edges, sequential

K = keras()
L = K.layers


# --- BatchNormalization ---------------------------------------------------------------------

BN_CASES = [
    # input shape, center, scale, epsilon
    ((5, 6, 3), True, True, 1e-3),
    ((5, 6, 3), False, True, 1e-3),
    ((5, 6, 3), True, False, 1e-5),
    ((5, 6, 3), False, False, 0.1),
    ((7, 4), True, True, 1e-3),  # 1-D map
    ((3, 4, 2, 3), True, True, 1e-3),  # 3-D map
    ((6,), True, True, 1e-3),  # a vector
]


@pytest.mark.parametrize("case", BN_CASES, ids=[f"{c[0]}-c{c[1]:d}-s{c[2]:d}-e{c[3]}" for c in BN_CASES])
def test_batchnorm_replays(case):
    shape, center, scale, eps = case
    model = sequential(shape, [L.BatchNormalization(center=center, scale=scale, epsilon=eps, name="bn")])
    randomize_batchnorm(model)
    graph, result = check_model(model)
    assert set(result.errors) == {"bn"}
    assert plan(graph).layer("bn").edges == graph.layer("bn").output.size


def test_batchnorm_after_conv_with_relu():
    model = sequential(
        (6, 7, 2),
        [L.Conv2D(4, 3, padding="same", use_bias=False), L.BatchNormalization(), L.Activation("relu")],
    )
    randomize_batchnorm(model, seed=3)
    check_model(model)


def test_batchnorm_edges_are_identity_shaped_with_folded_weights():
    model = sequential((2, 2, 3), [L.BatchNormalization(epsilon=0.01, name="bn")])
    randomize_batchnorm(model)
    graph = walk(model)
    gamma, beta, mean, var = model.get_layer("bn").get_weights()
    scale = gamma / np.sqrt(var.astype(np.float64) + 0.01)
    src, out = graph.layer("bn").inputs[0].offset, graph.layer("bn").output.offset
    expected = {(src + i, out + i, f32_bits(scale[i % 3]), "batchnorm") for i in range(12)}
    assert layer_edges(graph, "bn") == expected
    from pipeline.layers import registry

    bias = registry.get("BatchNormalization").bias(graph.layer("bn"))
    np.testing.assert_allclose(bias, beta - mean * scale, rtol=1e-6)


def test_batchnorm_on_another_axis_is_refused():
    model = sequential((4, 5, 3), [L.BatchNormalization(axis=1)])
    with pytest.raises(UnsupportedLayerError, match="only the last"):
        walk(model)


# --- Rescaling and Normalization ------------------------------------------------------------


@pytest.mark.parametrize(
    "layer",
    [
        lambda: L.Rescaling(1 / 127.5, offset=-1.0),
        lambda: L.Rescaling([0.5, 2.0, -1.0], offset=[0.1, 0.0, 0.3]),
        lambda: L.Rescaling(3.0),
        lambda: L.Normalization(mean=0.3, variance=4.0),
        lambda: L.Normalization(mean=[0.1, -0.2, 0.5], variance=[1.0, 0.25, 9.0]),
        lambda: L.Normalization(mean=[0.1, -0.2, 0.5], variance=[1.0, 0.25, 9.0], invert=True),
        lambda: L.Normalization(mean=[0.1, -0.2, 0.5], variance=[0.0, 0.25, 1e-16]),  # std floored
    ],
    ids=["rescale-scalar", "rescale-channels", "rescale-no-offset", "norm-scalar", "norm-channels",
         "norm-invert", "norm-zero-variance"],
)
def test_affine_preprocessing_replays(layer):
    check_model(sequential((4, 5, 3), [layer(), L.Conv2D(2, 3)]))


def test_adapted_normalization_replays():
    norm = L.Normalization()
    norm.adapt(np.random.default_rng(0).normal(2.0, 3.0, (16, 4, 5, 3)).astype("float32"))
    check_model(sequential((4, 5, 3), [norm]))


# --- Merges -----------------------------------------------------------------------------------

MERGES = {
    "add2": lambda a, b, c: L.Add(name="m")([a, b]),
    "add3": lambda a, b, c: L.Add(name="m")([a, b, c]),
    "subtract": lambda a, b, c: L.Subtract(name="m")([a, b]),
    "average3": lambda a, b, c: L.Average(name="m")([a, b, c]),
    "maximum3": lambda a, b, c: L.Maximum(name="m")([a, b, c]),
    "multiply2": lambda a, b, c: L.Multiply(name="m")([a, b]),
    "multiply3": lambda a, b, c: L.Multiply(name="m")([a, b, c]),
    "add-same-input-twice": lambda a, b, c: L.Add(name="m")([a, a]),
}


@pytest.mark.parametrize("merge", list(MERGES), ids=list(MERGES))
def test_elementwise_merges_replay(merge):
    def body(x):
        a = L.Conv2D(3, 3, padding="same", name="a")(x)
        b = L.Conv2D(3, 1, name="b")(x)
        c = L.Conv2D(3, 2, padding="same", activation="relu", name="c")(x)
        return L.Activation("relu", name="after")(MERGES[merge](a, b, c))

    graph, result = check_model(functional((5, 6, 2), body))
    n_in = len(graph.layer("m").inputs)
    assert plan(graph).layer("m").edges == n_in * graph.layer("m").output.size


def test_inception_resnet_custom_scale_layer_replays():
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    def body(x):
        a = L.Conv2D(3, 3, padding="same")(x)
        return CustomScaleLayer(0.17, name="m")([a, L.Conv2D(3, 1)(x)])

    graph, _ = check_model(functional((4, 5, 2), body))
    assert {w for *_, w, _ in layer_edges(graph, "m")} == {f32_bits(1.0), f32_bits(0.17)}


def test_squeeze_excitation_multiply_replays():
    def body(x):
        a = L.Conv2D(4, 3, padding="same", activation="swish")(x)
        se = L.GlobalAveragePooling2D(keepdims=True)(a)
        se = L.Conv2D(2, 1, activation="relu")(se)
        se = L.Conv2D(4, 1, activation="sigmoid")(se)
        return L.Multiply(name="excite")([a, se])

    graph, _ = check_model(functional((4, 5, 2), body))
    assert plan(graph).layer("excite").edges == 2 * 4 * 5 * 4


def test_add_broadcasts_a_per_channel_input():
    def body(x):
        a = L.Conv2D(3, 3, padding="same")(x)
        g = L.GlobalAveragePooling2D(keepdims=True)(a)
        return L.Add(name="m")([a, g])

    check_model(functional((4, 5, 2), body))


@pytest.mark.parametrize("axis", [-1, 1, 2, 3])
def test_concatenate_replays_on_any_axis(axis):
    def body(x):
        a = L.Conv2D(2, 3, padding="same", name="a")(x)
        b = L.Conv2D(3 if axis in (-1, 3) else 2, 1, name="b")(x)
        c = L.MaxPooling2D(1, name="c")(x) if axis not in (-1, 3) else L.Conv2D(1, 1, name="c")(x)
        return L.Concatenate(axis=axis, name="cat")([a, b, c])

    graph, _ = check_model(functional((4, 5, 2), body))
    spec = graph.layer("cat")
    assert plan(graph).layer("cat").edges == spec.output.size == sum(t.size for t in spec.inputs)


def test_concatenate_vectors_and_dense_after():
    def body(x):
        f = L.Flatten()(x)
        return L.Dense(3, name="d")(L.Concatenate(name="cat")([L.Dense(4)(f), L.Dense(2)(f), f]))

    check_model(functional((3, 2), body))


def test_densenet_like_block():
    def body(x):
        for i in range(2):
            y = L.BatchNormalization()(x)
            y = L.Activation("relu")(y)
            y = L.Conv2D(2, 3, padding="same", use_bias=False)(y)
            x = L.Concatenate(name=f"cat{i}")([x, y])
        return L.AveragePooling2D(2)(x)

    model = functional((6, 6, 2), body)
    randomize_batchnorm(model)
    check_model(model)


def test_a_non_elementwise_keras_ops_call_is_refused():
    # `x + 1.0` is now an affine keras.ops call (tests/test_applications.py); other ops still refuse.
    def body(x):
        return K.ops.exp(L.Conv2D(2, 1)(x))

    model = functional((3, 3, 1), body)
    with pytest.raises(UnsupportedLayerError, match="keras.ops.Exp"):
        walk(model)


# --- Global pooling ---------------------------------------------------------------------------

GLOBAL_SHAPES = {1: (7, 3), 2: (5, 6, 3), 3: (3, 4, 5, 2)}


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("op", ["Average", "Max"])
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_pooling_replays(rank, op, keepdims):
    layer = getattr(L, f"Global{op}Pooling{rank}D")(keepdims=keepdims, name="g")
    shape = GLOBAL_SHAPES[rank]
    model = sequential(shape, [getattr(L, f"Conv{rank}D")(4, 2, padding="same"), layer, L.Dense(2)])
    graph, _ = check_model(model)
    assert plan(graph).layer("g").edges == np.prod(shape[:-1]) * 4


# --- Depthwise, grouped and separable convolutions ------------------------------------------

# input (h, w, c), kernel, strides, dilation, padding, depth multiplier
DEPTHWISE_CASES = [
    ((6, 7, 3), 3, 1, 1, "valid", 1),
    ((6, 7, 3), 3, 1, 1, "same", 2),
    ((6, 7, 2), 3, 2, 1, "same", 1),
    ((7, 7, 2), 3, 2, 1, "valid", 3),
    ((8, 6, 2), 2, 2, 1, "same", 1),  # even kernel
    ((9, 8, 2), 3, 1, 2, "same", 2),  # dilation
    ((9, 8, 1), (3, 2), (1, 2), 1, "same", 2),
    ((2, 3, 2), 5, 2, 1, "same", 1),  # kernel larger than the input
]


@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=[str(i) for i in range(len(DEPTHWISE_CASES))])
@pytest.mark.parametrize("use_bias", [True, False])
def test_depthwise_conv2d_replays(case, use_bias):
    shape, kernel, strides, dilation, padding, mult = case
    layer = L.DepthwiseConv2D(
        kernel, strides=strides, dilation_rate=dilation, padding=padding, depth_multiplier=mult,
        use_bias=use_bias, activation="relu6", name="dw",
    )
    graph, _ = check_model(sequential(shape, [layer]))
    assert plan(graph).layer("dw").edges == extract(graph, None).manifest["layers"][1]["edges"]


@pytest.mark.parametrize(
    "kwargs",
    [dict(kernel_size=3), dict(kernel_size=3, strides=2, padding="same", depth_multiplier=2),
     dict(kernel_size=2, dilation_rate=2, padding="same"), dict(kernel_size=4, padding="same")],
)
def test_depthwise_conv1d_replays(kwargs):
    check_model(sequential((9, 3), [L.DepthwiseConv1D(**kwargs)]))


@pytest.mark.parametrize(
    "groups, kernel, strides, padding", [(2, 3, 1, "same"), (3, 1, 1, "valid"), (6, 3, 2, "same"), (2, 2, 2, "valid")]
)
def test_grouped_conv2d_replays(groups, kernel, strides, padding):
    model = sequential((6, 7, 6), [L.Conv2D(6, kernel, strides=strides, padding=padding, groups=groups, name="c")])
    graph, _ = check_model(model)
    assert plan(graph).layer("c").edges < walk(sequential((6, 7, 6), [L.Conv2D(6, kernel, strides=strides,
                                                                                 padding=padding, name="c")])
                                                ).layers[1].params * 100


@pytest.mark.parametrize(
    "layer",
    [
        lambda: L.SeparableConv2D(4, 3, padding="same", depth_multiplier=2, activation="relu"),
        lambda: L.SeparableConv2D(3, 3, strides=2, use_bias=False),
        lambda: L.SeparableConv2D(2, 2, dilation_rate=2, padding="same"),
        lambda: L.SeparableConv1D(3, 3, padding="same", depth_multiplier=2),
    ],
)
def test_separable_conv_replays(layer):
    shape = (7, 3) if "1D" in type(layer()).__name__ else (6, 7, 3)
    check_model(sequential(shape, [layer()]))


# --- Padding, cropping, upsampling, permute -------------------------------------------------

SPATIAL = [
    ((7, 2), lambda: L.ZeroPadding1D(2)),
    ((7, 2), lambda: L.ZeroPadding1D((0, 3))),
    ((4, 5, 2), lambda: L.ZeroPadding2D(1)),
    ((4, 5, 2), lambda: L.ZeroPadding2D(((1, 0), (0, 2)))),
    ((2, 3, 4, 2), lambda: L.ZeroPadding3D(((1, 0), (0, 2), (1, 1)))),
    ((7, 2), lambda: L.Cropping1D((1, 2))),
    ((6, 7, 2), lambda: L.Cropping2D(((1, 0), (2, 1)))),
    ((4, 5, 6, 1), lambda: L.Cropping3D(((1, 1), (0, 2), (3, 0)))),
    ((4, 2), lambda: L.UpSampling1D(3)),
    ((3, 4, 2), lambda: L.UpSampling2D((2, 3))),
    ((2, 3, 2, 1), lambda: L.UpSampling3D((2, 1, 3))),
    ((3, 4, 2), lambda: L.Permute((2, 1, 3))),
    ((3, 4, 2), lambda: L.Permute((3, 1, 2))),
    ((3, 4, 5, 2), lambda: L.Permute((4, 3, 1, 2))),
]


@pytest.mark.parametrize("case", SPATIAL, ids=[f"{type(f()).__name__}-{i}" for i, (_, f) in enumerate(SPATIAL)])
def test_spatial_layers_replay(case):
    shape, make = case
    conv = getattr(L, f"Conv{len(shape) - 1}D")(3, 2, padding="same", activation="tanh")
    check_model(sequential(shape, [conv, make(), L.Dense(2)]))


def test_zero_padding_cells_are_edgeless_zero_neurons():
    model = sequential((2, 2, 1), [L.ZeroPadding2D(1, name="pad")])
    graph, _ = check_model(model)
    spec = graph.layer("pad")
    assert spec.output.size == 16 and plan(graph).layer("pad").edges == 4
    targets = {t - spec.output.offset for _, t, _, _ in layer_edges(graph, "pad")}
    assert targets == {5, 6, 9, 10}  # the inner 2x2 of the 4x4 map


def test_bilinear_upsampling_is_refused():
    with pytest.raises(UnsupportedLayerError, match="nearest"):
        walk(sequential((3, 3, 1), [L.UpSampling2D(2, interpolation="bilinear")]))


# --- Parametrised activation layers ---------------------------------------------------------


@pytest.mark.parametrize(
    "layer",
    [lambda: L.LeakyReLU(), lambda: L.LeakyReLU(negative_slope=0.05), lambda: L.ELU(), lambda: L.ELU(alpha=0.4),
     lambda: L.Softmax(), lambda: L.PReLU(alpha_initializer=K.initializers.Constant(0.2), shared_axes=[1, 2])],
    ids=["leaky", "leaky-0.05", "elu", "elu-0.4", "softmax", "prelu-shared"],
)
def test_activation_layers_replay(layer):
    check_model(sequential((4, 5, 3), [L.Conv2D(3, 2), layer()]))


def test_softmax_on_another_axis_is_refused():
    with pytest.raises(UnsupportedLayerError, match="last axis"):
        walk(sequential((4, 5, 3), [L.Softmax(axis=1)]))


# --- keras.applications ---------------------------------------------------------------------


def _small_resnet_block():
    def body(x):
        x = L.ZeroPadding2D(1)(x)
        x = L.Conv2D(4, 3, strides=2)(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        shortcut = L.BatchNormalization()(L.Conv2D(6, 1)(x))
        y = L.Activation("relu")(L.BatchNormalization()(L.Conv2D(6, 3, padding="same")(x)))
        y = L.BatchNormalization()(L.Conv2D(6, 1)(y))
        return L.GlobalAveragePooling2D()(L.Activation("relu")(L.Add()([shortcut, y])))

    return body


def test_resnet_like_block_replays():
    model = functional((9, 9, 3), _small_resnet_block())
    randomize_batchnorm(model)
    check_model(model)


APPLICATIONS = [
    ("resnet50", (32, 32, 3), False),  # ZeroPadding, BatchNormalization, Add
    ("mobilenet_v2", (32, 32, 3), False),  # DepthwiseConv2D, ReLU(6), Add
    ("efficientnet_b0", (32, 32, 3), False),  # Rescaling, Normalization, Multiply (squeeze-excite)
    pytest.param("densenet121", (32, 32, 3), True, marks=pytest.mark.slow),  # Concatenate, top
    pytest.param("nasnet_mobile", (32, 32, 3), False, marks=pytest.mark.slow),  # SeparableConv, Cropping
    pytest.param("inception_resnet_v2", (75, 75, 3), False, marks=pytest.mark.slow),  # CustomScaleLayer
    # the rest of the architecture issue's list (mobilenet_v3_* and convnext_tiny: test_applications.py)
    pytest.param("resnet50_v2", (32, 32, 3), False, marks=pytest.mark.slow),
    pytest.param("resnet101", (32, 32, 3), False, marks=pytest.mark.slow),
    pytest.param("mobilenet", (32, 32, 3), False, marks=pytest.mark.slow),
    pytest.param("inception_v3", (75, 75, 3), False, marks=pytest.mark.slow),
    pytest.param("xception", (71, 71, 3), False, marks=pytest.mark.slow),  # SeparableConv2D split
    pytest.param("efficientnet_v2_b0", (32, 32, 3), False, marks=pytest.mark.slow),
]

#: Planned with the classifier at their native input, 224 (299 for the Inception family and
#: Xception); analytic: nothing is generated.
WITH_TOP = [
    "resnet50", "resnet50_v2", "resnet101", "mobilenet", "mobilenet_v2", "mobilenet_v3_small",
    "mobilenet_v3_large", "densenet121", "inception_v3", "inception_resnet_v2", "xception",
    "efficientnet_b0", "efficientnet_v2_b0", "nasnet_mobile", "convnext_tiny",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", WITH_TOP)
def test_plan_with_top_at_native_input(name):
    from pipeline.layers import registry
    from pipeline.model import ModelSpec, build

    native = (224, 224, 3) if name.startswith("mobilenet_v3") else None  # built with (None, None, 3)
    _, graph = build(ModelSpec(name, native))
    p = plan(graph)
    assert p.edges == sum(registry.get(s.type, s.name).count_edges(s) for s in graph.layers) > 0
    assert p.nodes == sum(s.output.size for s in graph.layers if s.makes_neurons)
    assert graph.layers[-1].output.shape == (1000,)  # the classifier is there


@pytest.mark.parametrize("name, shape, top", APPLICATIONS)
def test_keras_applications_replay(name, shape, top):
    from pipeline.model import ModelSpec, build
    from pipeline.replay import verify

    model, graph = build(ModelSpec(name, shape, include_top=top))
    randomize_batchnorm(model)
    graph = walk(model, graph.spec)
    result = verify(model, graph, samples=1)
    assert result.ok, sorted(result.errors.items(), key=lambda kv: -kv[1])[:5]
    assert extract(graph, None).edges == plan(graph).edges
