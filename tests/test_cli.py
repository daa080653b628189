"""The CLI: exact error lines, exit codes, and the commands' output on real models."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import keras
import pyarrow.parquet as pq
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


@pytest.fixture(scope="module")
def extracted(tiny_keras, tmp_path_factory):
    """``cnngraph extract`` of tiny_keras, run once (its graph is built in a child process that
    starts TensorFlow): (folder, the command's output). Tests that change the folder copy it."""
    out = tmp_path_factory.mktemp("ext") / "x"
    res = run("extract", str(tiny_keras), "--out", str(out), "-s")
    assert res.exit_code == 0, res.output
    return out, res.output


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
        "Error: unknown model 'nosuchnet': give a .keras/.h5/.onnx file or a keras.applications name such as "
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
    assert res.output.strip() == f"Error: {bad} is not a valid .keras file (Keras writes them as zip archives)"


def test_corrupt_h5_file(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"this is not HDF5")
    res = run("plan", str(bad))
    assert res.exit_code == 1
    assert res.output.strip() == f"Error: {bad} is not a valid .h5 file (not HDF5)"


def test_unsupported_layer(tmp_path):
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(2)])
    path = tmp_path / "rnn.keras"
    model.save(path)
    res = run("plan", str(path))
    assert res.exit_code == 1
    expected = f"Error: layer '{model.layers[0].name}' of type LSTM is not supported; see docs/support.md for the supported types"
    assert res.output.strip() == expected


def test_unsupported_layer_names_close_types(tmp_path):
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(2, 3), keras.layers.ConvLSTM1D(2, 1)])
    path = tmp_path / "convlstm.keras"
    model.save(path)
    res = run("plan", str(path))
    assert res.exit_code == 1
    line = res.output.strip()
    assert line.startswith(f"Error: layer '{model.layers[1].name}' of type ConvLSTM1D is not supported; closest supported types: ")
    assert line.endswith(" (all in docs/support.md)") and len(line) < 200
    closest = line.split("closest supported types: ")[1].split(" (all")[0].split(", ")
    assert 1 <= len(closest) <= 5 and set(closest) <= set(registry.supported())


def test_lambda_layer_in_file_is_refused_before_loading(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2, name="times2"), keras.layers.Dense(2)])
    for suffix in (".keras", ".h5"):
        path = tmp_path / f"lambda{suffix}"
        model.save(path)
        res = run("plan", str(path))
        assert res.exit_code == 1
        assert res.output.strip() == (
            "Error: layer 'times2' of type Lambda is not supported (it runs arbitrary Python code: cnngraph "
            "neither loads it from files nor can turn it into edges; build the model from Keras layers or "
            "keras.ops calls instead)"
        )


def test_unknown_model_suggests_the_closest_names():
    res = run("plan", "vgg61")
    assert res.exit_code == 1
    assert res.output.strip() == (
        "Error: unknown model 'vgg61': did you mean vgg19 or vgg16? (a keras.applications name, or a .keras/.h5/.onnx file)"
    )


def test_plan_of_a_folder_says_it_is_not_a_model(tiny_keras, extracted, tmp_path):
    res = run("plan", str(tmp_path))
    assert res.exit_code == 1
    assert res.output.strip() == f"Error: {tmp_path} is a folder, not a model: give a .keras/.h5 file or a keras.applications name"
    out = extracted[0]
    res = run("plan", str(out))
    assert res.exit_code == 1
    assert res.output.strip() == (
        f"Error: {out} is an extraction folder, not a model: give the model it was extracted from: "
        f"its manifest names {tiny_keras.resolve()}"
    )


def test_missing_weights_file(tmp_path):
    missing = tmp_path / "gone.weights.h5"
    res = run("plan", "vgg16", "--input-shape", "32,32,3", "--no-top", "--weights", str(missing))
    assert res.exit_code == 1
    assert res.output.strip() == f"Error: weights file {missing} does not exist"


