"""Provenance: manifests name the files a graph came from (absolute, with sha256) and its weights.

Also the ways to get weights: a local weights file, and Keras's ImageNet download, which fails
here (no internet) with one line that says how to pass a file instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.extract import extract, spec_from_manifest
from pipeline.model import ModelSpec, build, walk
from tests.helpers import keras, sequential

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny(seed: int):
    k = keras()
    return sequential((6, 6, 2), [k.layers.Conv2D(3, 3, activation="relu", name="conv"), k.layers.Flatten(),
                                  k.layers.Dense(4, name="head")], seed=seed)


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "models" / "m.keras"
    path.parent.mkdir()
    tiny(1).save(path)
    return path


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_model_file_is_recorded_by_absolute_path_and_sha256(model_file, tmp_path, monkeypatch):
    """Model and folder given relative to the working directory; verify from another one."""
    monkeypatch.chdir(model_file.parent)
    res = run("extract", "m.keras", "--out", "x", "-s")  # one extraction (a TensorFlow child) for both
    assert res.exit_code == 0, res.output
    folder = model_file.parent / "x"
    model = manifest(folder)["model"]
    assert model["source"] == str(model_file.resolve()) and Path(model["source"]).is_absolute()
    assert model["source_sha256"] == sha256(model_file)
    assert model["weights"] == "model file" and "random(" not in json.dumps(model)
    assert spec_from_manifest(manifest(folder)) == ModelSpec(str(model_file.resolve()))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    res = run("verify", str(model_file.parent / "x"), "-s")
    assert res.exit_code == 0, res.output
    assert "verify passed" in res.output


def test_verify_refuses_a_model_file_changed_since_extraction(model_file, tmp_path):
    out = tmp_path / "x"
    assert run("extract", str(model_file), "--out", str(out), "-s").exit_code == 0
    tiny(2).save(model_file)  # same architecture, other weights
    res = run("verify", str(out), "-s")
    assert res.exit_code == 1
    assert res.output.strip() == (
        f"Error: model file {model_file.resolve()} has changed since {out} was extracted (its sha256 differs "
        "from the manifest's): replay would compare against other weights; extract it again"
    )
    model_file.unlink()
    res = run("verify", str(out), "-s")
    assert res.exit_code == 1
    assert res.output.strip() == (
        f"Error: model file {model_file.resolve()} that {out} was extracted from does not exist; put it back, "
        f"or pass the model: cnngraph verify MODEL --folder {out}"
    )


def test_in_memory_model_is_recorded_as_such(tmp_path):
    model = tiny(3)
    out = tmp_path / "x"
    extract(walk(model), out)
    assert manifest(out)["model"] == {"name": model.name, "source": model.name, "weights": "in-memory model"}
    res = run("verify", str(out), "-s")
    assert res.exit_code == 1
    assert res.output.strip() == (
        f"Error: {out} was extracted from an in-memory model ({model.name}), which its manifest cannot rebuild: "
        f"save it (model.save('{model.name}.keras')) and run `cnngraph verify {model.name}.keras --folder {out}`, "
        f"or in Python: verify(model, walk(model), folder='{out}')"
    )
    saved = tmp_path / f"{model.name}.keras"
    model.save(saved)
    res = run("verify", str(saved), "--folder", str(out), "-s")
    assert res.exit_code == 0, res.output
    assert "verify passed" in res.output


def test_old_manifests_still_give_their_spec():
    old_app = {"model": {"name": "vgg16", "source": "vgg16", "input_shape": [32, 32, 3], "include_top": False,
                         "weights": "random(seed=3)", "seed": 3}}
    assert spec_from_manifest(old_app) == ModelSpec("vgg16", (32, 32, 3), False, None, 3)
    old_file = {"model": {"name": "sequential", "source": "m.keras", "input_shape": None, "include_top": True,
                          "weights": "random(seed=0)", "seed": 0}}
    assert spec_from_manifest(old_file) == ModelSpec("m.keras")


def test_application_records_random_weights_and_rebuilds(tmp_path):
    spec = ModelSpec("vgg16", (32, 32, 3), include_top=False, seed=4)
    _, graph = build(spec)
    res = extract(graph, tmp_path / "x", layers="block1_conv1:block1_pool")
    assert res.manifest["model"] == {"name": "vgg16", **spec.to_json(), "weights": "random(seed=4)"}
    assert spec_from_manifest(res.manifest) == spec


def test_weights_file_gives_the_same_graph(tmp_path):
    seeded = ModelSpec("vgg16", (32, 32, 3), include_top=False, seed=3)
    model, graph = build(seeded)
    weights = tmp_path / "vgg16-seed3.weights.h5"
    model.save_weights(weights)
    spec = ModelSpec("vgg16", (32, 32, 3), include_top=False, weights=str(weights))
    _, loaded = build(spec)
    for a, b in zip(graph.layers, loaded.layers, strict=True):
        assert a.weights.keys() == b.weights.keys()
        assert all(np.array_equal(a.weights[k], b.weights[k]) for k in a.weights), a.name
    layers = "block1_conv1:block2_conv1"
    want, got = extract(graph, None, layers=layers).manifest, extract(loaded, tmp_path / "x", layers=layers).manifest
    assert [e["edge_checksum"] for e in want["layers"]] == [e["edge_checksum"] for e in got["layers"]]
    assert got["model"]["weights"] == str(weights.resolve()) and got["model"]["weights_sha256"] == sha256(weights)
    res = run("plan", "vgg16", "--input-shape", "32,32,3", "--no-top", "--weights", str(weights), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["edges"] == 247_433_984


def test_imagenet_with_top_needs_its_input_shape():
    res = run("plan", "vgg16", "--input-shape", "32,32,3", "--weights", "imagenet")
    assert res.exit_code == 1
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("Error: vgg16 cannot be built with ImageNet weights: ") and "(224, 224, 3)" in line


@pytest.mark.parametrize("command", ["plan", "extract"])
def test_imagenet_download_failure_says_how_to_pass_a_file(command, tmp_path):
    """Offline (forced: an empty Keras cache and a proxy that refuses), in-process and in the child."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "https_proxy", "http_proxy")}
    env.update(KERAS_HOME=str(tmp_path / "keras"), HTTPS_PROXY="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    args = [sys.executable, "-m", "pipeline", command, "vgg16", "--input-shape", "32,32,3", "--no-top",
            "--weights", "imagenet"]
    args += ["--out", str(tmp_path / "x"), "-s"] if command == "extract" else ["--json"]
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""  # Keras's download messages go to stderr, never into --json output
    line = done.stderr.strip().splitlines()[-1]
    url = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert line.startswith(f"Error: downloading the ImageNet weights of vgg16 failed (URL fetch failure on {url}: ")
    assert line.endswith("); without internet access, fetch that file elsewhere and pass it: --weights FILE")
