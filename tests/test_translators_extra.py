"""Replay tests of the translators added for "every keras.applications CNN": separable convolutions
split into depthwise and pointwise neurons, transposed convolutions, GroupNormalization."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.extract import extract
from pipeline.plan import plan
from tests.helpers import check_model, keras, layer_edges, sequential

L = keras().layers


# --- SeparableConv: <name>/depthwise neurons, then a pointwise 1x1 convolution ---------------

SEPARABLE = [
    ((6, 7, 3), dict(filters=4, kernel_size=3, padding="same", depth_multiplier=2, activation="relu")),
    ((6, 7, 3), dict(filters=3, kernel_size=3, strides=2, use_bias=False)),
    ((6, 7, 3), dict(filters=2, kernel_size=2, dilation_rate=2, padding="same")),
    ((7, 7, 2), dict(filters=5, kernel_size=(3, 2), strides=(2, 1), depth_multiplier=3)),
    ((7, 3), dict(filters=3, kernel_size=3, padding="same", depth_multiplier=2)),
    ((9, 2), dict(filters=4, kernel_size=4, strides=2, activation="tanh")),
]


@pytest.mark.parametrize("shape, kwargs", SEPARABLE, ids=[str(i) for i in range(len(SEPARABLE))])
def test_separable_conv_splits_into_depthwise_neurons(shape, kwargs):
    layer = getattr(L, f"SeparableConv{len(shape) - 1}D")(name="sep", **kwargs)
    graph, result = check_model(sequential(shape, [layer, L.Dense(2)]))
    dw, sep = graph.layer("sep/depthwise"), graph.layer("sep")
    assert "sep/depthwise" not in result.errors and "sep" in result.errors  # only Keras layers compared
    assert dw.part_of == "sep" and sep.part_of is None and sep.inbound == ["sep/depthwise"]
    assert dw.type == f"DepthwiseConv{len(shape) - 1}D" and dw.index + 1 == sep.index
    mult, cin = kwargs.get("depth_multiplier", 1), shape[-1]
    assert dw.output.shape == (*sep.output.shape[:-1], cin * mult)
    assert dw.output.offset + dw.output.size == sep.output.offset  # its ids come right before the layer's
    assert sep.output.offset + sep.output.size == graph.layers[-1].output.offset
    positions = int(np.prod(sep.output.shape[:-1]))
    p = plan(graph)
    assert p.layer("sep").edges == positions * cin * mult * kwargs["filters"]
    edges = layer_edges(graph, "sep")
    assert {e[3] for e in edges} == {"pointwise"} and {e[3] for e in layer_edges(graph, "sep/depthwise")} == {"depthwise"}
    assert dw.params + sep.params == layer_params(layer)


def layer_params(layer) -> int:
    return int(sum(np.prod(w.shape) for w in layer.weights))


def test_separable_conv_channel_and_layer_granularity():
    model = sequential((6, 6, 3), [L.SeparableConv2D(4, 3, depth_multiplier=2, name="sep")])
    graph, _ = check_model(model)
    channel = extract(graph, None, granularity="channel")
    by_name = {e["name"]: e for e in channel.manifest["layers"]}
    assert by_name["sep/depthwise"]["nodes"] == 6 and by_name["sep/depthwise"]["edges"] == 6
    assert by_name["sep"]["nodes"] == 4 and by_name["sep"]["edges"] == 6 * 4
    layer = extract(graph, None, granularity="layer")
    assert [e["name"] for e in layer.manifest["layers"]][-2:] == ["sep/depthwise", "sep"]


def test_separable_conv_replays_from_an_extraction_folder(tmp_path):
    from pipeline.model import walk
    from pipeline.replay import verify

    model = sequential((5, 6, 2), [L.SeparableConv2D(3, 3, padding="same", depth_multiplier=2, activation="relu")])
    graph = walk(model)
    extract(graph, tmp_path / "x")
    result = verify(model, graph, folder=tmp_path / "x")
    assert result.ok and len(result.errors) == 1, result.errors


# --- Transposed convolutions ------------------------------------------------------------------

# input spatial shape, kernel, strides, padding, output_padding
TRANSPOSE_2D = [
    ((3, 4), 3, 1, "valid", None),
    ((3, 4), 3, 2, "valid", None),
    ((3, 5), 3, 2, "same", None),
    ((4, 3), 2, 2, "same", None),
    ((4, 3), 2, 3, "valid", None),  # stride larger than the kernel: output cells no input reaches
    ((3, 3), 4, 2, "same", None),  # even kernel
    ((3, 4), (3, 2), (2, 1), "same", None),
    ((5, 2), 1, 2, "valid", None),
    ((3, 3), 3, 2, "valid", 1),
    ((3, 4), 3, 2, "same", 1),
    ((3, 3), 5, 3, "same", (2, 0)),
    ((2, 3), 5, 1, "same", None),  # kernel larger than the input
]


@pytest.mark.parametrize("case", TRANSPOSE_2D, ids=[str(i) for i in range(len(TRANSPOSE_2D))])
def test_conv2d_transpose_replays(case):
    spatial, kernel, strides, padding, output_padding = case
    layer = L.Conv2DTranspose(3, kernel, strides=strides, padding=padding, output_padding=output_padding,
                              activation="relu", name="t")
    graph, _ = check_model(sequential((*spatial, 2), [layer]))
    spec = graph.layer("t")
    expected = sum(  # brute force: input position p feeds o = p * s - pad + k wherever it lands
        1 for p in np.ndindex(*spatial) for k in np.ndindex(*layer.kernel_size)
        if all(0 <= p[a] * layer.strides[a] - pad + k[a] < spec.output.shape[a]
               for a, pad in enumerate(_same_pad(spec, layer)))
    ) * 2 * 3
    assert plan(graph).layer("t").edges == expected


def _same_pad(spec, layer):
    from pipeline.layers.registry import get

    return get(spec.type).window(spec).pad


@pytest.mark.parametrize(
    "kwargs",
    [dict(kernel_size=3), dict(kernel_size=3, strides=2, padding="same"), dict(kernel_size=2, strides=3),
     dict(kernel_size=4, strides=2, padding="same", output_padding=1), dict(kernel_size=3, dilation_rate=2)],
)
def test_conv1d_transpose_replays(kwargs):
    check_model(sequential((5, 3), [L.Conv1DTranspose(2, **kwargs, activation="tanh")]))


@pytest.mark.parametrize("kwargs", [dict(kernel_size=2, strides=2), dict(kernel_size=3, strides=(1, 2, 2), padding="same")])
def test_conv3d_transpose_replays(kwargs):
    check_model(sequential((2, 3, 3, 2), [L.Conv3DTranspose(2, **kwargs)]))


def test_conv_transpose_in_a_model_and_at_channel_granularity():
    model = sequential((4, 4, 2), [L.Conv2D(3, 3, strides=2, padding="same"), L.Conv2DTranspose(2, 3, strides=2, padding="same", name="t"),
                                   L.Flatten(), L.Dense(2)])
    graph, _ = check_model(model)
    entry = {e["name"]: e for e in extract(graph, None, granularity="channel").manifest["layers"]}["t"]
    assert entry["nodes"] == 2 and entry["edges"] == 3 * 2


# --- GroupNormalization -----------------------------------------------------------------------

GROUPNORM = [
    ((4, 5, 6), dict(groups=3)),
    ((4, 5, 6), dict(groups=1, epsilon=1e-5)),
    ((3, 3, 4), dict(groups=-1)),  # one group per channel (instance normalisation)
    ((3, 3, 4), dict(groups=2, center=False, scale=False)),
    ((7, 4), dict(groups=2)),
    ((8,), dict(groups=4)),
    ((2, 2, 2, 4), dict(groups=2)),
]


@pytest.mark.parametrize("shape, kwargs", GROUPNORM, ids=[str(i) for i in range(len(GROUPNORM))])
def test_group_normalization_replays(shape, kwargs):
    conv = [getattr(L, f"Conv{len(shape) - 1}D")(shape[-1], 2, padding="same")] if len(shape) > 1 else [L.Dense(shape[-1])]
    model = sequential(shape, [*conv, L.GroupNormalization(name="gn", **kwargs), L.Activation("relu")])
    gn = model.get_layer("gn")
    if gn.weights:
        rng = np.random.default_rng(3)
        gn.set_weights([rng.normal(1.0, 0.5, w.shape).astype("float32") for w in gn.get_weights()])
    graph, _ = check_model(model)
    groups = kwargs["groups"] if kwargs["groups"] > 0 else shape[-1]
    size = int(np.prod(shape))
    assert plan(graph).layer("gn").edges == size * size // groups
    assert {e[3] for e in layer_edges(graph, "gn")} == {"groupnorm"}
    entry = {e["name"]: e for e in extract(graph, None, granularity="channel").manifest["layers"]}["gn"]
    assert entry["edges"] == shape[-1] * shape[-1] // groups


# --- PReLU with alpha per channel or per neuron -----------------------------------------------


@pytest.mark.parametrize("shape, shared", [((4, 5, 3), [1, 2]), ((4, 5, 3), None), ((4, 5, 3), [1]), ((6, 2), [1]), ((5,), None)])
def test_prelu_splits_into_a_negative_part(shape, shared):
    inner = [getattr(L, f"Conv{len(shape) - 1}D")(shape[-1], 2, padding="same")] if len(shape) > 1 else [L.Dense(shape[-1])]
    model = sequential(shape, [*inner, L.PReLU(shared_axes=shared, name="p"), L.Dense(2)])
    alpha = model.get_layer("p").get_weights()[0]
    model.get_layer("p").set_weights([np.random.default_rng(1).uniform(-0.5, 0.8, alpha.shape).astype("float32")])
    graph, result = check_model(model)
    neg, main = graph.layer("p/negative"), graph.layer("p")
    assert neg.part_of == "p" and "p/negative" not in result.errors and main.inbound[-1] == "p/negative"
    size = int(np.prod(shape))
    assert plan(graph).layer("p/negative").edges == size and plan(graph).layer("p").edges == 2 * size
    channel = len(shape) == 1 or (shared is not None and set(shared) == set(range(1, len(shape))))
    if channel:
        entry = {e["name"]: e for e in extract(graph, None, granularity="channel").manifest["layers"]}["p"]
        assert entry["edges"] == 2 * shape[-1]
    else:
        from pipeline.errors import UnsupportedLayerError

        with pytest.raises(UnsupportedLayerError, match="varies by position"):
            extract(graph, None, granularity="channel")


def test_prelu_with_one_alpha_stays_a_leaky_relu():
    graph, _ = check_model(sequential((3, 4, 2), [L.Conv2D(2, 2), L.PReLU(alpha_initializer="ones", shared_axes=[1, 2, 3], name="p")]))
    assert [s.name for s in graph.layers][-1] == "p" and plan(graph).layer("p").activation.startswith("relu(") and "negative_slope=1.0" in plan(graph).layer("p").activation
