"""PyTorch front end: a torch.nn.Module exported to ONNX in memory, then walked by :mod:`pipeline.onnx`.

``walk_torch(module, example_input)`` gives the same :class:`~pipeline.spec.ModelGraph` as
``walk_onnx`` of the exported file; ``load_torch`` the :class:`~pipeline.onnx.OnnxModel` that
replays against onnxruntime; ``build_torch(spec)`` builds a ``torchvision:NAME`` spec (what
``pipeline.model.build`` calls for such names). The export is PyTorch's TorchScript exporter
(``dynamo=False``: no onnxscript needed) at :data:`OPSET`, in eval mode with constant folding,
so a BatchNorm2d that follows a Conv2d is folded into the convolution's weights. Torch, torchvision,
onnx and onnxruntime come from ``pip install 'cnngraph[torch]'``; every import of them happens
inside the functions that need them. Details and limits: docs/torch.md.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pipeline.errors import ModelError, UsageError
from pipeline.model_files import TORCHVISION_PREFIX, first_line
from pipeline.spec import ModelGraph, ModelSpec

#: ONNX opset of the export: one every torch >= 2.2 writes and pipeline.onnx reads.
OPSET = 17

#: The install command the PyTorch front end needs.
TORCH_EXTRA = "pip install 'cnngraph[torch]'"

#: Input shape (h, w, c) of a torchvision model built without --input-shape.
DEFAULT_INPUT_SHAPE = (224, 224, 3)

#: Where this front end is documented (named in its errors).
TORCH_DOC = "docs/torch.md"


def _block_triton_after_tensorflow() -> None:
    """Keep triton (GPU kernels; the Linux wheels of torch bring it) from loading after TensorFlow.

    Both carry LLVM: triton's, loaded second, aborts the process ("Option 'bitcode-mdindex-threshold'
    registered more than once"). torchvision imports torch._dynamo, which imports triton when it
    can; without it torch runs on the CPU as before. The child that builds a model for ``extract``
    imports TensorFlow first, so this matters there.
    """
    import sys

    if "tensorflow" in sys.modules and "triton" not in sys.modules:
        sys.modules["triton"] = None  # type: ignore[assignment]  # `import triton` raises ImportError


def require_torch(what: str = "the PyTorch front end"):
    """Import and return torch, or raise the ModelError that names the install command."""
    _block_triton_after_tensorflow()
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import torch
    except ImportError as err:
        raise ModelError(f"{what} needs torch, onnx and onnxruntime ({err}): {TORCH_EXTRA}") from err
    return torch


def _torchvision():
    require_torch("a torchvision:NAME model")
    try:
        import torchvision
    except ImportError as err:
        raise ModelError(f"a torchvision:NAME model needs torchvision ({err}): {TORCH_EXTRA}") from err
    return torchvision


def _inputs(example_input) -> tuple:
    return tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)


def _input_names(n: int) -> list[str]:
    return ["input"] if n == 1 else [f"input_{i}" for i in range(n)]


@contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence fd 1 during the export: on failure the exporter prints both its graphs there (stdout
    may carry ``--json``); the error itself is raised as usual."""
    import os
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _legacy(torch) -> dict[str, Any]:
    """``dynamo=False`` where torch.onnx.export has that switch (torch >= 2.5; the default from 2.9 is the
    torch.export-based exporter, which needs onnxscript): the TorchScript exporter, whose output we test."""
    import inspect

    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def export_onnx(module, example_input, name: str | None = None, opset: int = OPSET):
    """Export a torch.nn.Module to an ``onnx.ModelProto`` in memory (eval mode, constant folding).

    ``example_input``: a tensor ``(1, C, H, W)`` (or a tuple of them) with the sizes the graph is
    built for; the batch axis stays 1 (our graphs have fixed shapes). The module's training flag
    is put back afterwards. Raises ModelError when the exporter refuses the module.
    """
    torch = require_torch()
    import warnings

    import onnx

    inputs = _inputs(example_input)
    if not all(isinstance(x, torch.Tensor) for x in inputs):
        raise UsageError("example_input must be a torch.Tensor of shape (1, C, H, W) (or a tuple of them)")
    buffer = io.BytesIO()
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad(), _quiet_stdout():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
            torch.onnx.export(module, inputs, buffer, opset_version=opset, do_constant_folding=True,
                              input_names=_input_names(len(inputs)), output_names=["output"], **_legacy(torch))
    except Exception as err:  # the exporter raises RuntimeError, SymbolicValueError, UnsupportedOperatorError...
        label = name or type(module).__name__
        why = first_line(err, 100_000).split("  [Caused by")[0]  # the exporter appends its whole graph
        why = why.split(" Please feel free to request support")[0]  # and a plea for a pull request
        raise ModelError(f"torch.onnx.export could not export {label}: {why[:400]} (see {TORCH_DOC})") from err
    finally:
        module.train(was_training)
    proto = onnx.load_from_string(buffer.getvalue())
    proto.graph.name = name or type(module).__name__
    return proto


