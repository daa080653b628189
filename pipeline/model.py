"""Read a Keras model and walk its layer graph into plain data: tensors, shapes and id ranges.

Everything after this module works on a :class:`ModelGraph` (numpy weights, dict configs), so
extraction tasks are picklable and never import TensorFlow. Tensors are numbered in topological
order; each owns a contiguous id range, except tensors of re-indexing layers (Flatten, Reshape,
Dropout, ...) which alias their input's ids.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ModelError, UsageError

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
        return {
            "source": self.source,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "include_top": self.include_top,
            "weights": self.weights,
            "seed": self.seed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
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
    #: Folder of .npy files the weights are memory-mapped from (pipeline.graph_store), if any.
    weights_dir: str | None = None

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


def random_weights_note(spec: ModelSpec) -> str | None:
    """The notice a user must see when an application gets seeded random weights, else None."""
    if spec.weights is None and not Path(spec.source).exists():
        return f"note: {spec.source} uses seeded random weights (seed {spec.seed}); pass --weights for trained ones"
    return None


def parse_input_shape(text: str | None) -> tuple[int, ...] | None:
    """Parse ``H,W,C`` (any rank) into a tuple of positive ints."""
    if text is None or text == "":
        return None
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise UsageError(f"bad input shape {text!r}: expected positive integers like 32,32,3")
    return shape


def _quiet_tensorflow() -> None:
    """Import TensorFlow once with its C++ start-up chatter (written to fd 2) silenced."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if "tensorflow" in sys.modules:
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def application_names() -> list[str]:
    """keras.applications constructors, named in lower case with underscores."""
    _quiet_tensorflow()
    import keras

    names = {}
    for attr in dir(keras.applications):
        obj = getattr(keras.applications, attr)
        if callable(obj) and attr[:1].isupper():
            names[_snake(attr)] = attr
    return sorted(names)


