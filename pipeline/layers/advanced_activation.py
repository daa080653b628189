"""Parametrised activation layers: LeakyReLU, ELU, Softmax, and PReLU with one shared alpha.

Like :class:`~pipeline.layers.activation.Activation`: identity edges into new neurons whose
activation name carries the parameters (``relu(max_value=None,negative_slope=0.3,threshold=0.0)``,
``elu(alpha=0.5)``), so the name alone determines the function replay applies.

PReLU's alpha is a weight per neuron (per channel with ``shared_axes``), and a layer's neurons share
one activation name: only a PReLU whose alpha holds a single value is expressible (it is a leaky
ReLU). Others are refused with that reason.
"""

from __future__ import annotations

import numpy as np

from pipeline import activations
from pipeline.layers.activation import Activation
from pipeline.model import LayerSpec


class ParamActivation(Activation):
    types = ("LeakyReLU", "ELU", "Softmax", "PReLU")

    def check(self, spec: LayerSpec) -> None:
        if spec.type == "Softmax":
            axis = spec.config.get("axis", -1)
            axes = [axis] if isinstance(axis, int) else list(axis)
            rank = len(spec.output.shape) + 1
            if len(axes) != 1 or int(axes[0]) % rank != rank - 1:
                self.unsupported(spec, f"axis {axis!r}: only the last axis is supported")
        if spec.type == "PReLU":
            alpha = np.unique(np.asarray(spec.weights["alpha"]))
            if alpha.size != 1:
                self.unsupported(
                    spec,
                    f"alpha has {alpha.size} distinct values; a per-channel or per-neuron alpha cannot be "
                    "expressed by one activation name per layer",
                )
        super().check(spec)

    def activation(self, spec: LayerSpec) -> str:
        cfg = spec.config
        if spec.type == "LeakyReLU":
            return activations.relu_name(None, cfg.get("negative_slope", cfg.get("alpha", 0.3)), 0.0)
        if spec.type == "ELU":
            return activations.elu_name(cfg.get("alpha", 1.0))
        if spec.type == "PReLU":
            return activations.relu_name(None, float(np.asarray(spec.weights["alpha"]).reshape(-1)[0]), 0.0)
        return "softmax"
