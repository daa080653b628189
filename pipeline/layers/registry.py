"""The registry of layer translators: adding a layer type is one module and one line here."""

from __future__ import annotations

from pipeline.errors import UnsupportedLayerError
from pipeline.layers.activation import Activation, Input
from pipeline.layers.advanced_activation import ParamActivation, PReLU
from pipeline.layers.base import Translator, register, registered, supported_types
from pipeline.layers.conv import Conv
from pipeline.layers.dense import Dense
from pipeline.layers.depthwise import Depthwise, Separable
from pipeline.layers.global_pooling import GlobalPooling
from pipeline.layers.layernorm import GroupNorm, LayerNorm, LayerScale
from pipeline.layers.merge import Concatenate, Elementwise
from pipeline.layers.normalization import BatchNorm, Normalization, Rescaling
from pipeline.layers.ops import OpsCall
from pipeline.layers.pooling import Pooling
from pipeline.layers.reshape import Alias
from pipeline.layers.spatial import Cropping, Permute, UpSampling, ZeroPadding
from pipeline.layers.transpose import ConvTranspose

TRANSLATORS: list[Translator] = [Input(), Conv(), Pooling(), Dense(), Alias(), Activation()]
TRANSLATORS.append(BatchNorm())
TRANSLATORS.append(Rescaling())
TRANSLATORS.append(Normalization())
TRANSLATORS.append(Elementwise())
TRANSLATORS.append(Concatenate())
TRANSLATORS.append(GlobalPooling())
TRANSLATORS.append(Depthwise())
TRANSLATORS.append(Separable())
TRANSLATORS.append(ZeroPadding())
TRANSLATORS.append(Cropping())
TRANSLATORS.append(UpSampling())
TRANSLATORS.append(Permute())
TRANSLATORS.append(ParamActivation())
TRANSLATORS.append(OpsCall())
TRANSLATORS.append(LayerNorm())
TRANSLATORS.append(LayerScale())
TRANSLATORS.append(ConvTranspose())
TRANSLATORS.append(GroupNorm())
TRANSLATORS.append(PReLU())

register(*TRANSLATORS)

#: Why some well-known layer types can never have a translator (said instead of near names).
NEVER: dict[str, str] = {
    "Lambda": (
        "it runs arbitrary Python code: cnngraph neither loads it from files nor can turn it into "
        "edges; build the model from Keras layers or keras.ops calls instead"
    ),
    "TFSMLayer": "it wraps a TensorFlow SavedModel, whose operations cannot be walked; load a .keras model",
}


def supported() -> list[str]:
    """Keras class names that have a translator."""
    return supported_types()


def get(layer_type: str, layer_name: str = "?") -> Translator:
    """The translator for a Keras class name, or a clear UnsupportedLayerError."""
    tr = registered(layer_type)
    if tr is None:
        raise UnsupportedLayerError(layer_name, layer_type, supported(), NEVER.get(layer_type, ""))
    return tr
