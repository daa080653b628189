"""Activation functions in numpy, by Keras name, for replay.

Parametrised activations are named like ``relu(max_value=6,negative_slope=0.1,threshold=0)``
so that the name alone determines the function.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

Fn = Callable[[np.ndarray], np.ndarray]


def _softmax(x: np.ndarray) -> np.ndarray:  # over the last axis (channels)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _erf(x: np.ndarray) -> np.ndarray:
    from math import erf

    return np.vectorize(erf, otypes=[np.float64])(x)


def _gelu(x: np.ndarray) -> np.ndarray:  # Keras default: approximate=False
    return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))


def _gelu_tanh(x: np.ndarray) -> np.ndarray:  # gelu(approximate=True); ONNX Gelu(approximate='tanh')
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


_SIMPLE: dict[str, Fn] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "softmax": _softmax,
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "selu": lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(np.minimum(x, 0))),
    "softplus": lambda x: np.logaddexp(0.0, x),
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "swish": lambda x: x * _sigmoid(x),
    "silu": lambda x: x * _sigmoid(x),
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "erf": _erf,
    "exponential": np.exp,
    "hard_sigmoid": lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "hard_silu": lambda x: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "hard_swish": lambda x: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
}

#: Activations that mix neurons (the same position, all channels): replay groups them.
CHANNELWISE = frozenset({"softmax"})


def relu_name(max_value: float | None, negative_slope: float, threshold: float) -> str:
    """The name of a (possibly parametrised) ReLU."""
    if max_value is None and not negative_slope and not threshold:
        return "relu"
    if max_value is not None and float(max_value) == 6.0 and not negative_slope and not threshold:
        return "relu6"
    return f"relu(max_value={max_value},negative_slope={float(negative_slope)},threshold={float(threshold)})"


def elu_name(alpha: float) -> str:
    """The name of an ELU with the given alpha."""
    return "elu" if float(alpha) == 1.0 else f"elu(alpha={float(alpha)!r})"


def hard_sigmoid_name(alpha: float, beta: float) -> str:
    """The name of ``max(0, min(1, alpha * x + beta))`` (Keras's hard_sigmoid has alpha 1/6, beta 0.5)."""
    return f"hard_sigmoid(alpha={float(alpha)!r},beta={float(beta)!r})"


def _param_relu(text: str) -> Fn:
    args = dict(kv.split("=") for kv in text.split(","))
    top = None if args["max_value"] == "None" else float(args["max_value"])
    slope, thr = float(args["negative_slope"]), float(args["threshold"])

    def fn(x: np.ndarray) -> np.ndarray:
        y = np.where(x >= thr, x, slope * (x - thr))
        return y if top is None else np.minimum(y, top)

    return fn


def get(name: str) -> Fn:
    """The numpy function for an activation name; KeyError names the supported ones."""
    if name in _SIMPLE:
        return _SIMPLE[name]
    m = re.fullmatch(r"relu\((.*)\)", name)
    if m:
        return _param_relu(m.group(1))
    m = re.fullmatch(r"elu\(alpha=(.*)\)", name)
    if m:
        alpha = float(m.group(1))
        return lambda x: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))
    m = re.fullmatch(r"hard_sigmoid\(alpha=(.*),beta=(.*)\)", name)
    if m:
        alpha, beta = float(m.group(1)), float(m.group(2))
        return lambda x: np.clip(alpha * x + beta, 0.0, 1.0)
    raise KeyError(f"activation {name!r} is not supported; supported: {', '.join(sorted(_SIMPLE))}")
