"""States a load or an export must refuse, against the real server: an interrupted drop, a model
dropped or replaced during an online load, and damaged extraction files."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import errors, schema
from pipeline.neo4j import bulk, common, db, loader, online
from tests.test_neo4j_load import MANAGED, ROOT, assert_round_trip, duplicate_relationships, extract_tiny


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return extract_tiny(tmp_path_factory.mktemp("ext") / "tiny", 0, "tiny")


@pytest.fixture(scope="module")
def other_dir(tmp_path_factory) -> Path:
    return extract_tiny(tmp_path_factory.mktemp("ext") / "other", 1, "other", (8, 8, 1), 2)


@pytest.fixture
def cli_env(neo4j_conn, monkeypatch):
    if not MANAGED:
        monkeypatch.setenv("NEO4J_PASSWORD", neo4j_conn.password)
    return CliRunner()


# Drop ------------------------------------------------------------------------------------

#: Runs ``loader.drop`` and SIGKILLs itself when the drop starts its second deletion step.
DROP_KILLER = textwrap.dedent("""
    import os, signal, sys
    import neo4j
    from pipeline.neo4j import loader
    from pipeline.neo4j.server import Connection
    uri, user, password, name = sys.argv[1:5]
    steps = [0]
    real_run = neo4j.Session.run
    def run(self, query, *args, **kwargs):
        if "IN TRANSACTIONS" in str(query):
            steps[0] += 1
            if steps[0] == 2:  # the first deletion step has committed
                os.kill(os.getpid(), signal.SIGKILL)
        return real_run(self, query, *args, **kwargs)
    neo4j.Session.run = run
    loader.drop(Connection(uri, user, password), name)
    print("finished")
