"""Replay equality for the translators behind the last keras.applications families: elementwise
keras.ops calls (MobileNetV3's hard-sigmoid), nested models, LayerNormalization and LayerScale
(ConvNeXt), and the whole models at their smallest no-top input."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import UnsupportedLayerError
from pipeline.model import ModelSpec, load_model, randomize_batchnorm, walk
from pipeline.plan import plan
from tests.helpers import check_model, functional, keras, sequential

K = keras()
L = K.layers


# --- keras.ops elementwise calls ------------------------------------------------------------

SCALAR_OPS = {
    "x+3": lambda x: x + 3.0,
    "3+x": lambda x: 3.0 + x,
    "x-2": lambda x: x - 2.0,
    "2-x": lambda x: 2.0 - x,
    "x*s": lambda x: x * (1.0 / 6.0),
    "s*x": lambda x: -0.5 * x,
    "x/4": lambda x: x / 4.0,
    "int": lambda x: x + 2,
}


@pytest.mark.parametrize("name", list(SCALAR_OPS))
def test_scalar_ops_replay_as_affine_maps(name):
    model = functional((3, 4, 2), lambda x: L.ReLU(6.0)(SCALAR_OPS[name](L.Conv2D(3, 2, name="c")(x))))
    graph, _ = check_model(model)
    op = next(s for s in graph.layers if s.type.startswith("keras.ops."))
    assert plan(graph).layer(op.name).edges == op.output.size


def test_hard_sigmoid_and_hard_swish_as_mobilenet_v3_writes_them():
    def body(x):
        x = L.Conv2D(4, 3, padding="same")(x)
        hs = L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)
        return L.Multiply()([x, hs])

    check_model(functional((5, 5, 3), body))


TENSOR_OPS = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b}


@pytest.mark.parametrize("name", list(TENSOR_OPS))
def test_ops_between_tensors_replay_as_merges(name):
    def body(x):
        a = L.Conv2D(3, 1, name="a")(x)
        g = L.GlobalAveragePooling2D(keepdims=True)(a)  # broadcast over positions
        return TENSOR_OPS[name](TENSOR_OPS[name](a, L.Conv2D(3, 1, name="b")(x)), g)

    check_model(functional((3, 3, 2), body))


@pytest.mark.parametrize("body", [lambda x: K.ops.exp(x), lambda x: 2.0 / x, lambda x: x / (x + 1.0)],
                         ids=["exp", "number/x", "x/y"])
def test_other_ops_are_refused_clearly(body):
    model = functional((3, 3, 2), lambda x: body(L.Conv2D(2, 1)(x)))
    with pytest.raises(UnsupportedLayerError, match=r"keras\.ops\.\w+"):
        walk(model)


# --- nested models, LayerNormalization, LayerScale -------------------------------------------

def test_nested_sequential_and_functional_models_are_flattened():
    stem = K.Sequential([K.Input((6, 6, 3)), L.Conv2D(4, 2, strides=2, name="conv"), L.LayerNormalization(name="ln")],
                        name="stem")
    inner_in = K.Input((3, 3, 4))
    block = K.Model(inner_in, L.Conv2D(4, 1, name="pw")(inner_in) + inner_in, name="block")
    model = functional((6, 6, 3), lambda x: L.Flatten()(block(stem(x))))
    graph, result = check_model(model)
    assert {"stem/conv", "stem/ln", "block/pw"} <= set(result.errors)
    assert graph.layer("block/pw").inbound == ["stem/ln"]


LN_CASES = [((4, 5, 6), 1e-3, True, True), ((4, 5, 6), 1e-6, False, True), ((3, 7), 0.1, True, False), ((8,), 1e-3, True, True)]


@pytest.mark.parametrize("case", LN_CASES, ids=[str(c) for c in LN_CASES])
def test_layernorm_replays(case):
    shape, eps, center, scale = case
    model = sequential(shape, [L.Dense(shape[-1], name="d"), L.LayerNormalization(epsilon=eps, center=center, scale=scale, name="ln")])
    rng = np.random.default_rng(1)
    ln = model.get_layer("ln")
    ln.set_weights([rng.normal(0.5, 1.0, w.shape).astype("float32") for w in ln.get_weights()])
    graph, _ = check_model(model)
    assert plan(graph).layer("ln").edges == graph.layer("ln").output.size * shape[-1]


def test_layernorm_over_other_axes_is_refused():
    model = sequential((4, 5, 6), [L.LayerNormalization(axis=[1, 2, 3])])
    with pytest.raises(UnsupportedLayerError, match="only the last"):
        walk(model)


def test_layerscale_replays():
    from keras.src.applications.convnext import LayerScale

    layer = LayerScale(0.5, 3, name="ls")
    model = sequential((4, 4, 3), [L.Conv2D(3, 1), layer])
    layer.set_weights([np.array([0.5, -2.0, 3.0], "float32")])
    check_model(model)


# --- whole keras.applications models ----------------------------------------------------------

@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mobilenet_v3_large", "convnext_tiny"])
def test_application_replays_at_32(name):
    model = load_model(ModelSpec(name, (32, 32, 3), include_top=False))
    randomize_batchnorm(model)
    rng = np.random.default_rng(3)
    for layer in model.layers:  # non-trivial LayerNormalization and LayerScale too
        if type(layer).__name__ in ("LayerNormalization", "LayerScale"):
            layer.set_weights([rng.normal(0.5, 0.5, w.shape).astype("float32") for w in layer.get_weights()])
    graph, result = check_model(model, samples=1)
    assert result.worst < 1e-4
