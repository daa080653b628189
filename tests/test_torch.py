"""The PyTorch front end (pipeline.torch): nn.Modules exported to ONNX and walked, replayed exactly
against onnxruntime; ``torchvision:NAME`` everywhere a model name goes.

torch is the ``torch`` extra (about 5 GB with PyPI's CUDA wheels), which `make test-full` installs:
tests that need it are slow and import it plainly, so a missing torch fails them. The one test of
the error a missing torch gives runs in `make test`.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.errors import ModelError, UsageError
from pipeline.model import ModelSpec, build

slow = pytest.mark.slow

#: A small torchvision model and input for the end-to-end tests (136,627 neurons, 23.8 M edges).
RESNET = ModelSpec("torchvision:resnet18", (32, 32, 3))


def _verify(module, shape, tol: float = 1e-4):
    """Export, walk and replay a module against onnxruntime; also check the export against torch."""
    import torch

    from pipeline.onnx import verify_onnx
    from pipeline.torch import export_error, export_onnx, load_torch

    torch.manual_seed(0)
    x = torch.randn(1, *shape)
    model = load_torch(module, x)
    graph = model.walked.graph
    result = verify_onnx(model, graph, samples=2)
    assert result.ok, result.errors
    assert result.worst < tol
    assert export_error(module, export_onnx(module, x), x) < 1e-4
    return graph


def _randomize(module, seed: int = 0):
    from pipeline.torch import randomize_torch

    randomize_torch(module, seed)
    return module.eval()


def _types(graph) -> set[str]:
    return {s.type for s in graph.layers}


@slow
def test_conv_pool_dense_stack_replays_exactly():
    from torch import nn

    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),                          # 15 -> 8: a last window past the end
        nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=4), nn.ReLU(),
        nn.Conv2d(12, 12, 3, padding=1, groups=12),               # depthwise
        nn.AvgPool2d(2),
        nn.Conv2d(12, 16, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )
    graph = _verify(_randomize(net), (3, 15, 15))
    assert {"Conv2D", "DepthwiseConv2D", "MaxPooling2D", "AveragePooling2D", "Dense"} <= _types(graph)
    assert "BatchNormalization" not in _types(graph)  # folded into the first Conv by the exporter
    assert graph.layers[0].type == "InputLayer" and graph.layers[0].output.shape == (15, 15, 3)
    assert graph.layers[-1].output.shape == (10,)


class _Branchy:
    """Residual add, channel concat, a BatchNorm2d no Conv precedes, and a spatial flatten."""

    @staticmethod
    def make():
        import torch
        from torch import nn

        class Branchy(nn.Module):
            def __init__(self):
                super().__init__()
                self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
                self.a = nn.Conv2d(8, 8, 3, padding=1)
                self.b = nn.Conv2d(8, 4, 1)
                self.bn = nn.BatchNorm2d(12)
                self.pool = nn.MaxPool2d(3, stride=2, padding=1)
                self.fc = nn.Linear(12 * 3 * 3, 5)

            def forward(self, x):
                x = torch.relu(self.stem(x))
                x = torch.relu(self.a(x) + x)                    # residual add
                x = torch.cat([x, self.b(x)], dim=1)             # concat on channels
                x = self.pool(torch.relu(self.bn(x)))            # BN after concat: kept as BatchNormalization
                return self.fc(torch.flatten(x, 1))              # (c, h, w) flatten order into Dense

        return Branchy()


@slow
def test_residual_concat_batchnorm_flatten_replays_exactly():
    graph = _verify(_randomize(_Branchy.make()), (3, 11, 11))
    assert {"Add", "Concatenate", "BatchNormalization", "MaxPooling2D", "Dense"} <= _types(graph)


@slow
def test_walk_torch_keeps_the_training_flag_and_names_the_graph():
    from torch import nn

    from pipeline.torch import walk_torch

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).train()
    import torch

    graph = walk_torch(net, torch.zeros(1, 3, 8, 8), name="tiny")
    assert net.training
    assert graph.name == "tiny"
    assert graph.provenance["weights"] == "in-memory model"
    assert [s.type for s in graph.layers] == ["InputLayer", "Conv2D", "Activation"]


@slow
def test_walk_torch_refuses_a_non_tensor_input():
    from torch import nn

    from pipeline.torch import walk_torch

    with pytest.raises(UsageError, match=r"example_input must be a torch.Tensor of shape \(1, C, H, W\)"):
        walk_torch(nn.ReLU(), np.zeros((1, 3, 4, 4), np.float32))


@slow
def test_pipeline_model_walk_torch_is_the_torch_walk():
    import torch
    from torch import nn

    from pipeline import model

    graph = model.walk_torch(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval(), torch.randn(1, 3, 6, 6))
    assert [s.type for s in graph.layers] == ["InputLayer", "Conv2D", "Activation"]
    assert graph.layers[1].output.shape == (4, 4, 4)


@slow
def test_torchvision_resnet18_replays_exactly():
    model, graph = build(RESNET)
    assert graph.name == "torchvision_resnet18"
    assert graph.layers[0].output.shape == (32, 32, 3)
    assert graph.layers[-1].output.shape == (1000,)
    assert graph.provenance["weights"] == "random(seed=0)" and graph.provenance["torch"]
    from pipeline.replay import verify

    result = verify(model, graph, samples=1)
    assert result.ok, result.errors
    assert {"Add", "Conv2D", "MaxPooling2D", "GlobalAveragePooling2D", "Dense"} <= _types(graph)


@slow
def test_torchvision_weights_are_seeded_and_load_from_a_state_dict(tmp_path):
    import torch

    from pipeline.torch import torchvision_module

    a, x = torchvision_module(ModelSpec("torchvision:squeezenet1_1", (64, 64, 3), seed=3))
    b, _ = torchvision_module(ModelSpec("torchvision:squeezenet1_1", (64, 64, 3), seed=3))
    c, _ = torchvision_module(ModelSpec("torchvision:squeezenet1_1", (64, 64, 3), seed=4))
    assert tuple(x.shape) == (1, 3, 64, 64)
    first = [p for p in a.state_dict().values()][0]
    assert torch.equal(first, list(b.state_dict().values())[0])
    assert not torch.equal(first, list(c.state_dict().values())[0])
    path = tmp_path / "squeeze.pth"
    torch.save(c.state_dict(), path)
    d, _ = torchvision_module(ModelSpec("torchvision:squeezenet1_1", (64, 64, 3), weights=str(path)))
    assert all(torch.equal(v, c.state_dict()[k]) for k, v in d.state_dict().items())
    _, graph = build(ModelSpec("torchvision:squeezenet1_1", (64, 64, 3), weights=str(path)))
    assert graph.provenance["weights"] == str(path.resolve()) and graph.provenance["weights_sha256"]


@slow
@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        (ModelSpec("torchvision:resnet19"), ModelError,
         r"unknown torchvision model 'resnet19': did you mean torchvision:resnet18"),
        (ModelSpec("torchvision:resnet18", include_top=False), UsageError,
         r"--no-top applies to keras.applications names; torchvision models keep their classifier"),
        (ModelSpec("torchvision:resnet18", (32, 32)), UsageError,
         r"--input-shape 32,32: a torchvision model takes H,W,C, e.g. 64,64,3"),
        (ModelSpec("torchvision:resnet18", (32, 32, 1)), UsageError,
         r"torchvision models take 3 channels"),
        (ModelSpec("torchvision:resnet18", weights="NOPE"), UsageError,
         r"--weights 'NOPE' is neither a file nor a weights name of torchvision:resnet18"),
        (ModelSpec("torchvision:"), UsageError, r"'torchvision:' names no model"),
    ],
)
def test_torchvision_spec_errors_say_what_to_do(spec, error, match):
    with pytest.raises(error, match=match):
        build(spec)


@slow
def test_torchvision_too_small_an_input_says_so():
    with pytest.raises(UsageError, match=r"torchvision:vgg11 cannot be exported with input shape 8,8,3"):
        build(ModelSpec("torchvision:vgg11", (8, 8, 3)))


@slow
def test_a_failed_weights_download_says_how_to_go_offline(monkeypatch):
    import urllib.error

    import torchvision

    def offline(name, weights=None, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(ModelError, match=r"downloading the DEFAULT weights of torchvision:resnet18 failed .*"
                                         r"save model.state_dict\(\) elsewhere and pass --weights FILE"):
        build(ModelSpec("torchvision:resnet18", (32, 32, 3), weights="DEFAULT"))


def test_provenance_records_a_torchvision_weights_name_as_given():
    from pipeline.model_files import provenance

    info = provenance(ModelSpec("torchvision:resnet18", weights="DEFAULT"), "torchvision_resnet18")
    assert info["weights"] == "DEFAULT" and "weights_sha256" not in info


def test_missing_torch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ModelError, match=r"needs torch, onnx and onnxruntime .*: pip install 'cnngraph\[torch\]'"):
        build(ModelSpec("torchvision:resnet18"))


@slow
def test_cli_plan_extract_and_verify_a_torchvision_model(tmp_path):
    runner = CliRunner()
    args = ["torchvision:resnet18", "--input-shape", "32,32,3"]
    res = runner.invoke(cli, ["plan", *args, "--json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)
    assert (plan["nodes"], plan["edges"]) == (136_627, 23_752_256)
    out = tmp_path / "out"
    res = runner.invoke(cli, ["extract", *args, "--out", str(out), "-s"])
    assert res.exit_code == 0, res.output
    assert "uses seeded random weights (seed 0)" in res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["source"] == "torchvision:resnet18"
    res = runner.invoke(cli, ["verify", str(out)])
    assert res.exit_code == 0, res.output
    assert "verify passed" in res.output
