"""``cnngraph analyze``: a run on a model file writes the tables; every bad input is one ``Error:`` line."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from pipeline.analyze import columns
from pipeline.cli import cli
from tests.helpers import tiny_cnn


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from pipeline.extract import extract
    from pipeline.model import walk

    out = tmp_path_factory.mktemp("f") / "tiny"
    extract(walk(tiny_cnn()), out)
    return str(out)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "tiny.keras"
    tiny_cnn().save(path)
    return str(path)


def run(*args):
    return CliRunner().invoke(cli, ["analyze", *args])


def test_analyze_writes_tables(model_file, tmp_path):
    res = run(model_file, "--out", str(tmp_path / "a"), "--class", "2", "--thresholds", "0,0.1", "--workers", "1")
    assert res.exit_code == 0, res.output
    assert "analyzed 172 neurons and 1,392 edges" in res.output
    neurons = pd.read_parquet(tmp_path / "a" / columns.NEURONS_FILE)
    assert len(neurons) == 172 and columns.INFLUENCE in neurons
    assert neurons[columns.INFLUENCE].iloc[-2] == 1.0  # fc unit 2 of 4 is the target
    path = pd.read_parquet(tmp_path / "a" / columns.PATH_FILE)
    # Keras numbers the auto-named input layer by how many models this process built before
    assert path[columns.LAYER].str.replace(r"_\d+$", "", regex=True).tolist() == ["input_layer", "conv", "pool", "fc"]
    summary = json.loads((tmp_path / "a" / columns.SUMMARY_FILE).read_text())
    assert summary["thresholds"] == [0.0, 0.1] and summary["target"]["id"] == 170
    thr = pd.read_parquet(tmp_path / "a" / columns.THRESHOLDS_FILE)
    assert len(thr) == 4 * 2


def test_model_options_refused_for_folders(folder, tmp_path):
    res = run(folder, "--out", str(tmp_path / "o"), "--no-top")
    assert res.exit_code == 2 and "apply to model sources only" in res.output


@pytest.mark.parametrize("args, message", [
    (["--target", "fc:9"], "Error: unit 9 is out of range 0..3 of layer fc"),
    (["--target", "nope:1"], "Error: no layer named 'nope'"),
    (["--layers", "conv:nope"], "Error: no layer named 'nope'"),
    (["--target", "fc:1", "--class", "1"], "Error: give --target LAYER:INDEX or --class K, not both"),
    (["--thresholds", "0.1,x"], "Error: bad thresholds '0.1,x'"),
    (["--thresholds", "-1"], "Error: bad thresholds '-1'"),
])
def test_errors(folder, tmp_path, args, message):
    res = run(folder, "--out", str(tmp_path / "e"), *args)
    assert res.exit_code == 1, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and lines[0].startswith(message), res.output


def test_refuses_a_folder_not_ours(folder, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    res = run(folder, "--out", str(tmp_path / "mine"))
    assert res.exit_code == 1 and "is not empty and is not a cnngraph analysis folder" in res.output
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