def load_torch(module, example_input, spec: ModelSpec | None = None, reader: Any = None, name: str | None = None):
    """Export a module and walk it: an :class:`~pipeline.onnx.OnnxModel` (its graph is ``.walked.graph``)
    that ``pipeline.replay.verify`` replays against onnxruntime."""
    from pipeline.onnx import load_onnx

    return load_onnx(export_onnx(module, example_input, name), spec, reader)


def walk_torch(module, example_input, spec: ModelSpec | None = None, reader: Any = None,
               name: str | None = None) -> ModelGraph:
    """The ModelGraph of a torch.nn.Module, as :func:`pipeline.onnx.walk_onnx` gives for its ONNX export.

    >>> import torch  # doctest: +SKIP
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())  # doctest: +SKIP
    >>> graph = walk_torch(net, torch.randn(1, 3, 32, 32))  # doctest: +SKIP
    """
    return load_torch(module, example_input, spec, reader, name).walked.graph


def export_error(module, proto, example_input) -> float:
    """The largest relative difference between the module's output in torch and the export's in
    onnxruntime (checks the exporter itself; replay checks the graph against the export)."""
    torch = require_torch()
    import numpy as np
    import onnxruntime as ort

    inputs = _inputs(example_input)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            want = module(*inputs)
    finally:
        module.train(was_training)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    got = sess.run(None, {i.name: x.numpy() for i, x in zip(sess.get_inputs(), inputs, strict=True)})[0]
    want = want.numpy()
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-12))


# -- torchvision:NAME ---------------------------------------------------------------------------

def torchvision_name(source: str) -> str:
    """NAME of a ``torchvision:NAME`` source (lower case)."""
    name = source[len(TORCHVISION_PREFIX):].strip().lower().replace("-", "_")
    if not name:
        raise UsageError(f"{source!r} names no model: give torchvision:NAME, e.g. torchvision:resnet18")
    return name


def _classification_models(torchvision) -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _unknown(name: str, known: list[str]) -> ModelError:
    import difflib

    close = difflib.get_close_matches(name, known, n=3)
    hint = f"did you mean {' or '.join(f'torchvision:{c}' for c in close)}?" if close else \
        f"torchvision's classification models are {', '.join(known)}"
    return ModelError(f"unknown torchvision model {name!r}: {hint}")


def randomize_torch(module, seed: int) -> None:
    """Seeded random biases and BatchNorm statistics (torchvision starts them at 0 / identity), so
    replay exercises them, as :func:`pipeline.model.randomize_biases` and ``randomize_batchnorm`` do
    for Keras: biases N(0, 0.05); BN weight, bias and running mean N(0, 0.7), running var U(0.5, 2)."""
    torch = require_torch()

    gen = torch.Generator().manual_seed(seed + 1)
    bn_gen = torch.Generator().manual_seed(seed + 7)
    nn = torch.nn
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    with torch.no_grad():
        for mod in module.modules():
            if isinstance(mod, norms):
                if mod.affine:
                    mod.weight.copy_(torch.randn(mod.weight.shape, generator=bn_gen) * 0.7)
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=bn_gen) * 0.7)
                if mod.track_running_stats:
                    mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=bn_gen) * 0.7)
                    mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=bn_gen) * 1.5 + 0.5)
            else:
                bias = getattr(mod, "bias", None)
                if isinstance(bias, torch.nn.Parameter):
                    bias.copy_(torch.randn(bias.shape, generator=gen) * 0.05)


