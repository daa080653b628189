"""`cnngraph run` and `cnngraph cypher` against the real server."""

from __future__ import annotations

import keras
import pytest
from click.testing import CliRunner

from pipeline.cli import cli


@pytest.fixture
def env(neo4j_conn, monkeypatch):
    monkeypatch.setenv("NEO4J_URI", neo4j_conn.uri)
    monkeypatch.setenv("NEO4J_USERNAME", neo4j_conn.username)
    monkeypatch.setenv("NEO4J_PASSWORD", neo4j_conn.password)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    keras.utils.set_random_seed(11)
    model = keras.Sequential(
        [
            keras.Input((5, 5, 2)),
            keras.layers.Conv2D(3, 3, padding="same", activation="relu"),
            keras.layers.AveragePooling2D(2, padding="same"),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ],
        name="small",
    )
    path = tmp_path_factory.mktemp("m") / "small.keras"
    model.save(path)
    return path


def test_run_then_query(env, small_model, tmp_path):
    runner = CliRunner()
    out = tmp_path / "x"
    res = runner.invoke(cli, ["run", str(small_model), "--out", str(out), "--mode", "online",
                              "--model-name", "clirun", "--replace", "-s"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    # conv: 'same' 3x3 over 5x5: 13 members per axis -> 169 * 2 * 3; pool 'same' 2 over 5 -> 3x3x3
    # outputs with 25 members per channel; dense 27 * 2
    assert lines[0] == f"extracted {50 + 75 + 27 + 2} nodes and {169 * 6 + 75 + 54:,} edges to {out} in " + lines[0].split(" in ")[-1]
    assert lines[1].startswith("verified: worst relative error ")
    assert lines[2].startswith("loaded model 'clirun' (online): 154 neurons, 1,143 relationships in ")
    assert lines[2].endswith("counts match the manifest")

    res = runner.invoke(cli, ["cypher", "cypher/layer_summary.cypher", "-p", "model=clirun"])
    assert res.exit_code == 0, res.output
    rows = [line.split("\t") for line in res.output.strip().splitlines()]
    assert rows[0][:3] == ["index", "layer", "type"]
    by_type = {r[2]: r for r in rows[1:]}
    header = rows[0]
    assert by_type["Conv2D"][header.index("neurons")] == "75"
    assert by_type["Conv2D"][header.index("edges")] == str(169 * 6)
    assert by_type["AveragePooling2D"][header.index("edges")] == "75"
    assert by_type["Dense"][header.index("edges")] == "54"
    by_name = runner.invoke(cli, ["cypher", "layer_summary", "-p", "model=clirun"])  # the shipped query
    assert by_name.exit_code == 0 and by_name.output == res.output

    res = runner.invoke(cli, ["cypher", "MATCH (n:Neuron {model: $model}) RETURN count(n) AS n", "-p", "model=clirun"])
    assert res.exit_code == 0 and res.output.split() == ["n", "154"]
    assert runner.invoke(cli, ["drop", "clirun", "-s"]).exit_code == 0


def test_cypher_bad_param(env):
    res = CliRunner().invoke(cli, ["cypher", "RETURN 1", "-p", "no-equals"])
    assert res.exit_code == 1
    assert res.output.strip() == "Error: bad parameter 'no-equals': expected name=value, e.g. model=vgg16"
