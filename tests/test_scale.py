"""Scaling: output independent of worker count and executor (a real Dask LocalCluster), file
sha256 in the manifest, fsspec URLs, graphs built in a child process, and the CLI's options."""

from __future__ import annotations

import hashlib
from pathlib import Path

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipeline import schema
from pipeline.cli import cli
from pipeline.errors import ModelError, UsageError
from pipeline.extract import extract
from pipeline.extract.executors import DaskExecutor, LocalExecutor, make_executor
from pipeline.model import ModelSpec, build, walk
from pipeline.model_store import LEAN_RANDOM_MIN_SIZE, _lean_random, isolated_graph, load_graph, save_graph
from tests.helpers import keras, sequential

L = keras().layers

#: What must not depend on who ran the tasks: counts, checksums, file names and file bytes.
KEY = ("name", "nodes", "edges", "edge_checksum", "node_checksum", "edge_files", "node_files",
       "edge_file_sha256", "node_file_sha256")


def _same(manifest) -> list:
    return [[e[k] for k in KEY] for e in manifest["layers"]]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A saved model with conv, pooling and dense layers (several tasks per layer below)."""
    model = sequential((12, 10, 3), [
        L.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
        L.Conv2D(6, 3, strides=2, name="conv2"),
        L.MaxPooling2D(2, padding="same", name="pool"),
        L.Flatten(name="flat"),
        L.Dense(5, name="fc"),
    ], seed=4)
    path = tmp_path_factory.mktemp("m") / "scale.keras"
    model.save(path)
    return path, walk(model)


@pytest.fixture(scope="module")
def reference(model_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "one"
    return out, extract(model_file[1], out, task_size=300, max_edges=500, workers=1)


def test_manifest_sha256_is_the_files_sha256(reference):
    out, res = reference
    for entry in res.manifest["layers"]:
        files = entry["edge_files"] + entry["node_files"]
        shas = entry["edge_file_sha256"] + entry["node_file_sha256"]
        assert len(files) == len(shas)
        for rel, sha in zip(files, shas, strict=True):
            assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == sha
    assert len(res.manifest["layers"][1]["edge_files"]) > 2  # several tasks: a real test of ordering


def test_two_local_workers_write_identical_files(model_file, reference, tmp_path):
    res = extract(model_file[1], tmp_path / "two", task_size=300, max_edges=500, executor=LocalExecutor(2))
    assert _same(res.manifest) == _same(reference[1].manifest)


@pytest.fixture(scope="module")
def dask_cluster():
    """One real two-worker LocalCluster for the module's Dask tests (starting one costs seconds)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster


def test_dask_local_cluster_writes_identical_files(model_file, reference, tmp_path, dask_cluster):
    from distributed import Client

    with Client(dask_cluster) as client:
        res = extract(model_file[1], f"file://{tmp_path}/dask", task_size=300, max_edges=500,
                      executor=DaskExecutor(client))
        assert len(client.scheduler_info()["workers"]) == 2
    assert _same(res.manifest) == _same(reference[1].manifest)
    assert pq.read_table(tmp_path / "dask" / res.manifest["layers"][1]["edge_files"][0]).num_rows > 0


