"""Reading models: Keras 2 and 3 file conventions, and clear errors for models we cannot walk."""

from __future__ import annotations

import json

import h5py
import keras
import pytest

from pipeline.errors import ModelError, UnsupportedLayerError
from pipeline.model import ModelSpec, load_model, walk
from pipeline.replay import verify


def _keras2_style(path, drop_input_layer: bool) -> None:
    """Rewrite a legacy .h5 file's config the way Keras 2 wrote it (batch_input_shape)."""
    with h5py.File(path, "r+") as f:
        raw = f.attrs["model_config"]
        cfg = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        layers = cfg["config"]["layers"]
        shape = layers[0]["config"].pop("batch_shape")
        if drop_input_layer:
            layers.pop(0)
            layers[0]["config"]["batch_input_shape"] = shape
        else:
            layers[0]["config"]["batch_input_shape"] = shape
        f.attrs["model_config"] = json.dumps(cfg)


@pytest.mark.parametrize("drop_input_layer", [False, True])
def test_keras2_h5_batch_input_shape(tmp_path, drop_input_layer):
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [keras.Input((6, 5, 2)), keras.layers.Conv2D(3, 3, activation="relu"), keras.layers.Flatten(), keras.layers.Dense(2)]
    )
    path = tmp_path / "k2.h5"
    model.save(path)
    _keras2_style(path, drop_input_layer)
    loaded = load_model(ModelSpec(str(path)))
    graph = walk(loaded)
    assert [s.type for s in graph.layers] == ["InputLayer", "Conv2D", "Flatten", "Dense"]
    assert graph.layers[0].output.shape == (6, 5, 2)
    assert verify(loaded, graph, samples=1).ok


def test_unbuilt_model_says_how_to_fix():
    with pytest.raises(ModelError, match=r"the model is not built: build it with a fixed input shape"):
        walk(keras.Sequential([keras.layers.Dense(2)]))


def test_unknown_dimensions_say_how_to_fix():
    inp = keras.Input((None, None, 3))
    model = keras.Model(inp, keras.layers.Conv2D(2, 3)(inp))
    with pytest.raises(ModelError, match=r"unknown dimensions .*--input-shape H,W,C"):
        walk(model)


def test_shared_layer_is_refused():
    inp = keras.Input((4, 4, 2))
    shared = keras.layers.Conv2D(2, 1, name="twice")
    model = keras.Model(inp, shared(shared(inp)))
    with pytest.raises(ModelError, match=r"layer 'twice' \(Conv2D\) is applied more than once"):
        walk(model)


@pytest.mark.parametrize("name", ["vgg16", "VGG16", "mobilenet_v2"])
def test_application_names(name):
    model = load_model(ModelSpec(name, (32, 32, 3), include_top=False))
    assert model.name.lower().replace("_", "").startswith(name.lower().replace("_", "")[:6])


def test_random_biases_are_seeded():
    a = walk(load_model(ModelSpec("vgg16", (32, 32, 3), include_top=False, seed=7)))
    b = walk(load_model(ModelSpec("vgg16", (32, 32, 3), include_top=False, seed=7)))
    c = walk(load_model(ModelSpec("vgg16", (32, 32, 3), include_top=False, seed=8)))
    bias = lambda g: g.layer("block1_conv1").weights["bias"]  # noqa: E731
    assert (bias(a) == bias(b)).all() and not (bias(a) == bias(c)).all() and bias(a).any()


def test_keras2_h5_is_rebuilt_in_safe_mode(tmp_path):
    """Past the Lambda check, Keras itself refuses the Python code of a Keras 2 style file."""
    from pipeline.model_files import load_keras2_h5 as _load_keras2_h5
    from pipeline.model_files import model_config as _model_config

    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2), keras.layers.Dense(2)])
    path = tmp_path / "lambda.h5"
    model.save(path)
    _keras2_style(path, drop_input_layer=True)
    with pytest.raises(ValueError, match="arbitrary code execution"):
        _load_keras2_h5(path, _model_config(path))


def test_lambda_layer_in_memory_says_why():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2, name="twice")])
    with pytest.raises(UnsupportedLayerError, match=r"^layer 'twice' of type Lambda is not supported \(it runs arbitrary Python code"):
        walk(model)


@pytest.mark.parametrize(("version", "safe"), [("3.15.1", True), ("3.16.0", True), ("3.12.4", True),
                                               ("3.13.1", False), ("3.14.0", False), ("3.12.1", False)])
def test_keras_with_known_load_flaws_is_refused(version, safe):
    from pipeline.model_files import require_safe_keras as _require_safe_keras

    if safe:
        _require_safe_keras(version)
    else:
        with pytest.raises(ModelError, match=r"pip install 'keras>=3\.15\.1'"):
            _require_safe_keras(version)
