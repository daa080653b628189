"""Bulk and online loaders against the real Neo4j server (no mocks; a missing server fails).

The bulk tests replace the whole database, so they run first in this module; the other tests
add models beside what is there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from pipeline import errors, schema
from pipeline.neo4j import common, db, loader, online
from pipeline.neo4j.server import Connection, ManagedServer
from tests.neo4j_plugin import run_import_script

ROOT = Path(__file__).resolve().parents[1]
MANAGED = not os.environ.get("NEO4J_URI")


# Fixtures: real tiny Keras CNNs extracted with the project's extractor ------------------------


def extract_tiny(out: Path, seed: int, name: str, shape=(6, 6, 2), filters=3, granularity="neuron") -> Path:
    """Conv2D -> MaxPooling2D -> Flatten -> Dense, random biases, extracted into ``out``."""
    import keras

    from pipeline.extract import extract
    from pipeline.model import randomize_biases, walk

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(shape, name="input"),
            keras.layers.Conv2D(filters, 3, activation="relu", name="conv"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(4, activation="softmax", name="fc"),
        ],
        name=name,
    )
    randomize_biases(model, seed)
    extract(walk(model), out, granularity=granularity)
    return out


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return extract_tiny(tmp_path_factory.mktemp("ext") / "tiny", 0, "tiny")


@pytest.fixture(scope="session", params=["channel", "layer"])
def coarse_dir(request, tmp_path_factory) -> Path:
    """The tiny model at a coarse granularity (kernel lists on edges; layer shapes and configs)."""
    gran = request.param
    return extract_tiny(tmp_path_factory.mktemp("ext") / gran, 0, "tiny", granularity=gran)


@pytest.fixture(scope="session")
def other_dir(tmp_path_factory) -> Path:
    return extract_tiny(tmp_path_factory.mktemp("ext") / "other", 1, "other", (8, 8, 1), 2)


# Helpers ---------------------------------------------------------------------------------


def ext_nodes(dir: Path) -> pd.DataFrame:
    df = pd.read_parquet(dir / schema.NODES_DIR)
    for col in (schema.LAYER, schema.LAYER_TYPE, schema.ACTIVATION):
        df[col] = df[col].astype(str)
    return df.sort_values(schema.ID).reset_index(drop=True)


def ext_edges(dir: Path) -> pd.DataFrame:
    df = pd.read_parquet(dir / schema.EDGES_DIR)
    df[schema.KIND] = df[schema.KIND].astype(str)
    return df.sort_values([schema.TARGET, schema.SOURCE]).reset_index(drop=True)


def db_nodes(driver, model: str) -> pd.DataFrame:
    records, _, _ = driver.execute_query(
        "MATCH (n:Neuron {model: $m}) RETURN n.id AS id, n.layer AS layer, labels(n) AS labels, "
        "n.d AS d, n.h AS h, n.w AS w, n.c AS c, n.bias AS bias, n.activation AS activation, "
        "n.output_shape AS output_shape, n.params AS params, n.config AS config",
        m=model,
    )
    return pd.DataFrame([r.data() for r in records]).sort_values("id").reset_index(drop=True)


def db_edges(driver, model: str) -> pd.DataFrame:
    records, _, _ = driver.execute_query(
        "MATCH (a:Neuron {model: $m})-[r:CONNECTS]->(b) "
        "RETURN a.id AS source, b.id AS target, r.weight AS weight, r.kind AS kind, "
        "r.kernel AS kernel, r.shape AS shape, b.model AS target_model",
        m=model,
    )
    df = pd.DataFrame([r.data() for r in records])
    assert (df["target_model"] == model).all()
    return df.drop(columns="target_model").sort_values(["target", "source"]).reset_index(drop=True)


def assert_round_trip(driver, dir: Path, model: str) -> None:
    """Neurons, labels, positions, biases, edges, weights and the layer graph equal the tables."""
    want_n, got_n = ext_nodes(dir), db_nodes(driver, model)
    assert len(got_n) == len(want_n)
    assert (got_n["id"].to_numpy() == want_n[schema.ID].to_numpy()).all()
    assert (got_n["layer"] == want_n[schema.LAYER]).all()
    assert [sorted(x) for x in got_n["labels"]] == [
        sorted(["Neuron", t]) for t in want_n[schema.LAYER_TYPE]
    ]
    for pos in schema.POSITION:
        want = want_n[pos].to_numpy()
        got = got_n[pos].to_numpy()
        assert all((w == -1 and (g is None or np.isnan(g))) or g == w
                   for g, w in zip(got, want, strict=True)), pos
    # float32 -> stored double (online) or float (bulk): both give the float32 value back exactly.
    assert (got_n["bias"].to_numpy(np.float32) == want_n[schema.BIAS].to_numpy()).all()
    assert (got_n["activation"] == want_n[schema.ACTIVATION]).all()

    want_e, got_e = ext_edges(dir), db_edges(driver, model)
    assert len(got_e) == len(want_e)
    for col in (schema.SOURCE, schema.TARGET):
        assert (got_e[col].to_numpy() == want_e[col].to_numpy()).all()
    assert (got_e["weight"].to_numpy(np.float32) == want_e[schema.WEIGHT].to_numpy()).all()
    assert (got_e["kind"] == want_e[schema.KIND]).all()
    # Coarse granularities: kernel slices (float32 exact), tensor and output shapes, configs.
    for got, want, names in ((got_n, want_n, schema.EXTRA_NODE_COLUMNS), (got_e, want_e, schema.EXTRA_EDGE_COLUMNS)):
        for name in names:
            if name not in want.columns:
                assert got[name].isna().all(), name
                continue
            for g, w in zip(got[name], want[name], strict=True):
                if name == schema.KERNEL:
                    assert np.array_equal(np.asarray(g, np.float32), np.asarray(w, np.float32))
                elif name in (schema.SHAPE, schema.OUTPUT_SHAPE):
                    assert list(g) == list(w), name
                else:
                    assert g == w, name

    manifest = json.loads((dir / schema.MANIFEST).read_text())
    records, _, _ = driver.execute_query(
        "MATCH (l:Layer {model: $m}) RETURN l.name AS name, l.type AS type, l.index AS index, "
        "l.params AS params, [(p:Layer)-[:FEEDS]->(l) | p.name] AS inbound", m=model,
    )
    got_layers = {r["name"]: (r["type"], r["index"], r["params"], sorted(r["inbound"]))
                  for r in records}
    assert got_layers == {
        la["name"]: (la["type"], la["index"], la["params"], sorted(la["inbound"]))
        for la in manifest["layers"]
    }
    info = db.model_info(driver, model)
    assert info["status"] == "complete" and info["edges"] == manifest["edges"]
    assert_layer_ranges(driver, dir, model)


def assert_layer_ranges(driver, dir: Path, model: str) -> None:
    """Every ``:Layer`` holds its id range (``id_start``, ``id_stop``: ints) as in the manifest,
    whichever loader wrote it (online, bulk, --after-import)."""
    manifest = json.loads((dir / schema.MANIFEST).read_text())
    records, _, _ = driver.execute_query(
        "MATCH (l:Layer {model: $m}) RETURN l.name AS name, l.id_start AS start, l.id_stop AS stop", m=model)
    got = {r["name"]: (r["start"], r["stop"]) for r in records}
    assert got == {la["name"]: (la["id_start"], la["id_stop"]) for la in manifest["layers"]}
    assert all(isinstance(v, int) for pair in got.values() for v in pair)


def duplicate_relationships(driver, model: str) -> int:
    records, _, _ = driver.execute_query(
        "MATCH (a:Neuron {model: $m})-[r:CONNECTS]->(b) WITH a, b, count(r) AS n WHERE n > 1 "
        "RETURN count(*) AS dups", m=model,
    )
    return records[0]["dups"]


# Bulk (first: it replaces the database) -----------------------------------------------------


@pytest.mark.parametrize("input_type", ["parquet", "csv"])  # csv (the default) last
def test_bulk_round_trip_and_refusal(neo4j_conn, tiny_dir, input_type):
    if not MANAGED:
        with pytest.raises(errors.UsageError, match="managed server"):
            loader.load(tiny_dir, "bulk", "bulkm", replace=True, conn=neo4j_conn)
        return
    result = loader.load(tiny_dir, "bulk", "bulkm", replace=True, conn=neo4j_conn,
                         input_type=input_type)
    assert (result.mode, result.relationships) == ("bulk", 960)
    assert result.timings["import"] > 0
    from pipeline.neo4j.server import driver

    with driver(neo4j_conn) as drv:
        assert_round_trip(drv, tiny_dir, "bulkm")
        assert duplicate_relationships(drv, "bulkm") == 0
    # The database now holds data: a second bulk load must not silently wipe it.
    with pytest.raises(errors.UsageError, match=r"bulkm.*--replace"):
        loader.load(tiny_dir, "bulk", "bulkm2", conn=neo4j_conn)


def test_bulk_coarse_granularity(neo4j_conn, coarse_dir):
    if not MANAGED:
        return  # bulk needs the managed server (refusal tested above); online covers the rest
    from pipeline.neo4j.server import driver

    result = loader.load(coarse_dir, "bulk", "coarseb", replace=True, conn=neo4j_conn)
    assert result.relationships == json.loads((coarse_dir / schema.MANIFEST).read_text())["edges"]
    with driver(neo4j_conn) as drv:
        assert_round_trip(drv, coarse_dir, "coarseb")


def test_import_files_for_another_server(neo4j_conn, tiny_dir, tmp_path):
    """--files-only writes import files and import.sh; run by a neo4j-admin (the managed home's,
    standing in for the user's server), then --after-import adds the layers and checks counts."""
    from pipeline.neo4j import bulk
    from pipeline.neo4j.server import driver

    loader.drop(neo4j_conn, "srvm")  # left by an earlier run of this test alone
    files = bulk.write_server_files(tiny_dir, tmp_path / "imp", "srvm")
    script = "\n".join(line for line in files.script.read_text().splitlines() if not line.startswith("#"))
    assert files.script.stat().st_mode & 0o111 and "--overwrite-destination" not in script
    assert '--nodes=Neuron:Conv2D="$D"/nodes-' in script and not (files.folder / bulk._PARTIAL).exists()
    assert files.bytes == sum(f.stat().st_size for f in files.folder.rglob("*") if f.is_file())
    assert len(list(files.folder.rglob("part-*.csv.gz"))) >= 4
    with pytest.raises(errors.UsageError, match=r"no neurons of model 'srvm'.*import.sh"):
        bulk.after_import(tiny_dir, "srvm", conn=neo4j_conn)
    foreign = tmp_path / "foreign"
    (foreign / "x").mkdir(parents=True)
    with pytest.raises(errors.OutputError, match="is not empty and .*choose another folder"):
        bulk.write_server_files(tiny_dir, foreign, "srvm")
    assert bulk.write_server_files(tiny_dir, files.folder, "srvm").bytes == files.bytes  # rerun: replaced
    if not MANAGED:
        return
    run_import_script(files.script, tmp_path)
    result = bulk.after_import(tiny_dir, "srvm", conn=neo4j_conn)
    assert (result.nodes, result.relationships) == (files.nodes, files.relationships) == (136, 960)
    with driver(neo4j_conn) as drv:
        assert_round_trip(drv, tiny_dir, "srvm")
        assert duplicate_relationships(drv, "srvm") == 0


def test_bulk_refuses_foreign_server(tiny_dir, monkeypatch):
    monkeypatch.setenv("NEO4J_URI", "bolt://db.example.invalid:7687")
    with pytest.raises(errors.UsageError, match="--mode online"):
        loader.load(tiny_dir, "bulk", "x", replace=True)


# Online --------------------------------------------------------------------------------------


def test_online_round_trip_coexist_and_drop(neo4j_conn, neo4j_driver, tiny_dir, other_dir):
    a = loader.load(tiny_dir, "online", "onlA", replace=True, conn=neo4j_conn, batch_size=100)
    b = loader.load(other_dir, "online", "onlB", replace=True, conn=neo4j_conn)
    loader.load(tiny_dir, "online", "onlC", replace=True, conn=neo4j_conn)
    assert (a.nodes, a.relationships, a.batches_done) == (136, 960, 4 + 11)
    assert b.relationships == json.loads((other_dir / schema.MANIFEST).read_text())["edges"]
    # Same ids in two models (onlA, onlC) and a different model (onlB) side by side.
    assert_round_trip(neo4j_driver, tiny_dir, "onlA")
    assert_round_trip(neo4j_driver, other_dir, "onlB")
    assert_round_trip(neo4j_driver, tiny_dir, "onlC")
    names = [m["name"] for m in db.models(neo4j_driver)]
    assert {"onlA", "onlB", "onlC"} <= set(names)
    assert not neo4j_driver.execute_query("MATCH (s:LoadState) RETURN s").records

    deleted = loader.drop(neo4j_conn, "onlA")
    assert deleted["nodes"] == 136 + 1 + 5  # neurons, the model, its layers
    assert deleted["relationships"] == 960 + 4  # CONNECTS and FEEDS
    assert db.model_info(neo4j_driver, "onlA") is None
    assert not db.layer_counts(neo4j_driver, "onlA")
    assert_round_trip(neo4j_driver, tiny_dir, "onlC")  # untouched
    assert_round_trip(neo4j_driver, other_dir, "onlB")
    assert loader.drop(neo4j_conn, "onlA") == {"relationships": 0, "nodes": 0}
    loader.drop(neo4j_conn, "onlB")
    loader.drop(neo4j_conn, "onlC")


def test_online_coarse_granularity_and_export(neo4j_conn, neo4j_driver, coarse_dir, tmp_path):
    """Loaded online, then exported from Neo4j and from the folder: the kernel slices, shapes and
    configs reach NetworkX (lists), GraphML (JSON text) and Parquet (list columns) unchanged."""
    import networkx as nx

    from pipeline.export import to_networkx, write_graphml, write_parquet

    loader.load(coarse_dir, "online", "coarseo", replace=True, conn=neo4j_conn)
    assert_round_trip(neo4j_driver, coarse_dir, "coarseo")
    assert db.model_info(neo4j_driver, "coarseo")["granularity"] == coarse_dir.name
    want_n, want_e = ext_nodes(coarse_dir), ext_edges(coarse_dir)
    extra_e = [c for c in schema.EXTRA_EDGE_COLUMNS if c in want_e.columns]
    extra_n = [c for c in schema.EXTRA_NODE_COLUMNS if c in want_n.columns]
    assert extra_e  # kernel (channel) or shape (layer)
    want = {(s, t): [list(r[c]) for c in extra_e] for s, t, *_ in want_e.itertuples(index=False)
            for r in [want_e.set_index([schema.SOURCE, schema.TARGET]).loc[(s, t)]]}
    want_nodes = {r[schema.ID]: [r[c] if c == schema.CONFIG or c == schema.PARAMS else list(r[c]) for c in extra_n]
                  for _, r in want_n.iterrows()}
    for i, source in enumerate((coarse_dir, "neo4j:coarseo")):
        G = to_networkx(source, conn=neo4j_conn)
        assert {(u, v): [list(d[c]) for c in extra_e] for u, v, d in G.edges(data=True)} == want
        assert {n: [d[c] for c in extra_n] for n, d in G.nodes(data=True)} == want_nodes
        path = write_graphml(source, tmp_path / f"g{i}.graphml", conn=neo4j_conn).path
        H = nx.read_graphml(path, node_type=int)
        assert {(u, v): [json.loads(d[c]) for c in extra_e] for u, v, d in H.edges(data=True)} == want
        out = write_parquet(source, tmp_path / f"pq{i}", conn=neo4j_conn).path
        got = pd.read_parquet(out / schema.EDGES_DIR)
        assert {(s, t): [list(r[c]) for c in extra_e] for _, r in got.iterrows() for s, t in [(r[schema.SOURCE], r[schema.TARGET])]} == want
        got_n = pd.read_parquet(out / schema.NODES_DIR)
        assert set(extra_n) <= set(got_n.columns)
    loader.drop(neo4j_conn, "coarseo")


@pytest.mark.parametrize("form", ["key", "id", "distinct"])
def test_edge_query_forms(neo4j_conn, neo4j_driver, tiny_dir, monkeypatch, form):
    monkeypatch.setattr(online, "EDGE_QUERY", form)
    loader.load(tiny_dir, "online", "forms", replace=True, conn=neo4j_conn, batch_size=50)
    assert_round_trip(neo4j_driver, tiny_dir, "forms")
    assert duplicate_relationships(neo4j_driver, "forms") == 0
    loader.drop(neo4j_conn, "forms")


def test_missing_endpoint_is_not_committed(neo4j_conn, neo4j_driver, tiny_dir):
    """A batch whose endpoint vanished raises and commits nothing (no partial batch)."""
    import pyarrow.parquet as pq

    loader.load(tiny_dir, "online", "gone", replace=True, conn=neo4j_conn)
    manifest = loader.read_manifest(tiny_dir)
    info = db.model_info(neo4j_driver, "gone")
    owner = (info["load_run"], info["fingerprint"])
    edges = pq.read_table(tiny_dir / common.layer_files(tiny_dir, manifest, "edge_files")[0][1])
    with neo4j_driver.session() as session:
        nids = loader.NeuronIds.fetch(session, manifest, "gone")
        victim = int(edges.column(schema.SOURCE)[0].as_py())
        neo4j_driver.execute_query("MATCH (n:Neuron {model: 'gone', id: $id}) DETACH DELETE n",
                                   id=victim)
        neo4j_driver.execute_query("CREATE (:LoadState {model: 'gone', done: [], run: $run})",
                                   run=owner[0])
        before = db.layer_counts(neo4j_driver, "gone")
        for form in ("id", "distinct"):
            query, params = loader.edge_batch(edges, "gone", nids, form)
            with pytest.raises(errors.Neo4jError, match="endpoint is missing"):
                online.write_batch(session, "gone", 999, query, params, *owner)
        assert db.layer_counts(neo4j_driver, "gone") == before
    loader.drop(neo4j_conn, "gone")


def test_load_twice_is_idempotent(neo4j_conn, neo4j_driver, tiny_dir, other_dir):
    loader.load(tiny_dir, "online", "twice", replace=True, conn=neo4j_conn)
    again = loader.load(tiny_dir, "online", "twice", conn=neo4j_conn)
    assert again.skipped and again.batches_done == 0
    assert_round_trip(neo4j_driver, tiny_dir, "twice")
    with pytest.raises(errors.UsageError, match="different extraction.*--replace"):
        loader.load(other_dir, "online", "twice", conn=neo4j_conn)
    loader.load(other_dir, "online", "twice", replace=True, conn=neo4j_conn)
    assert_round_trip(neo4j_driver, other_dir, "twice")
    loader.drop(neo4j_conn, "twice")


def test_mismatch_is_reported(neo4j_conn, neo4j_driver, tiny_dir):
    loader.load(tiny_dir, "online", "mism", replace=True, conn=neo4j_conn)
    neo4j_driver.execute_query(
        "MATCH (:Neuron {model: 'mism', layer: 'fc'})<-[r:CONNECTS]-() WITH r LIMIT 3 DELETE r")
    manifest = loader.read_manifest(tiny_dir)
    with pytest.raises(errors.LoadMismatch, match=r"fc: manifest \(4, 48\) database \(4, 45\)"):
        db.verify_counts(neo4j_driver, manifest, "mism")
    loader.drop(neo4j_conn, "mism")


KILLER = textwrap.dedent("""
    import os, signal, sys
    import neo4j
    from pipeline.neo4j import loader
    from pipeline.neo4j.server import Connection
    uri, user, password, where, n, directory = sys.argv[1:7]
    n = int(n)
    commits = [0]
    real_commit = neo4j.Transaction.commit
    def commit(self):
        commits[0] += 1
        if where == "before-commit" and commits[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        out = real_commit(self)
        if where == "after-commit" and commits[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    neo4j.Transaction.commit = commit
    loader.load(directory, "online", "killed", conn=Connection(uri, user, password),
                batch_size=40)
    print("finished")
""")


def test_sigkill_then_resume(neo4j_conn, neo4j_driver, tiny_dir):
    loader.drop(neo4j_conn, "killed")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    seen = []
    # 32 batches of 40 rows; the runs stop after 2, 2+4, 6+9 and 15+9 committed batches.
    for where, n in (("after-commit", 2), ("before-commit", 5), ("after-commit", 9),
                     ("before-commit", 10)):
        proc = subprocess.run(
            [sys.executable, "-c", KILLER, neo4j_conn.uri, neo4j_conn.username,
             neo4j_conn.password, where, str(n), str(tiny_dir)],
            env=env, capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        records, _, _ = neo4j_driver.execute_query(
            "MATCH (s:LoadState {model: 'killed'}) RETURN size(s.done) AS done")
        seen.append(records[0]["done"])
        assert duplicate_relationships(neo4j_driver, "killed") == 0
    # Every run adds at least the batch it committed, never one twice.
    assert seen == [2, 6, 15, 24]
    result = loader.load(tiny_dir, "online", "killed", conn=neo4j_conn, batch_size=40)
    assert result.batches_skipped == seen[-1] and result.batches_done > 0
    assert_round_trip(neo4j_driver, tiny_dir, "killed")
    assert duplicate_relationships(neo4j_driver, "killed") == 0
    loader.drop(neo4j_conn, "killed")


def test_server_stopped_mid_load_then_resume(neo4j_conn, neo4j_driver, tiny_dir, monkeypatch):
    if not MANAGED:
        pytest.fail("this test stops the server: run it against the managed server")
    loader.drop(neo4j_conn, "stopped")
    server = ManagedServer()
    real = online.write_batch
    calls = [0]

    def write_then_stop(session, model, unit, query, params, *owner):
        calls[0] += 1
        if calls[0] == 4:
            server.stop()
        return real(session, model, unit, query, params, *owner)

    monkeypatch.setattr(online, "write_batch", write_then_stop)
    try:
        with pytest.raises(errors.Neo4jUnavailable, match="rerun the same command to resume"):
            loader.load(tiny_dir, "online", "stopped", conn=neo4j_conn, batch_size=40,
                        retry_time=3)
    finally:
        monkeypatch.setattr(online, "write_batch", real)
        server.start()
    result = loader.load(tiny_dir, "online", "stopped", conn=neo4j_conn, batch_size=40)
    assert result.batches_skipped == 3
    from pipeline.neo4j.server import driver

    with driver(neo4j_conn) as drv:
        assert_round_trip(drv, tiny_dir, "stopped")
        assert duplicate_relationships(drv, "stopped") == 0
    loader.drop(neo4j_conn, "stopped")


def test_wrong_password(neo4j_conn, tiny_dir):
    bad = Connection(neo4j_conn.uri, neo4j_conn.username, neo4j_conn.password + "-wrong")
    with pytest.raises(errors.Neo4jError, match="password|credentials|rejected"):
        loader.load(tiny_dir, "online", "pw", conn=bad)


@pytest.mark.parametrize("name", [
    "x`) DETACH DELETE n //", "1abc", "", "a" * 65, "a-b", "ok name", "Model'}) MATCH (n",
    "abc\n", "abc\r", "abc\n//",
])
def test_malicious_model_names_rejected(tiny_dir, name):
    # The connection points nowhere: validation must happen before any query.
    nowhere = Connection("bolt://127.0.0.1:1", "neo4j", "x")
    with pytest.raises(errors.UsageError, match="invalid model name"):
        loader.load(tiny_dir, "online", name, conn=nowhere)
    with pytest.raises(errors.UsageError, match="invalid model name"):
        loader.drop(nowhere, name)


def test_malicious_layer_type_rejected(tiny_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    manifest = json.loads((bad / schema.MANIFEST).read_text())
    nowhere = Connection("bolt://127.0.0.1:1", "neo4j", "x")
    for label in ("Conv2D`) DETACH DELETE (n", "Conv2D\n"):
        manifest["layers"][1]["type"] = label
        (bad / schema.MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(errors.UsageError, match="invalid layer type label"):
            loader.load(bad, "online", "ok", conn=nowhere)


def test_incomplete_extraction(tmp_path):
    with pytest.raises(errors.OutputError, match="not a complete extraction"):
        loader.load(tmp_path, "online", "x")


def test_cli_load_and_drop(neo4j_conn, neo4j_driver, tiny_dir, monkeypatch):
    from pipeline.cli import cli

    if not MANAGED:
        monkeypatch.setenv("NEO4J_PASSWORD", neo4j_conn.password)
    runner = CliRunner()
    result = runner.invoke(cli, ["load", str(tiny_dir), "--mode", "online", "--model-name",
                                          "clim", "--replace", "-s"])
    assert result.exit_code == 0, result.output
    assert "loaded model 'clim' (online): 136 neurons, 960 relationships" in result.output
    assert_round_trip(neo4j_driver, tiny_dir, "clim")
    result = runner.invoke(cli, ["load", str(tiny_dir), "--mode", "online", "--model-name",
                                          "bad name", "-s"])
    assert result.exit_code == 1
    assert "Error: invalid model name 'bad name'" in result.output
    result = runner.invoke(cli, ["drop", "clim", "-s"])
    assert result.exit_code == 0, result.output
    assert "dropped model 'clim': 142 nodes, 964 relationships" in result.output


def test_cli_files_only_and_after_import(neo4j_conn, tiny_dir, tmp_path, monkeypatch):
    from pipeline.cli import cli

    if not MANAGED:
        monkeypatch.setenv("NEO4J_PASSWORD", neo4j_conn.password)
    runner = CliRunner()
    out = tmp_path / "imp"
    result = runner.invoke(cli, ["load", str(tiny_dir), "--files-only", str(out), "--model-name", "clif", "-s"])
    assert result.exit_code == 0, result.output
    assert "wrote import files for model 'clif' (136 neurons, 960 relationships" in result.output
    assert f"sh {out / 'import.sh'}" in result.output and "--after-import --model-name clif" in result.output
    result = runner.invoke(cli, ["load", str(tiny_dir), "--after-import", "--model-name", "clif", "-s"])
    assert result.exit_code == 1 and "Error: the database at" in result.output
    assert "holds no neurons of model 'clif'" in result.output
    result = runner.invoke(cli, ["load", str(tiny_dir), "--mode", "online", "--files-only", str(out)])
    assert result.exit_code == 2 and "--files-only and --after-import belong to --mode bulk" in result.output
    result = runner.invoke(cli, ["load", str(tiny_dir), "--files-only", str(out), "--after-import"])
    assert result.exit_code == 2 and "two steps" in result.output