def _load_state_dict(model, path: str, name: str) -> None:
    torch = require_torch()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # no code from the file runs
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        model.load_state_dict(state)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, KeyError...
        raise ModelError(f"cannot load weights file {path} into torchvision:{name}: {first_line(err)}; it must be "
                         "a state_dict saved with torch.save(model.state_dict(), FILE) from the same architecture") from err


def torchvision_module(spec: ModelSpec):
    """The torchvision model a ``torchvision:NAME`` spec names and its example input ``(1, C, H, W)``.

    Without weights: seeded random weights (``torch.manual_seed(seed)`` before building, then
    :func:`randomize_torch`); ``weights`` a torchvision weights name (``DEFAULT``, ``IMAGENET1K_V1``,
    downloaded by torchvision into its cache) or a state_dict file.
    """
    import warnings
    from pathlib import Path

    torch = require_torch("a torchvision:NAME model")
    torchvision = _torchvision()
    name = torchvision_name(spec.source)
    known = _classification_models(torchvision)
    if name not in known:
        raise _unknown(name, known)
    if not spec.include_top:
        raise UsageError("--no-top applies to keras.applications names; torchvision models keep their classifier")
    h, w, c = _input_shape(spec.input_shape)
    weights = spec.weights
    torch.manual_seed(spec.seed)
    if weights is None or Path(weights).is_file():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # googlenet's notice about its default init
            model = torchvision.models.get_model(name, weights=None)
        if weights is None:
            randomize_torch(model, spec.seed)
        else:
            _load_state_dict(model, weights, name)
    else:
        try:
            model = torchvision.models.get_model(name, weights=weights)
        except (ValueError, KeyError) as err:
            raise UsageError(f"--weights {weights!r} is neither a file nor a weights name of torchvision:{name} "
                             f"({first_line(err)}); try --weights DEFAULT") from err
        except Exception as err:  # urllib/http errors of the download
            raise ModelError(f"downloading the {weights} weights of torchvision:{name} failed ({first_line(err)}); "
                             "without internet access, save model.state_dict() elsewhere and pass --weights FILE") from err
    return model.eval(), torch.zeros(1, c, h, w)


def _input_shape(shape: tuple[int, ...] | None) -> tuple[int, int, int]:
    if shape is None:
        return DEFAULT_INPUT_SHAPE
    if len(shape) != 3:
        raise UsageError(f"--input-shape {','.join(map(str, shape))}: a torchvision model takes H,W,C, e.g. 64,64,3")
    if shape[2] != 3:
        raise UsageError(f"--input-shape {','.join(map(str, shape))}: torchvision models take 3 channels (H,W,3)")
    return shape  # type: ignore[return-value]


def build_torch(spec: ModelSpec, reader: Any = None):
    """Build a ``torchvision:NAME`` spec, export it and walk it: (OnnxModel, ModelGraph), as
    :func:`pipeline.onnx.build_onnx` gives for a .onnx file."""
    module, example = torchvision_module(spec)
    name = f"torchvision_{torchvision_name(spec.source)}"
    try:
        proto = export_onnx(module, example, name)
    except ModelError as err:
        h, w, _ = _input_shape(spec.input_shape)
        raise UsageError(f"{spec.source} cannot be exported with input shape {h},{w},3: {err}") from err
    from pipeline.onnx import load_onnx

    model = load_onnx(proto, spec, reader)
    graph = model.walked.graph
    if graph.provenance is not None:
        import torch
        import torchvision

        graph.provenance.update(torch=torch.__version__, torchvision=torchvision.__version__)
    return model, graph