""")


def test_interrupted_drop_is_refused_then_finished(neo4j_conn, neo4j_driver, tiny_dir, other_dir, cli_env):
    from pipeline.cli import cli
    from pipeline.export import to_networkx

    loader.load(tiny_dir, "online", "dropk", replace=True, conn=neo4j_conn)
    loader.load(other_dir, "online", "keepk", replace=True, conn=neo4j_conn)
    proc = subprocess.run(
        [sys.executable, "-c", DROP_KILLER, neo4j_conn.uri, neo4j_conn.username, neo4j_conn.password, "dropk"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert db.model_state(neo4j_driver, "dropk") == db.DROPPING
    left = db.layer_counts(neo4j_driver, "dropk")
    assert left["conv"] == (48, 0) and 0 < sum(e for _, e in left.values()) < 960  # part-way

    message = "model 'dropk' is being dropped; run `cnngraph drop dropk` to finish"
    with pytest.raises(errors.UsageError, match=re.escape(message)):
        db.require_usable(neo4j_driver, "dropk")
    with pytest.raises(errors.CnnGraphError, match="dropp"):  # export never reads a part-dropped model
        to_networkx("neo4j:dropk", conn=neo4j_conn)
    with pytest.raises(errors.UsageError, match=re.escape(message)):
        loader.load(tiny_dir, "online", "dropk", conn=neo4j_conn)
    with pytest.raises(errors.UsageError, match=re.escape(message)):
        bulk.after_import(tiny_dir, "dropk", conn=neo4j_conn)
    result = cli_env.invoke(cli, ["load", str(tiny_dir), "--mode", "online", "--model-name", "dropk", "-s"])
    assert result.exit_code == 1 and result.output.strip() == f"Error: {message}"
    assert db.layer_counts(neo4j_driver, "dropk") == left  # the refusals wrote nothing

    result = cli_env.invoke(cli, ["drop", "dropk", "-s"])
    assert result.exit_code == 0, result.output
    assert db.model_info(neo4j_driver, "dropk") is None and not db.layer_counts(neo4j_driver, "dropk")
    assert not neo4j_driver.execute_query("MATCH (n {model: 'dropk'}) RETURN n LIMIT 1").records
    with pytest.raises(errors.UsageError, match="no model 'dropk'.*keepk"):
        db.require_usable(neo4j_driver, "dropk")
    assert db.require_usable(neo4j_driver, "keepk")["status"] == db.COMPLETE
    assert_round_trip(neo4j_driver, other_dir, "keepk")  # untouched
    # The name is free again: a load after the finished drop works.
    loader.load(tiny_dir, "online", "dropk", conn=neo4j_conn)
    assert_round_trip(neo4j_driver, tiny_dir, "dropk")
    loader.drop(neo4j_conn, "dropk")
    loader.drop(neo4j_conn, "keepk")


def test_replace_finishes_an_interrupted_drop(neo4j_conn, neo4j_driver, tiny_dir):
    loader.load(tiny_dir, "online", "dropr", replace=True, conn=neo4j_conn)
    neo4j_driver.execute_query("MATCH (m:Model {name: 'dropr'}) SET m.status = 'dropping'")
    loader.load(tiny_dir, "online", "dropr", replace=True, conn=neo4j_conn)
    assert_round_trip(neo4j_driver, tiny_dir, "dropr")
    loader.drop(neo4j_conn, "dropr")


# An online load whose model is dropped or replaced meanwhile -------------------------------


class Crash(Exception):
    """Stands for a replacement load that dies part-way."""


# tiny with batch_size=40: 6 node batches, then 24 edge batches.
@pytest.mark.parametrize("at, new, crash_after", [
    (3, "same", 4),     # during the nodes; the replacement (same extraction) stops after 4 batches
    (9, "same", 8),     # during the edges; the replacement stops in its edges
    (9, "other", None),  # another extraction replaces it completely
    (9, None, None),    # only dropped
])
def test_online_load_stops_when_its_model_is_replaced(neo4j_conn, neo4j_driver, tiny_dir, other_dir,
                                                      monkeypatch, at, new, crash_after):
    name = "racem"
    loader.drop(neo4j_conn, name)
    new_dir = {"same": tiny_dir, "other": other_dir}.get(new)
    real = online.write_batch
    first: list = []
    calls = {"old": 0, "new": 0}

    def hook(session, model, unit, query, params, *owner):
        if not first:
            first.append(owner)
        if owner == first[0]:
            calls["old"] += 1
            if calls["old"] == at:  # between two batches of the first load: replace or drop
                if new_dir is None:
                    loader.drop(neo4j_conn, name)
                else:
                    with contextlib.suppress(Crash):
                        loader.load(new_dir, "online", name, replace=True, conn=neo4j_conn, batch_size=40)
        else:
            calls["new"] += 1
            if crash_after is not None and calls["new"] > crash_after:
                raise Crash
        return real(session, model, unit, query, params, *owner)

    monkeypatch.setattr(online, "write_batch", hook)
    with pytest.raises(errors.Neo4jError, match=f"model '{name}' was dropped or replaced .* stopped before batch"):
        loader.load(tiny_dir, "online", name, conn=neo4j_conn, batch_size=40)
    monkeypatch.setattr(online, "write_batch", real)
    if new_dir is None:
        assert db.model_info(neo4j_driver, name) is None and not db.layer_counts(neo4j_driver, name)
        return
    if crash_after is not None:  # the replacement resumes from its own checkpoint alone
        records, _, _ = neo4j_driver.execute_query(
            "MATCH (s:LoadState {model: $m}) RETURN size(s.done) AS done", m=name)
        assert records[0]["done"] == crash_after  # the old load added nothing to it
        resumed = loader.load(new_dir, "online", name, conn=neo4j_conn, batch_size=40)
        assert resumed.batches_skipped == crash_after
    # The model holds the new load's neurons and edges only: counts, weights, no duplicates.
    assert_round_trip(neo4j_driver, new_dir, name)
    assert duplicate_relationships(neo4j_driver, name) == 0
    assert not neo4j_driver.execute_query("MATCH (s:LoadState {model: $m}) RETURN s", m=name).records
    loader.drop(neo4j_conn, name)


# Damaged files -----------------------------------------------------------------------------


def test_damaged_file_is_refused_before_anything_is_written(neo4j_conn, neo4j_driver, tiny_dir, tmp_path,
                                                            cli_env):
    from pipeline.cli import cli

    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    manifest = loader.read_manifest(bad)
    part = common.layer_files(bad, manifest, "edge_files")[1][1]
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])  # truncated
    loader.load(tiny_dir, "online", "keepd", replace=True, conn=neo4j_conn)  # must survive a bulk --replace
    before = db.database_summary(neo4j_driver)
    for args in (["--mode", "online"], ["--replace"], ["--files-only", str(tmp_path / "imp")]):
        result = cli_env.invoke(cli, ["load", str(bad), "--model-name", "damaged", *args, "-s"])
        assert result.exit_code == 1, result.output
        (line,) = result.output.strip().splitlines()
        assert line.startswith(f"Error: {part} has changed since it was written"), line
        assert "--no-check" in line
    assert db.database_summary(neo4j_driver) == before
    assert db.model_info(neo4j_driver, "damaged") is None and not (tmp_path / "imp").exists()
    os.remove(part)
    result = cli_env.invoke(cli, ["load", str(bad), "--mode", "online", "--model-name", "damaged", "-s"])
    assert result.exit_code == 1 and result.output.strip() == f"Error: {part} is missing: the extraction " \
        f"folder {bad} is damaged; rerun `cnngraph extract` into it"

    # --no-check skips the check: intact files under a wrong recorded sum load.
    wrong = tmp_path / "wrong"
    shutil.copytree(tiny_dir, wrong)
    raw = json.loads((wrong / schema.MANIFEST).read_text())
    entry = next(la for la in raw["layers"] if la.get("edge_file_sha256"))
    entry["edge_file_sha256"][0] = "0" * 64
    (wrong / schema.MANIFEST).write_text(json.dumps(raw))
    result = cli_env.invoke(cli, ["load", str(wrong), "--mode", "online", "--model-name", "nocheck", "-s"])
    assert result.exit_code == 1 and "has changed since it was written" in result.output
    result = cli_env.invoke(cli, ["load", str(wrong), "--mode", "online", "--model-name", "nocheck",
                                           "--no-check", "-s"])
    assert result.exit_code == 0, result.output
    assert_round_trip(neo4j_driver, tiny_dir, "nocheck")
    loader.drop(neo4j_conn, "nocheck")
    loader.drop(neo4j_conn, "keepd")
