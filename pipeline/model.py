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
#: Model file name endings :func:`load_model` reads.
MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")
#: The manifest's ``weights`` of a model file that brings its own weights.
MODEL_FILE_WEIGHTS = "model file"
#: The manifest's ``weights`` (and a hint in its ``source``) of a model walked in memory.
IN_MEMORY_WEIGHTS = "in-memory model"


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
    #: Where the model and its weights came from (:func:`provenance`), recorded when walked.
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


def random_weights_note(spec: ModelSpec) -> str | None:
    """The notice a user must see when an application gets seeded random weights, else None."""
    if spec.weights is None and not Path(spec.source).exists():
        return f"note: {spec.source} uses seeded random weights (seed {spec.seed}); pass --weights for trained ones"
    return None


def is_model_file(source: str) -> bool:
    """True when a spec's source names a file (or anything on disk), not a keras.applications name."""
    return source.endswith(MODEL_FILE_SUFFIXES) or Path(source).exists()


def provenance(spec: ModelSpec | None, name: str) -> dict[str, Any]:
    """Where a model and its weights came from, as the manifest (and Neo4j's ``:Model``) record it.

    Files are named by absolute path with their sha256, so a folder verifies from any working
    directory and a file changed since is detected. ``weights`` is ``imagenet``, a weights file,
    ``model file`` (a .keras/.h5 file's own), ``random(seed=N)`` or ``in-memory model``.
    """
    from pipeline.storage import sha256

    if spec is None:
        return {"name": name, "source": name, "weights": IN_MEMORY_WEIGHTS}
    info: dict[str, Any] = {"name": name, **spec.to_json()}
    default = f"random(seed={spec.seed})"
    if is_model_file(spec.source) and Path(spec.source).is_file():
        path = Path(spec.source).resolve()
        info["source"], info["source_sha256"], default = str(path), sha256(path), MODEL_FILE_WEIGHTS
    if spec.weights is None:
        info["weights"] = default
    elif spec.weights != "imagenet":
        path = Path(spec.weights).resolve()
        info["weights"] = str(path)
        if path.is_file():
            info["weights_sha256"] = sha256(path)
    return info


def model_record(graph: ModelGraph) -> dict[str, Any]:
    """The manifest's ``model`` entry of a walked graph: its name and :func:`provenance`."""
    return dict(graph.provenance or provenance(graph.spec, graph.name))


