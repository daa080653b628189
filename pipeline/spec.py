"""Plain data of a walked model: how to obtain it, its tensors, its layers and their graph.

No TensorFlow, no translators: every stage after the walk (layers, plan, extract, replay, export)
works on these, so extraction tasks pickle cheaply and run in worker processes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import UsageError

#: Seed used when no weights are given.
DEFAULT_SEED = 0


@dataclass(frozen=True)
class ModelSpec:
    """How to obtain a model: a keras.applications name or a file, plus build options."""

    source: str
    input_shape: tuple[int, ...] | None = None
    include_top: bool = True
    weights: str | None = None
    seed: int = DEFAULT_SEED

    def to_json(self) -> dict[str, Any]:
        """The spec as the manifest's ``model`` entry records it."""
        return {
            "source": self.source,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "include_top": self.include_top,
            "weights": self.weights,
            "seed": self.seed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        """The spec a manifest's ``model`` entry (or :meth:`to_json`) describes."""
        shape = data.get("input_shape")
        return cls(
            source=data["source"],
            input_shape=tuple(shape) if shape else None,
            include_top=data.get("include_top", True),
            weights=data.get("weights"),
            seed=data.get("seed", DEFAULT_SEED),
        )


@dataclass
class Tensor:
    """A materialised tensor (batch axis dropped) and the neuron ids it occupies."""

    key: int
    shape: tuple[int, ...]
    offset: int
    owner: str  # name of the layer whose neurons these are
    alias: bool = False  # True when the ids belong to an earlier tensor

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass
class LayerSpec:
    """One layer application in topological order, as plain data."""

    index: int
    name: str
    type: str
    config: dict[str, Any]
    weights: dict[str, np.ndarray]
    inputs: list[Tensor]
    output: Tensor
    inbound: list[str] = field(default_factory=list)
    params: int = 0
    #: The Keras layer this spec is a part of, when its translator splits one layer into several
    #: specs (``<sep>/depthwise`` of a SeparableConv); None for a Keras layer's own spec. Replay
    #: compares only Keras layers' own specs with Keras.
    part_of: str | None = None

    @property
    def makes_neurons(self) -> bool:
        return not self.output.alias


@dataclass
class ModelGraph:
    """The walked layer graph of one model."""

    name: str
    layers: list[LayerSpec]
    total_neurons: int
    spec: ModelSpec | None = None
    #: Folder of .npy files the weights are memory-mapped from (pipeline.model_store), if any.
    weights_dir: str | None = None
    #: Where the model and its weights came from (:func:`pipeline.model_files.provenance`), recorded when walked.
    provenance: dict[str, Any] | None = None

    def layer(self, name: str) -> LayerSpec:
        for spec in self.layers:
            if spec.name == name:
                return spec
        raise UsageError(f"no layer named {name!r}; layers: {', '.join(s.name for s in self.layers)}")

    def select(self, layer_range: str | None) -> list[LayerSpec]:
        """Layers in ``FIRST:LAST`` (names or indexes, inclusive; either side may be empty)."""
        if not layer_range:
            return list(self.layers)
        if ":" not in layer_range:
            raise UsageError(f"bad layer range {layer_range!r}: expected FIRST:LAST, e.g. block1_conv1:block2_pool")
        first, last = layer_range.split(":", 1)
        lo = self._position(first) if first else 0
        hi = self._position(last) if last else len(self.layers) - 1
        if lo > hi:
            raise UsageError(f"bad layer range {layer_range!r}: {first} comes after {last}")
        return self.layers[lo : hi + 1]

    def _position(self, token: str) -> int:
        if re.fullmatch(r"-?\d+", token):
            i = int(token)
            if not -len(self.layers) <= i < len(self.layers):
                raise UsageError(f"layer index {i} out of range 0..{len(self.layers) - 1}")
            return i % len(self.layers)
        return self.layers.index(self.layer(token))