def test_fsspec_url_output(model_file, reference):
    """A non-local URL (fsspec's in-memory filesystem) gets the same files and a manifest."""
    res = extract(model_file[1], "memory://cnngraph-test/run", task_size=300, max_edges=500, workers=1)
    assert _same(res.manifest) == _same(reference[1].manifest)
    fs = fsspec.filesystem("memory")
    entry = res.manifest["layers"][1]
    with fs.open(f"/cnngraph-test/run/{entry['edge_files'][0]}", "rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == entry["edge_file_sha256"][0]
    assert fs.exists(f"/cnngraph-test/run/{schema.MANIFEST}")
    assert not fs.exists("/cnngraph-test/run/.partial")
    fs.rm("/cnngraph-test", recursive=True)


def test_saved_graph_maps_weights_and_gives_same_output(model_file, reference, tmp_path):
    save_graph(model_file[1], tmp_path / "g")
    graph = load_graph(tmp_path / "g")
    assert graph.weights_dir == str(tmp_path / "g")
    assert type(graph.layer("conv1").weights["kernel"]).__name__ == "memmap"
    res = extract(graph, tmp_path / "out", task_size=300, max_edges=500, workers=2)
    assert _same(res.manifest) == _same(reference[1].manifest)


def test_graph_built_in_child_process(model_file, reference):
    with isolated_graph(ModelSpec(str(model_file[0]))) as graph:
        res = extract(graph, None, task_size=300, max_edges=500)
    key = ("name", "edges", "edge_checksum", "node_checksum")
    assert [[e[k] for k in key] for e in res.manifest["layers"]] == [[e[k] for k in key] for e in reference[1].manifest["layers"]]


def test_child_builds_the_same_weights_as_this_process():
    """The child spools weights to files and draws large initialisers as tf.functions (oneDNN
    off): VGG16's 2.4 M-value block5 kernels take that path and must come out bit-identical."""
    spec = ModelSpec("vgg16", input_shape=(32, 32, 3), include_top=False)
    _, here = build(spec)
    assert max(w.size for la in here.layers for w in la.weights.values()) >= LEAN_RANDOM_MIN_SIZE
    with isolated_graph(spec) as graph:
        assert [la.type for la in graph.layers] == [la.type for la in here.layers]
        for mine, theirs in zip(here.layers, graph.layers, strict=True):
            assert mine.weights.keys() == theirs.weights.keys()
            for name, value in mine.weights.items():
                assert np.array_equal(value, theirs.weights[name]), (mine.name, name)
        assert not list(Path(graph.weights_dir).glob("spool-*"))


@pytest.mark.parametrize("init", ["glorot_uniform", "he_normal", "lecun_normal", "random_normal",
                                  "random_uniform", "truncated_normal", "variance_scaling"])
def test_lean_random_draws_the_same_values(init):
    initializers = keras().initializers
    for seed in (0, 7):
        plain = np.asarray(initializers.get({"class_name": init, "config": {"seed": seed}})((64, 33)))
        with _lean_random(min_size=1):
            lean = np.asarray(initializers.get({"class_name": init, "config": {"seed": seed}})((64, 33)))
        assert np.array_equal(plain, lean)
        assert plain.std() > 0


def test_child_process_errors_are_raised_here():
    with pytest.raises(ModelError, match="unknown model 'no_such_net'"):
        with isolated_graph(ModelSpec("no_such_net")):
            pass


def test_executor_errors():
    with pytest.raises(UsageError, match="--scheduler"):
        make_executor("dask")
    with pytest.raises(UsageError, match="unknown executor"):
        make_executor("spark")
    assert LocalExecutor().workers >= 1


def test_cli_null_format_and_out_required(model_file):
    runner = CliRunner()
    res = runner.invoke(cli, ["extract", str(model_file[0]), "--format", "null", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "counted" in res.output and "counts match the plan" in res.output
    res = runner.invoke(cli, ["extract", str(model_file[0])])
    assert res.exit_code == 1
    assert "Error: --out is required (or --format null" in res.output


def test_cli_dask_executor(model_file, reference, tmp_path, dask_cluster):
    res = CliRunner().invoke(cli, ["extract", str(model_file[0]), "--out", str(tmp_path / "o"),
                                   "--executor", "dask", "--scheduler", dask_cluster.scheduler_address])
    assert res.exit_code == 0, res.output
    assert (Path(tmp_path) / "o" / schema.MANIFEST).exists()


def test_cli_plan_states_import_time(model_file):
    res = CliRunner().invoke(cli, ["plan", str(model_file[0])])
    assert res.exit_code == 0, res.output
    assert "neo4j bulk import: files about" in res.output and "store about" in res.output and "relationships/s (measured" in res.output
    assert "neo4j online load: about" in res.output and "reading back into NetworkX about" in res.output