def test_weights_file_of_another_model(tiny_keras, tmp_path):
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    weights = tmp_path / "other.weights.h5"
    other.save_weights(weights)
    res = run("plan", "vgg16", "--input-shape", "32,32,3", "--no-top", "--weights", str(weights))
    assert res.exit_code == 1
    line = res.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: cannot load weights file {weights} into vgg16: ")
    assert line.endswith("; it must be saved from the same architecture (same application, input shape and --no-top)")


def test_imagenet_for_a_model_file_is_a_usage_error(tiny_keras):
    res = run("plan", str(tiny_keras), "--weights", "imagenet")
    assert res.exit_code == 1
    assert res.output.strip() == (
        "Error: --weights imagenet applies to keras.applications names; a model file has its own weights "
        "(or pass a weights file)"
    )


def test_usage_error_exits_2():
    res = run("plan")
    assert res.exit_code == 2
    assert "Missing argument 'MODEL'" in res.output


def test_debug_shows_traceback():
    res = run("--debug", "plan", "nosuchnet")
    assert res.exit_code == 1 and res.exception is not None
    assert type(res.exception).__name__ == "ModelError"


def test_extract_then_verify_folder(tiny_keras, extracted):
    out, output = extracted
    assert "wrote 211 nodes and 1,752 edges" in output and "counts match the plan" in output
    res = run("verify", str(out), "-s")
    assert res.exit_code == 0, res.output
    assert "verify passed" in res.output
    res = run("verify", str(tiny_keras), "--folder", str(out), "-s")
    assert res.exit_code == 0, res.output
    assert "verify passed" in res.output


def test_verify_checks_the_folder_files(extracted, tmp_path):
    out = tmp_path / "x"
    shutil.copytree(extracted[0], out)
    part = next((out / "edges").rglob("*.parquet"))
    pq.write_table(pq.read_table(part), part, compression="none")  # the same edges, other bytes
    res = run("verify", str(out), "-s")
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1] == (
        f"Error: {part} has changed since it was written (sha256 differs from the manifest): the extraction "
        f"folder {out} is damaged; rerun `cnngraph extract` into it (--no-check skips this check)"
    )
    res = run("verify", str(out), "--no-check", "-s")
    assert res.exit_code == 0, res.output
    assert "verify passed" in res.output


def test_verify_folder_against_another_model(tiny_keras, extracted, tmp_path):
    out = extracted[0]
    other = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Flatten(), keras.layers.Dense(3, name="head")])
    path = tmp_path / "other.keras"
    other.save(path)
    res = run("verify", str(path), "--folder", str(out), "-s")
    assert res.exit_code == 1
    names = {layer.name for layer in other.layers} | {other.inputs[0]._keras_history[0].name}
    first = next(e["name"] for e in json.loads((out / "manifest.json").read_text())["layers"] if e["name"] not in names)
    assert res.output.strip().splitlines()[-1] == (
        f"Error: {out} was not extracted from {other.name}: it has no layer {first!r}; "
        f"give the model the folder came from ({tiny_keras.resolve()})"
    )


def test_verify_fails_beyond_tolerance(tiny_keras):
    res = run("verify", str(tiny_keras), "--tolerance", "0", "-s")
    assert res.exit_code == 1
    assert "verify FAILED" in res.output and "FAIL" in res.output


def test_extract_refuses_foreign_folder(tiny_keras, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    res = run("extract", str(tiny_keras), "--out", str(tmp_path), "-s")
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1] == (
        f"Error: {tmp_path} is not empty and is not a cnngraph extraction folder (it has no .cnngraph.json "
        "of ours); nothing in it was changed; choose another --out"
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


def test_shipped_queries_by_name():
    from importlib import resources

    from pipeline.cli.cypher import resolve_query
    from pipeline.neo4j.query import shipped_queries

    folder = resources.files("pipeline").joinpath("cypher")
    files = {p.name.removesuffix(".cypher") for p in folder.iterdir() if p.name.endswith(".cypher")}
    assert set(shipped_queries()) == files - {"schema"} and "layer_summary" in files
    assert resolve_query("layer_summary") == folder.joinpath("layer_summary.cypher").read_text()
    for text in ("RETURN 1", "nosuchquery", "cypher/layer_summary.cypher", "schema"):
        assert resolve_query(text) == text
