"""Every layer type the registry supports has a replay test: here, one small model per type,
replayed over its extracted edges against Keras (``check_model``). A type registered without an
example fails ``test_every_registered_type_has_an_example``, so a new translator cannot land
without the proof the guide asks for. The family tests (test_translators*.py) vary each type's
options; this file only guarantees that none is left out."""

from __future__ import annotations

import pytest

from pipeline.layers import registry
from tests.helpers import check_model, functional, keras, sequential

K = keras()
L = K.layers


def custom_scale(x):
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    return CustomScaleLayer(0.17)([x, L.Conv2D(2, 1)(x)])


def two(merge):
    """A merge of two branches of a 4x4x2 input."""
    return lambda x: merge([L.Conv2D(2, 1)(x), L.Conv2D(2, 1)(x)])


#: type -> (input shape, Sequential layers) or (input shape, functional body)
EXAMPLES = {
    "InputLayer": ((4, 4, 2), [L.Conv2D(2, 2)]),
    "Activation": ((4, 4, 2), [L.Conv2D(2, 2), L.Activation("tanh")]),
    "ActivityRegularization": ((4, 4, 2), [L.Conv2D(2, 2), L.ActivityRegularization(0.1)]),
    "Add": ((4, 4, 2), two(L.Add())),
    "AlphaDropout": ((4, 4, 2), [L.Conv2D(2, 2), L.AlphaDropout(0.2)]),
    "Average": ((4, 4, 2), two(L.Average())),
    "AveragePooling1D": ((6, 2), [L.AveragePooling1D(2, padding="same")]),
    "AveragePooling2D": ((5, 4, 2), [L.AveragePooling2D(2, padding="same")]),
    "AveragePooling3D": ((4, 3, 3, 2), [L.AveragePooling3D(2, padding="same")]),
    "BatchNormalization": ((4, 4, 2), [L.Conv2D(2, 2), L.BatchNormalization()]),
    "Concatenate": ((4, 4, 2), two(L.Concatenate())),
    "Conv1D": ((6, 2), [L.Conv1D(3, 3, padding="same")]),
    "Conv1DTranspose": ((5, 2), [L.Conv1DTranspose(2, 3, strides=2)]),
    "Conv2D": ((5, 4, 2), [L.Conv2D(3, 3, strides=2, padding="same")]),
    "Conv2DTranspose": ((3, 3, 2), [L.Conv2DTranspose(2, 3, strides=2, padding="same")]),
    "Conv3D": ((4, 4, 3, 1), [L.Conv3D(2, 2)]),
    "Conv3DTranspose": ((3, 3, 2, 1), [L.Conv3DTranspose(2, 2)]),
    "Cropping1D": ((6, 2), [L.Cropping1D((1, 2))]),
    "Cropping2D": ((5, 5, 2), [L.Cropping2D(((1, 0), (0, 2)))]),
    "Cropping3D": ((4, 4, 4, 1), [L.Cropping3D(1)]),
    "CustomScaleLayer": ((4, 4, 2), custom_scale),
    "Dense": ((5,), [L.Dense(3, activation="relu")]),
    "DepthwiseConv1D": ((6, 2), [L.DepthwiseConv1D(3, depth_multiplier=2)]),
    "DepthwiseConv2D": ((5, 5, 2), [L.DepthwiseConv2D(3, padding="same")]),
    "Dropout": ((4, 4, 2), [L.Conv2D(2, 2), L.Dropout(0.5)]),
    "ELU": ((4, 4, 2), [L.Conv2D(2, 2), L.ELU(0.7)]),
    "Flatten": ((3, 3, 2), [L.Flatten(), L.Dense(2)]),
    "GaussianDropout": ((4, 4, 2), [L.Conv2D(2, 2), L.GaussianDropout(0.2)]),
    "GaussianNoise": ((4, 4, 2), [L.Conv2D(2, 2), L.GaussianNoise(0.2)]),
    "GlobalAveragePooling1D": ((6, 2), [L.GlobalAveragePooling1D()]),
    "GlobalAveragePooling2D": ((4, 4, 2), [L.GlobalAveragePooling2D()]),
    "GlobalAveragePooling3D": ((3, 3, 3, 2), [L.GlobalAveragePooling3D()]),
    "GlobalMaxPooling1D": ((6, 2), [L.GlobalMaxPooling1D()]),
    "GlobalMaxPooling2D": ((4, 4, 2), [L.GlobalMaxPooling2D()]),
    "GlobalMaxPooling3D": ((3, 3, 3, 2), [L.GlobalMaxPooling3D()]),
    "GroupNormalization": ((4, 4, 4), [L.GroupNormalization(2)]),
    "LayerNormalization": ((4, 4, 3), [L.LayerNormalization()]),
    "LayerScale": ((4, 4, 3), "layer_scale"),
    "LeakyReLU": ((4, 4, 2), [L.Conv2D(2, 2), L.LeakyReLU(0.2)]),
    "MaxPooling1D": ((7, 2), [L.MaxPooling1D(3, strides=2, padding="same")]),
    "MaxPooling2D": ((5, 4, 2), [L.MaxPooling2D(2, padding="same")]),
    "MaxPooling3D": ((4, 3, 3, 2), [L.MaxPooling3D(2, padding="same")]),
    "Maximum": ((4, 4, 2), two(L.Maximum())),
    "Multiply": ((4, 4, 2), two(L.Multiply())),
    "Normalization": ((4, 4, 2), "normalization"),
    "PReLU": ((4, 4, 2), [L.Conv2D(2, 2), L.PReLU()]),
    "Permute": ((3, 4, 2), [L.Permute((2, 1, 3)), L.Conv2D(2, 2)]),
    "ReLU": ((4, 4, 2), [L.Conv2D(2, 2), L.ReLU(6.0)]),
    "Rescaling": ((4, 4, 2), [L.Rescaling(0.5, offset=-1.0)]),
    "Reshape": ((4, 4, 2), [L.Reshape((8, 4)), L.Conv1D(2, 2)]),
    "SeparableConv1D": ((6, 2), [L.SeparableConv1D(3, 3)]),
    "SeparableConv2D": ((5, 5, 2), [L.SeparableConv2D(3, 3, padding="same")]),
    "Softmax": ((5,), [L.Dense(4), L.Softmax()]),
    "SpatialDropout1D": ((6, 2), [L.Conv1D(2, 2), L.SpatialDropout1D(0.5)]),
    "SpatialDropout2D": ((4, 4, 2), [L.Conv2D(2, 2), L.SpatialDropout2D(0.5)]),
    "SpatialDropout3D": ((3, 3, 3, 1), [L.Conv3D(2, 2), L.SpatialDropout3D(0.5)]),
    "Subtract": ((4, 4, 2), two(L.Subtract())),
    "UpSampling1D": ((4, 2), [L.UpSampling1D(2)]),
    "UpSampling2D": ((3, 3, 2), [L.UpSampling2D(2)]),
    "UpSampling3D": ((2, 2, 2, 1), [L.UpSampling3D(2)]),
    "ZeroPadding1D": ((4, 2), [L.ZeroPadding1D(1), L.Conv1D(2, 2)]),
    "ZeroPadding2D": ((3, 3, 2), [L.ZeroPadding2D(((1, 0), (0, 1))), L.Conv2D(2, 2)]),
    "ZeroPadding3D": ((2, 2, 2, 1), [L.ZeroPadding3D(1), L.Conv3D(1, 2)]),
    "keras.ops.Add": ((4, 4, 2), lambda x: L.Conv2D(2, 1)(x) + 1.5),
    "keras.ops.Multiply": ((4, 4, 2), lambda x: 0.5 * L.Conv2D(2, 1)(x)),
    "keras.ops.Subtract": ((4, 4, 2), lambda x: 2.0 - L.Conv2D(2, 1)(x)),
    "keras.ops.TrueDivide": ((4, 4, 2), lambda x: L.Conv2D(2, 1)(x) / 4.0),
}


def build(name: str):
    shape, body = EXAMPLES[name]
    if body == "layer_scale":
        from keras.src.applications.convnext import LayerScale

        return functional(shape, lambda x: LayerScale(0.5, 3)(L.Conv2D(3, 1)(x)))
    if body == "normalization":
        norm = L.Normalization(mean=[0.5, -1.0], variance=[2.0, 0.25])
        return sequential(shape, [norm, L.Conv2D(2, 2)])
    if callable(body):
        return functional(shape, body)
    return sequential(shape, body)


def test_every_registered_type_has_an_example():
    assert set(EXAMPLES) == set(registry.supported())


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_type_replays(name):
    graph, _ = check_model(build(name), samples=1)
    assert name in {spec.type for spec in graph.layers}, f"the example of {name} does not contain it"
