"""The CLI: exact error lines, exit codes, and the commands' output on real models."""

from __future__ import annotations

import json
import subprocess
import sys

import keras
import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.layers import registry


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory):
    """A small saved model: Conv2D -> MaxPooling2D -> Flatten -> Dense."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(3, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    model.save(path)
    return path


def test_plan_json_counts(tiny_keras):
    res = run("plan", str(tiny_keras), "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    # conv: 'same' 3x3 over 6x6 clips at the border: 16 members per axis, 256 per channel pair
    by_name = {lp["name"]: lp for lp in data["layers"]}
    conv = next(lp for lp in data["layers"] if lp["type"] == "Conv2D")
    assert conv["nodes"] == 6 * 6 * 3 and conv["edges"] == 256 * 2 * 3
    pool = next(lp for lp in data["layers"] if lp["type"] == "MaxPooling2D")
    assert pool["nodes"] == 27 and pool["edges"] == 108
    dense = next(lp for lp in data["layers"] if lp["type"] == "Dense")
    assert dense["edges"] == 27 * 4
    assert by_name[next(n for n in by_name if n.startswith("flatten"))]["nodes"] == 0
    assert data["nodes"] == 72 + 108 + 27 + 4 and data["edges"] == 1536 + 108 + 108


def test_plan_vgg16_table():
    res = run("plan", "vgg16", "--input-shape", "32,32,3", "--no-top")
    assert res.exit_code == 0, res.output
    assert "310,784" in res.output and "247,433,984" in res.output
    assert "estimated size: parquet" in res.output


def test_bad_input_shape():
    res = run("plan", "vgg16", "--input-shape", "32,x,3")
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1] == "Error: bad input shape '32,x,3': expected positive integers like 32,32,3"


def test_unknown_model():
    res = run("plan", "nosuchnet")
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1] == (
        "Error: unknown model 'nosuchnet': give a .keras/.h5 file or a keras.applications name such as "
        "vgg16, vgg19, resnet50, mobilenet_v2"
    )


def test_missing_file(tmp_path):
    missing = tmp_path / "gone.keras"
    res = run("plan", str(missing))
    assert res.exit_code == 1
    assert res.output.strip() == f"Error: model file {missing} does not exist"


def test_corrupt_file(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"this is not a zip archive")
    res = run("plan", str(bad))
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: cannot read model file {bad}: ")


def test_unsupported_layer(tmp_path):
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(2)])
    path = tmp_path / "rnn.keras"
    model.save(path)
    res = run("plan", str(path))
    assert res.exit_code == 1
    expected = (
        f"Error: layer '{model.layers[0].name}' of type LSTM is not supported; "
        f"supported types: {', '.join(registry.supported())}"
    )
    assert res.output.strip() == expected


def test_usage_error_exits_2():
    res = run("plan")
    assert res.exit_code == 2
    assert "Missing argument 'MODEL'" in res.output


def test_debug_shows_traceback():
    res = run("--debug", "plan", "nosuchnet")
    assert res.exit_code == 1 and res.exception is not None
    assert type(res.exception).__name__ == "ModelError"


def test_extract_then_verify_folder(tiny_keras, tmp_path):
    out = tmp_path / "x"
    res = run("extract", str(tiny_keras), "--out", str(out), "-s")
    assert res.exit_code == 0, res.output
    assert "wrote 211 nodes and 1,752 edges" in res.output and "counts match the plan" in res.output
    res = run("verify", str(out), "-s")
    assert res.exit_code == 0, res.output
    assert "verify passed" in res.output


def test_verify_fails_beyond_tolerance(tiny_keras):
    res = run("verify", str(tiny_keras), "--tolerance", "0", "-s")
    assert res.exit_code == 1
    assert "verify FAILED" in res.output and "FAIL" in res.output


def test_extract_refuses_foreign_folder(tiny_keras, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    res = run("extract", str(tiny_keras), "--out", str(tmp_path), "-s")
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1] == (
        f"Error: {tmp_path} is not empty and is not a cnngraph extraction folder; choose another --out"
    )
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_bad_layer_range(tiny_keras, tmp_path):
    res = run("extract", str(tiny_keras), "--out", str(tmp_path / "o"), "--layers", "nope:also", "-s")
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1].startswith("Error: no layer named 'nope'; layers: ")


def test_python_dash_m():
    done = subprocess.run([sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True, check=True)
    assert "plan" in done.stdout and "extract" in done.stdout and "verify" in done.stdout


def test_every_command_has_help():
    for name, command in cli.commands.items():
        assert command.help, f"command {name} has no help text"
        res = run(name, "--help")
        assert res.exit_code == 0, name
