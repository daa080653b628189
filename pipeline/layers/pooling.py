"""Max and average pooling (1-D, 2-D, 3-D): an edge from every window member to its output.

Max pooling edges have weight 1 (replay takes the maximum: every possible choice). Average pooling
edges have weight 1 / (number of in-bounds members), as TensorFlow excludes padding.

Keras configs give ``padding`` 'valid' or 'same'. Front ends may give explicit ``(before, after)``
pads per axis instead (a list; :meth:`Window.explicit`) and a ``dilation_rate`` (ONNX MaxPool):
a window then covers only its members inside the input, so max and average stay exact.
"""

from __future__ import annotations

import numpy as np

from pipeline.layers.base import ChannelRules, Part
from pipeline.layers.conv import Windowed
from pipeline.layers.window import Window
from pipeline.schema import Kind
from pipeline.spec import LayerSpec


class Pooling(Windowed):
    types = (
        "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
        "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    )
    kernel_key, dilation_key = "pool_size", "_none"

    def window(self, spec: LayerSpec) -> Window:
        cfg = spec.config
        padding = cfg.get("padding", "valid")
        if isinstance(padding, str) and "dilation_rate" not in cfg:
            return super().window(spec)  # Keras pooling: no dilation
        args = (spec.inputs[0].shape[:-1], spec.output.shape[:-1], cfg["pool_size"],
                cfg.get("strides") or cfg["pool_size"], cfg.get("dilation_rate", 1))
        if isinstance(padding, str):
            return Window.make(*args, padding.lower())
        return Window.explicit(*args, padding)

    def activation(self, spec: LayerSpec) -> str:
        return "linear"

    def kind_of(self, spec: LayerSpec) -> str:
        return Kind.MAX_POOL if spec.type.startswith("Max") else Kind.AVG_POOL

    def pair_ids(self, spec: LayerSpec) -> tuple[np.ndarray, np.ndarray]:
        c = np.arange(spec.output.shape[-1], dtype=np.int64)
        return c, c

    def kernel(self, spec: LayerSpec) -> None:
        return None

    def offset_weights(self, spec: LayerSpec, kernel: None, offset: tuple[int, ...]) -> np.ndarray:
        return np.ones(spec.output.shape[-1], np.float32)

    def position_weights(self, spec: LayerSpec, window: Window, lo: int, hi: int) -> np.ndarray | None:
        return None if spec.type.startswith("Max") else 1.0 / window.members(lo, hi)

    def channel_parts(self, cg: ChannelRules, spec: LayerSpec) -> list[Part]:
        kind = Kind.MAX_POOL if "Max" in spec.type else Kind.AVG_POOL
        return [cg.diagonal(spec, spec.inputs[0], 1.0, kind)]