def check_provenance(info: dict[str, Any], folder: str | Path | None = None) -> None:
    """Check that the files a manifest's ``model`` entry names are still the ones recorded.

    Raises ModelError for a missing file or a sha256 that differs (replaying against other
    weights would report errors that say nothing about the extraction); old manifests, which
    record no sha256, pass.
    """
    from pipeline.storage import sha256

    where = str(folder) if folder is not None else "the folder"
    for key, what in (("source", "model file"), ("weights", "weights file")):
        digest = info.get(f"{key}_sha256")
        if not digest:
            continue
        path = Path(info[key])
        if not path.is_file():
            raise ModelError(f"{what} {path} that {where} was extracted from does not exist; put it back, "
                             f"or pass the model: cnngraph verify MODEL --folder {where}")
        if sha256(path) != digest:
            raise ModelError(
                f"{what} {path} has changed since {where} was extracted (its sha256 differs from the "
                "manifest's): replay would compare against other weights; extract it again"
            )


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
    """Import TensorFlow once with its C++ start-up chatter (written to fd 2) silenced.

    oneDNN is asked for (TensorFlow 2.21 no longer turns it on by default here): without it the
    CPU kernels refuse layers Keras accepts (depthwise convolutions with unequal strides,
    dilated 1-D transposed convolutions), so ``verify`` could not compute Keras's own output.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
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
                          "(a keras.applications name, or a .keras/.h5 file)")
    return ModelError(
        f"unknown model {name!r}: give a .keras/.h5 file or a keras.applications name "
        "such as vgg16, vgg19, resnet50, mobilenet_v2"
    )


def load_model(spec: ModelSpec):
    """Build or read the Keras model a spec names (imports TensorFlow).

    Files are read in Keras's safe mode (no code from the file runs; a Lambda layer is refused
    before Keras sees it). ``weights`` ``imagenet`` builds the application with Keras's own
    ImageNet weights (downloaded once into Keras's cache); a weights file is loaded into the
    model; without weights an application gets seeded random weights, biases and BN statistics.
    """
    _quiet_tensorflow()
    import keras

    if is_model_file(spec.source):
        if spec.input_shape is not None:
            raise UsageError("--input-shape applies to keras.applications names, not to model files")
        if spec.weights == "imagenet":
            raise UsageError("--weights imagenet applies to keras.applications names; a model file has its "
                             "own weights (or pass a weights file)")
        model = _read_model_file(Path(spec.source))
        if spec.weights is not None:
            _load_weights_file(model, spec.weights)
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
        return _imagenet(ctor, spec.source, kwargs)
    try:
        model = ctor(**kwargs)
    except ValueError as err:
        raise UsageError(f"{spec.source} cannot be built with input shape {spec.input_shape}: {err}") from err
    if weights is None:
        randomize_biases(model, spec.seed)
        randomize_batchnorm(model, spec.seed)
    else:
        _load_weights_file(model, weights)
    return model


#: Seconds a stalled ImageNet download may wait on its socket before it fails (a slow one goes on).
DOWNLOAD_TIMEOUT = 60


def _imagenet(ctor, name: str, kwargs: dict[str, Any]):
    """Build an application with Keras's ImageNet weights: Keras downloads them into its cache.

    Keras's download messages go to stderr (stdout may carry ``--json``); a download that cannot
    start fails with one line that names the file and how to pass it (``--weights FILE``).
    """
    import contextlib
    import socket

    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return ctor(**{**kwargs, "weights": "imagenet"})
    except ValueError as err:
        if "hash" in str(err):
            raise ModelError(f"the ImageNet weights of {name} downloaded incompletely ({_first_line(err)}); "
                             "run again, or pass a local weights file: --weights FILE") from err
        raise UsageError(f"{name} cannot be built with ImageNet weights: {_first_line(err)}") from err
    except Exception as err:  # Keras raises a bare Exception for URL failures
        raise ModelError(
            f"downloading the ImageNet weights of {name} failed ({_first_line(err)}); without internet "
            "access, fetch that file elsewhere and pass it: --weights FILE"
        ) from err
    finally:
        socket.setdefaulttimeout(previous)


def _first_line(err: BaseException, limit: int = 300) -> str:
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load_weights_file(model, weights: str) -> None:
    """Load a weights file (.weights.h5, or a legacy .h5 such as Keras's ImageNet files) into model."""
    import warnings

    if not Path(weights).is_file():
        raise ModelError(f"weights file {weights} does not exist")
    hint = "it must be saved from the same architecture (same application, input shape and --no-top)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(weights)
        except Exception as err:  # keras raises many types for mismatched or corrupt files
            raise ModelError(f"cannot load weights file {weights} into {model.name}: {_first_line(err)}; {hint}") from err
    for w in caught:  # Keras only warns when it leaves some layers at their initial weights
        if "freshly-initialized" in str(w.message) or "could not be loaded" in str(w.message):
            raise ModelError(f"weights file {weights} does not cover {model.name}: {_first_line(w.message)}; {hint}")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _model_config(path: Path) -> dict[str, Any] | None:
    """The architecture config a model file holds, read as JSON without Keras (None if absent).

    Raises ModelError for a folder, a file that is not a zip (.keras) or HDF5 (.h5), or one of
    another format.
    """
    import json
    import zipfile

    import h5py

    if path.is_dir():
        from pipeline.schema import MANIFEST

        if (path / MANIFEST).exists():
            try:
                source = json.loads((path / MANIFEST).read_text())["model"]["source"]
                named = f": its manifest names {source}"
            except (OSError, ValueError, KeyError, TypeError):
                named = " (a .keras/.h5 file or a keras.applications name)"
            raise ModelError(f"{path} is an extraction folder, not a model: give the model it was extracted from{named}")
        raise ModelError(f"{path} is a folder, not a model: give a .keras/.h5 file or a keras.applications name")
    if not path.exists():
        raise ModelError(f"model file {path} does not exist")
    try:
        if path.suffix == ".keras":
            if not zipfile.is_zipfile(path):
                raise ModelError(f"{path} is not a valid .keras file (Keras writes them as zip archives)")
            with zipfile.ZipFile(path) as archive:
                if "config.json" not in archive.namelist():
                    raise ModelError(f"{path} is not a valid .keras file (it has no config.json)")
                return json.loads(archive.read("config.json"))
        if path.suffix in (".h5", ".hdf5"):
            if not h5py.is_hdf5(path):
                raise ModelError(f"{path} is not a valid {path.suffix} file (not HDF5)")
            with h5py.File(path, "r") as f:
                raw = f.attrs.get("model_config")
            if raw is None:
                raise ModelError(f"{path} holds no model (no model_config): a weights-only file? "
                                 "pass it as --weights FILE with the model it belongs to")
            return json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ModelError(f"{path} is not a valid {path.suffix} file: {_first_line(err)}") from err
    raise ModelError(f"{path} is not a model file: give a .keras or .h5 file (or a keras.applications name)")


def _find_lambda(config: Any) -> str | None:
    """The name of the first Lambda layer anywhere in a model config, or None."""
    if isinstance(config, dict):
        if config.get("class_name") == "Lambda":
            return str((config.get("config") or {}).get("name", "?"))
        values = config.values()
    elif isinstance(config, list):
        values = config
    else:
        return None
    for value in values:
        found = _find_lambda(value)
        if found is not None:
            return found
    return None


#: Oldest Keras releases, per line, without the known load-time code-execution flaws (pyproject.toml).
SAFE_KERAS = ((3, 15, 1), (3, 12, 4))


def _require_safe_keras(version: str) -> None:
    """Refuse to read model files with a Keras whose safe mode is known to be bypassable."""
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:3])
    latest, backports = SAFE_KERAS
    if parts >= latest or backports <= parts < (3, 13):
        return
    raise ModelError(
        f"Keras {version} can run code hidden in model files (known safe_mode bypasses); upgrade it before "
        f"reading model files: pip install 'keras>={'.'.join(map(str, latest))}'"
    )


