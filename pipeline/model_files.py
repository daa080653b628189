"""Model files and where a model came from: reading .keras/.h5 files safely (.onnx: pipeline.onnx), weights, provenance.

Files are read in Keras's safe mode after a Keras version check and a Lambda scan of their config
(no code from a file runs); ImageNet weights come through Keras's own download; :func:`provenance`
records the files (with their sha256) a manifest names, and :func:`check_provenance` checks them.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from pipeline.errors import ModelError, UsageError
from pipeline.spec import ModelGraph, ModelSpec

#: Model file name endings :func:`load_model` reads.
MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5", ".onnx")

#: The ending of ONNX model files (read by :mod:`pipeline.onnx`, not Keras).
ONNX_SUFFIX = ".onnx"

#: The prefix of a torchvision model name, ``torchvision:resnet18`` (built by :mod:`pipeline.torch`).
TORCHVISION_PREFIX = "torchvision:"


def is_torchvision(source: str) -> bool:
    """True when a spec's source is ``torchvision:NAME`` (PyTorch, exported to ONNX), not Keras."""
    return source.lower().startswith(TORCHVISION_PREFIX)


#: The manifest's ``weights`` of a model file that brings its own weights.
MODEL_FILE_WEIGHTS = "model file"


#: The manifest's ``weights`` (and a hint in its ``source``) of a model walked in memory.
IN_MEMORY_WEIGHTS = "in-memory model"


def random_weights_note(spec: ModelSpec) -> str | None:
    """The notice a user must see when an application gets seeded random weights, else None."""
    if spec.weights is None and not is_model_file(spec.source):
        return f"note: {spec.source} uses seeded random weights (seed {spec.seed}); pass --weights for trained ones"
    return None


def is_model_file(source: str) -> bool:
    """True when a spec's source names a file (or anything on disk), not a keras.applications name."""
    return source.endswith(MODEL_FILE_SUFFIXES) or Path(source).exists()


def provenance(spec: ModelSpec | None, name: str) -> dict[str, Any]:
    """Where a model and its weights came from, as the manifest (and Neo4j's ``:Model``) record it.

    Files are named by absolute path with their sha256, so a folder verifies from any working
    directory and a file changed since is detected. ``weights`` is ``imagenet``, a weights file,
    ``model file`` (a .keras/.h5 file's own), ``random(seed=N)``, ``in-memory model``, or a torchvision
    weights name (``DEFAULT``) as given.
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
    elif spec.weights != "imagenet" and not (is_torchvision(spec.source) and not Path(spec.weights).is_file()):
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


def quiet_tensorflow() -> None:
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


#: Seconds a stalled ImageNet download may wait on its socket before it fails (a slow one goes on).
DOWNLOAD_TIMEOUT = 60


def build_imagenet(ctor, name: str, kwargs: dict[str, Any]):
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
            raise ModelError(f"the ImageNet weights of {name} downloaded incompletely ({first_line(err)}); "
                             "run again, or pass a local weights file: --weights FILE") from err
        raise UsageError(f"{name} cannot be built with ImageNet weights: {first_line(err)}") from err
    except Exception as err:  # Keras raises a bare Exception for URL failures
        raise ModelError(
            f"downloading the ImageNet weights of {name} failed ({first_line(err)}); without internet "
            "access, fetch that file elsewhere and pass it: --weights FILE"
        ) from err
    finally:
        socket.setdefaulttimeout(previous)


def first_line(err: BaseException, limit: int = 300) -> str:
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_weights_file(model, weights: str) -> None:
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
            raise ModelError(f"cannot load weights file {weights} into {model.name}: {first_line(err)}; {hint}") from err
    for w in caught:  # Keras only warns when it leaves some layers at their initial weights
        if "freshly-initialized" in str(w.message) or "could not be loaded" in str(w.message):
            raise ModelError(f"weights file {weights} does not cover {model.name}: {first_line(w.message)}; {hint}")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def model_config(path: Path) -> dict[str, Any] | None:
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
        raise ModelError(f"{path} is not a valid {path.suffix} file: {first_line(err)}") from err
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


def require_safe_keras(version: str) -> None:
    """Refuse to read model files with a Keras whose safe mode is known to be bypassable."""
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:3])
    latest, backports = SAFE_KERAS
    if parts >= latest or backports <= parts < (3, 13):
        return
    raise ModelError(
        f"Keras {version} can run code hidden in model files (known safe_mode bypasses); upgrade it before "
        f"reading model files: pip install 'keras>={'.'.join(map(str, latest))}'"
    )


def read_model_file(path: Path):
    """Read a .keras/.h5 model in Keras's safe mode, refusing Lambda layers first (named)."""
    import keras
    from keras.src.saving import serialization_lib

    from pipeline.errors import UnsupportedLayerError

    require_safe_keras(keras.__version__)
    config = model_config(path)
    name = _find_lambda(config)
    if name is not None:
        from pipeline.layers import registry

        raise UnsupportedLayerError(name, "Lambda", registry.supported(), registry.NEVER["Lambda"])
    try:
        with serialization_lib.SafeModeScope(True):
            return load_keras2_h5(path, config) or keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # keras raises many types for files it cannot rebuild
        raise ModelError(f"cannot read model file {path}: {first_line(err)}") from err


def load_keras2_h5(path: Path, config: dict[str, Any] | None):
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