def _snake(name: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    s = re.sub(r"(?<=[A-Z])(?=[A-Z][a-z])", "_", s)
    s = re.sub(r"(?<=[A-Za-z])(?=\d)", "_", s) if not re.search(r"VGG|ResNet\d|RegNet", name) else s
    return s.lower()


def _application(name: str):
    import keras

    wanted = name.lower().replace("-", "_")
    for attr in dir(keras.applications):
        obj = getattr(keras.applications, attr)
        if callable(obj) and attr[:1].isupper() and wanted in {_snake(attr), attr.lower()}:
            return obj
        if callable(obj) and attr[:1].isupper() and wanted.replace("_", "") == attr.lower():  # mobilenet_v2
            return obj
    return None


def load_model(spec: ModelSpec):
    """Build or read the Keras model a spec names (imports TensorFlow)."""
    _quiet_tensorflow()
    import keras

    path = Path(spec.source)
    if spec.source.endswith((".keras", ".h5", ".hdf5")) or path.exists():
        if not path.exists():
            raise ModelError(f"model file {spec.source} does not exist")
        try:
            model = _load_keras2_h5(path) or keras.models.load_model(path, compile=False)
        except Exception as err:  # keras raises many types for corrupt files
            raise ModelError(f"cannot read model file {spec.source}: {err}") from err
        if spec.input_shape is not None:
            raise UsageError("--input-shape applies to keras.applications names, not to model files")
        return model
    ctor = _application(spec.source)
    if ctor is None:
        raise ModelError(
            f"unknown model {spec.source!r}: give a .keras/.h5 file or a keras.applications name "
            "such as vgg16, vgg19, resnet50, mobilenet_v2"
        )
    weights = spec.weights
    if weights not in (None, "imagenet") and not Path(weights).exists():
        raise ModelError(f"weights file {weights} does not exist")
    keras.utils.set_random_seed(spec.seed)
    kwargs: dict[str, Any] = {"weights": None, "include_top": spec.include_top}
    if spec.input_shape is not None:
        kwargs["input_shape"] = spec.input_shape
    try:
        model = ctor(**kwargs)
    except ValueError as err:
        raise UsageError(f"{spec.source} cannot be built with input shape {spec.input_shape}: {err}") from err
    if weights is None:
        randomize_biases(model, spec.seed)
        randomize_batchnorm(model, spec.seed)
    else:
        try:
            model.load_weights(weights)
        except Exception as err:
            raise ModelError(
                f"cannot load weights {weights!r}: {err} (no downloads are possible offline: "
                "pass a local weights file)"
            ) from err
    return model


def _load_keras2_h5(path: Path):
    """Read an .h5 file whose config uses Keras 2's ``batch_input_shape``; None for other files.

    Keras 3 names it ``batch_shape`` on an InputLayer and misreads Keras 2's form on the first
    layer of a Sequential, so the config is rewritten to Keras 3's form before the weights load.
    """
    import json

    import h5py

    if path.suffix not in (".h5", ".hdf5"):
        return None
    with h5py.File(path, "r") as f:
        raw = f.attrs.get("model_config")
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    if "batch_input_shape" not in text:
        return None
    config = json.loads(text)
    layers = config["config"]["layers"] if isinstance(config["config"], dict) else config["config"]
    fixed = []
    for layer in layers:
        cfg = layer["config"]
        shape = cfg.pop("batch_input_shape", None)
        if shape is not None and layer["class_name"] == "InputLayer":
            cfg["batch_shape"] = shape
        elif shape is not None and config["class_name"] == "Sequential":
            fixed.append({"class_name": "InputLayer", "config": {"batch_shape": shape, "dtype": "float32", "name": f"{cfg['name']}_input"}})
        fixed.append(layer)
    if isinstance(config["config"], dict):
        config["config"]["layers"] = fixed
    else:
        config["config"] = fixed
    from keras.src.legacy.saving import saving_utils  # the reader Keras itself uses for .h5

    model = saving_utils.model_from_config(config)
    model.load_weights(path)
    return model


def randomize_biases(model, seed: int) -> None:
    """Give zero-initialised biases seeded random values, so replay tests exercise them."""
    rng = np.random.default_rng(seed + 1)
    for layer in model.layers:
        for var in layer.weights:
            if var.path.endswith("bias") or var.name == "bias":
                var.assign(rng.normal(0.0, 0.05, size=tuple(var.shape)).astype("float32"))


def randomize_batchnorm(model, seed: int = 0) -> None:
    """Give BatchNormalization layers seeded random gamma, beta, mean and positive variance.

    Left at their defaults (identity), BN would be untested by replay, and deep models whose BN
    never rescales (EfficientNetV2L) amplify float32 rounding until Keras's own float32 output
    differs from its float64 output by order 1.
    """
    import keras

    rng = np.random.default_rng(seed + 7)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights(
                [
                    (rng.uniform(0.5, 2.0, w.shape) if "variance" in v.path else rng.normal(0.0, 0.7, w.shape))
                    .astype("float32")
                    for v, w in zip(layer.weights, layer.get_weights(), strict=True)
                ]
            )


def _shape(tensor) -> tuple[int, ...]:
    dims = tuple(tensor.shape)[1:]
    if any(d is None for d in dims):
        raise ModelError(
            f"tensor {getattr(tensor, 'name', '?')} has unknown dimensions {dims}: build the model "
            "with a fixed input shape (--input-shape H,W,C, or keras.Input(shape=...))"
        )
    return tuple(int(d) for d in dims)


def read_weight(var) -> np.ndarray:
    """A numpy copy of a Keras variable's value (the default reader of :func:`walk`)."""
    return np.asarray(var.numpy())


def walk(model, spec: ModelSpec | None = None, reader: Callable[[Any], np.ndarray] = read_weight) -> ModelGraph:
    """Walk a built Keras model's layer graph (functional or Sequential) into a ModelGraph.

    ``reader`` turns each variable into an array; :mod:`pipeline.graph_store` passes one that
    writes it to a file and maps it back, so no second copy of the weights stays in memory.
    """
    from pipeline.layers import registry

    if not getattr(model, "built", False) or not getattr(model, "outputs", None):
        raise ModelError(
            "the model is not built: build it with a fixed input shape first, e.g. "
            "model.build((None, 32, 32, 3)) or start it with keras.Input(shape=(32, 32, 3))"
        )
    import keras

    # (operation, node, name prefix) in topological order; a nested model (keras.Model used as a
    # layer) is flattened into the outer graph: (None, [(its tensor, the tensor it stands for)], "")
    # entries bind its inputs and outputs, and its layers are named "<model>/<layer>".
    order: list[tuple[Any, Any, str]] = []
    seen_nodes: set[int] = set()
    layer_of_tensor: dict[int, str] = {}  # tensor -> name of the layer that made it
    bound: set[int] = set()  # input tensors of nested models

    def visit(tensor, prefix: str = "") -> None:
        if id(tensor) in bound:
            return
        op, node_index, _ = tensor._keras_history
        node = op._inbound_nodes[node_index]
        if id(node) in seen_nodes:
            return
        for t in node.input_tensors:
            visit(t, prefix)
        seen_nodes.add(id(node))
        if isinstance(op, keras.Model):
            inner_in, inner_out = list(op.inputs), list(op.outputs)
            if len(inner_in) != len(node.input_tensors) or len(inner_out) != len(node.output_tensors):
                raise ModelError(f"nested model {op.name!r} is called with a different structure than it was built with")
            bound.update(id(t) for t in inner_in)
            order.append((None, list(zip(inner_in, node.input_tensors, strict=True)), prefix))
            for t in inner_out:
                visit(t, f"{prefix}{op.name}/")
            order.append((None, list(zip(node.output_tensors, inner_out, strict=True)), prefix))
            return
        order.append((op, node, prefix))

    for t in model.outputs:
        visit(t)

    tensors: dict[int, Tensor] = {}
    layers: list[LayerSpec] = []
    offset = 0
    seen_ops: set[int] = set()
    for op, node, prefix in order:
        if op is None:  # a nested model's boundary: its tensors are the ones it stands for
            for dst, src in node:
                tensors[id(dst)], layer_of_tensor[id(dst)] = tensors[id(src)], layer_of_tensor[id(src)]
            continue
        name = prefix + op.name
        type_name = type(op).__name__
        if id(op) in seen_ops:
            raise ModelError(
                f"layer {op.name!r} ({type_name}) is applied more than once (a shared layer); "
                "shared layers are not supported yet: give each application its own layer"
            )
        seen_ops.add(id(op))
        if len(node.output_tensors) != 1:
            raise ModelError(f"layer {op.name!r} ({type_name}) has {len(node.output_tensors)} outputs; one is supported")
        out_t = node.output_tensors[0]
        inputs = [tensors[id(t)] for t in node.input_tensors]
        if not hasattr(op, "weights"):  # a keras.ops call traced into the graph, not a layer
            from pipeline.layers.ops import describe_call

            type_name, config = describe_call(op, node)  # UnsupportedLayerError unless elementwise
        else:
            config = op.get_config()
        translator = registry.get(type_name, name)
        shape = _shape(out_t)
        if translator.aliases(config):
            src = inputs[0]
            out = Tensor(key=len(tensors), shape=shape, offset=src.offset, owner=src.owner, alias=True)
        else:
            out = Tensor(key=len(tensors), shape=shape, offset=offset, owner=name)
            offset += out.size
        tensors[id(out_t)] = out
        weights = {_weight_name(v): reader(v) for v in getattr(op, "weights", ())}
        inbound = [layer_of_tensor[id(t)] for t in node.input_tensors]
        layer_of_tensor[id(out_t)] = name
        layers.append(
            LayerSpec(
                index=len(layers),
                name=name,
                type=type_name,
                config=config,
                weights=weights,
                inputs=inputs,
                output=out,
                inbound=inbound,
                params=int(sum(int(np.prod(w.shape)) for w in weights.values())),
            )
        )
        parts = translator.split(layers[-1])  # [*parts owning ids right before the layer's, the layer]
        if len(parts) > 1:
            layers[-1:] = parts
            for i, part in enumerate(parts):
                part.index = len(layers) - len(parts) + i
            tensors[id(out_t)] = parts[-1].output
            last = max((p.output for p in parts if not p.output.alias), key=lambda t: t.offset, default=None)
            offset = max(offset, last.offset + last.size) if last is not None else offset
    for spec_ in layers:
        registry.get(spec_.type, spec_.name).check(spec_)
    return ModelGraph(name=model.name, layers=layers, total_neurons=offset, spec=spec)


def _weight_name(var) -> str:
    return var.path.rsplit("/", 1)[-1]


def build(spec: ModelSpec, reader: Callable[[Any], np.ndarray] = read_weight) -> tuple[Any, ModelGraph]:
    """Load the model a spec names and walk it (``reader`` as in :func:`walk`)."""
    model = load_model(spec)
    return model, walk(model, spec, reader)