def _read_model_file(path: Path):
    """Read a .keras/.h5 model in Keras's safe mode, refusing Lambda layers first (named)."""
    import keras
    from keras.src.saving import serialization_lib

    from pipeline.errors import UnsupportedLayerError

    _require_safe_keras(keras.__version__)
    config = _model_config(path)
    name = _find_lambda(config)
    if name is not None:
        from pipeline.layers import registry

        raise UnsupportedLayerError(name, "Lambda", registry.supported(), registry.NEVER["Lambda"])
    try:
        with serialization_lib.SafeModeScope(True):
            return _load_keras2_h5(path, config) or keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # keras raises many types for files it cannot rebuild
        raise ModelError(f"cannot read model file {path}: {_first_line(err)}") from err


def _load_keras2_h5(path: Path, config: dict[str, Any] | None):
    """Read an .h5 file whose config uses Keras 2's ``batch_input_shape``; None for other files.

    Keras 3 names it ``batch_shape`` on an InputLayer and misreads Keras 2's form on the first
    layer of a Sequential, so the config is rewritten to Keras 3's form, then rebuilt the way
    Keras reads .h5 files itself: legacy config rules, in safe mode.
    """
    import json

    if path.suffix not in (".h5", ".hdf5") or config is None or "batch_input_shape" not in json.dumps(config):
        return None
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
    from keras.src.legacy.saving import saving_options, saving_utils  # the reader Keras itself uses for .h5
    from keras.src.saving import serialization_lib

    with saving_options.keras_option_scope(use_legacy_config=True), serialization_lib.SafeModeScope(True):
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
    return ModelGraph(name=model.name, layers=layers, total_neurons=offset, spec=spec,
                      provenance=provenance(spec, model.name))


def _weight_name(var) -> str:
    return var.path.rsplit("/", 1)[-1]


def build(spec: ModelSpec, reader: Callable[[Any], np.ndarray] = read_weight) -> tuple[Any, ModelGraph]:
    """Load the model a spec names and walk it (``reader`` as in :func:`walk`)."""
    model = load_model(spec)
    return model, walk(model, spec, reader)
