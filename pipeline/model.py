"""Read a Keras model and walk its layer graph into plain data: tensors, shapes and id ranges.

Everything after this module works on a :class:`~pipeline.spec.ModelGraph` (numpy weights, dict
configs), so extraction tasks are picklable and never import TensorFlow. Tensors are numbered in
topological order; each owns a contiguous id range, except tensors of re-indexing layers (Flatten,
Reshape, Dropout, ...) which alias their input's ids. Model files, weights and provenance live in
:mod:`pipeline.model_files`; the plain data in :mod:`pipeline.spec` (both re-exported here).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ModelError, UsageError
from pipeline.model_files import (
    DOWNLOAD_TIMEOUT,
    IN_MEMORY_WEIGHTS,
    MODEL_FILE_SUFFIXES,
    MODEL_FILE_WEIGHTS,
    ONNX_SUFFIX,
    SAFE_KERAS,
    build_imagenet,
    check_provenance,
    is_model_file,
    is_torchvision,
    load_weights_file,
    model_record,
    provenance,
    quiet_tensorflow,
    random_weights_note,
    read_model_file,
)
from pipeline.spec import DEFAULT_SEED, LayerSpec, ModelGraph, ModelSpec, Tensor

__all__ = [
    "DEFAULT_SEED", "DOWNLOAD_TIMEOUT", "IN_MEMORY_WEIGHTS", "MODEL_FILE_SUFFIXES", "MODEL_FILE_WEIGHTS", "SAFE_KERAS",
    "LayerSpec", "ModelGraph", "ModelSpec", "Tensor", "build", "check_provenance",
    "is_model_file", "load_model", "model_record", "parse_input_shape", "provenance", "random_weights_note",
    "randomize_batchnorm", "randomize_biases", "read_weight", "walk", "walk_onnx", "walk_torch",
]


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


def _unknown_model(name: str) -> ModelError:
    """The error for a name that is neither a file nor an application, with the closest names."""
    import difflib

    import keras

    names = {attr.lower(): attr.lower() for attr in dir(keras.applications)
             if attr[:1].isupper() and callable(getattr(keras.applications, attr))}
    close = difflib.get_close_matches(name.lower().replace("_", "").replace("-", ""), list(names), n=3)
    if close:
        said = close[0] if len(close) == 1 else f"{', '.join(close[:-1])} or {close[-1]}"
        return ModelError(f"unknown model {name!r}: did you mean {said}? "
                          "(a keras.applications name, or a .keras/.h5/.onnx file)")
    return ModelError(
        f"unknown model {name!r}: give a .keras/.h5/.onnx file or a keras.applications name "
        "such as vgg16, vgg19, resnet50, mobilenet_v2"
    )


def _onnx_builder() -> Callable[..., Any]:
    """pipeline.onnx.build_onnx, or the error that says how to install the onnx extra."""
    try:
        from pipeline.onnx import build_onnx
    except ImportError as err:
        raise ModelError(f"reading .onnx files needs onnx and onnxruntime ({err}): "
                         "pip install 'cnngraph[onnx]'") from err
    return build_onnx


def _torch_builder() -> Callable[..., Any]:
    """pipeline.torch.build_torch (for ``torchvision:NAME``), or the error that says how to install the torch extra."""
    from pipeline.torch import build_torch, require_torch

    require_torch("a torchvision:NAME model")
    return build_torch


def _other_builder(source: str) -> Callable[..., Any] | None:
    """The builder of a source that is not Keras (a .onnx file, ``torchvision:NAME``), else None."""
    if source.lower().endswith(ONNX_SUFFIX):
        return _onnx_builder()
    if is_torchvision(source):
        return _torch_builder()
    return None


def walk_onnx(source, spec: ModelSpec | None = None, reader: Any = None) -> ModelGraph:
    """The ModelGraph of an ONNX model (a path or a ModelProto): :func:`pipeline.onnx.walk_onnx`,
    here beside :func:`walk` (needs the onnx extra)."""
    _onnx_builder()
    from pipeline.onnx import walk_onnx as walk_proto

    return walk_proto(source, spec, reader)


def walk_torch(module, example_input, spec: ModelSpec | None = None, reader: Any = None,
               name: str | None = None) -> ModelGraph:
    """The ModelGraph of a torch.nn.Module exported to ONNX: :func:`pipeline.torch.walk_torch`,
    here beside :func:`walk` (needs the torch extra)."""
    from pipeline.torch import require_torch
    from pipeline.torch import walk_torch as walk_module

    require_torch("walk_torch")
    return walk_module(module, example_input, spec, reader, name)


def load_model(spec: ModelSpec):
    """Build or read the Keras model a spec names (imports TensorFlow).

    Files are read in Keras's safe mode (no code from the file runs; a Lambda layer is refused
    before Keras sees it). ``weights`` ``imagenet`` builds the application with Keras's own
    ImageNet weights (downloaded once into Keras's cache); a weights file is loaded into the
    model; without weights an application gets seeded random weights, biases and BN statistics.
    """
    other = _other_builder(spec.source)
    if other is not None:
        return other(spec)[0]
    quiet_tensorflow()
    import keras

    if is_model_file(spec.source):
        if spec.input_shape is not None:
            raise UsageError("--input-shape applies to keras.applications names, not to model files")
        if spec.weights == "imagenet":
            raise UsageError("--weights imagenet applies to keras.applications names; a model file has its "
                             "own weights (or pass a weights file)")
        model = read_model_file(Path(spec.source))
        if spec.weights is not None:
            load_weights_file(model, spec.weights)
        return model
    ctor = _application(spec.source)
    if ctor is None:
        raise _unknown_model(spec.source)
    weights = spec.weights
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise ModelError(f"weights file {weights} does not exist")
    keras.utils.set_random_seed(spec.seed)
    kwargs: dict[str, Any] = {"weights": None, "include_top": spec.include_top}
    if spec.input_shape is not None:
        kwargs["input_shape"] = spec.input_shape
    if weights == "imagenet":
        return build_imagenet(ctor, spec.source, kwargs)
    try:
        model = ctor(**kwargs)
    except ValueError as err:
        raise UsageError(f"{spec.source} cannot be built with input shape {spec.input_shape}: {err}") from err
    if weights is None:
        randomize_biases(model, spec.seed)
        randomize_batchnorm(model, spec.seed)
    else:
        load_weights_file(model, weights)
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

    ``reader`` turns each variable into an array; :mod:`pipeline.model_store` passes one that
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
    return ModelGraph(name=model.name, layers=layers, total_neurons=offset, spec=spec,
                      provenance=provenance(spec, model.name))


def _weight_name(var) -> str:
    return var.path.rsplit("/", 1)[-1]


def build(spec: ModelSpec, reader: Callable[[Any], np.ndarray] = read_weight) -> tuple[Any, ModelGraph]:
    """Load the model a spec names and walk it (``reader`` as in :func:`walk`).

    A .onnx file is read and walked by :mod:`pipeline.onnx`, and ``torchvision:NAME`` is built by
    :mod:`pipeline.torch` and exported to ONNX: the model is then an :class:`~pipeline.onnx.OnnxModel`
    (onnxruntime), not a Keras model.
    """
    other = _other_builder(spec.source)
    if other is not None:
        return other(spec, reader)
    model = load_model(spec)
    return model, walk(model, spec, reader)
