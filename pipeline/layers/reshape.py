"""Layers that only re-index their input at inference: their output aliases the input's ids.

Flatten and Reshape are row-major in Keras, as are neuron ids, so no edge or neuron is needed.
Dropout-like layers are the identity at inference.
"""

from __future__ import annotations

from typing import Any

from pipeline.layers.base import ChannelRules, Part, Translator
from pipeline.spec import LayerSpec


class Alias(Translator):
    types = (
        "Flatten", "Reshape", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
        "GaussianDropout", "GaussianNoise", "AlphaDropout", "ActivityRegularization",
    )

    def aliases(self, config: dict[str, Any]) -> bool:
        return True

    def check(self, spec: LayerSpec) -> None:
        pass

    def channel_parts(self, cg: ChannelRules, spec: LayerSpec) -> list[Part]:
        return []  # no neurons of its own, hence no channels
