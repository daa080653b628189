"""The managed Neo4j server, against real JVMs: start/status/stop, auth, CLI, ports, bulk import.

One server in a temporary home (sharing the installed jars) serves the module, so the file costs
two server starts and one restart in all.
"""

from __future__ import annotations

import re
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.errors import Neo4jError, Neo4jUnavailable, OutputError
from pipeline.neo4j.server import HTTP_PORT_ENV, PLUGINS_ENV, PORT_ENV, Connection, ManagedServer, driver
from tests.neo4j_plugin import free_port, fresh_home

pytest_plugins = ["tests.neo4j_plugin"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cnngraph")


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[ManagedServer]:
    srv = ManagedServer(fresh_home(root), port=free_port(), http_port=free_port(), plugins=False)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def cli_env(root: Path, server: ManagedServer) -> dict[str, str]:
    return {"CNNGRAPH_HOME": str(root), PORT_ENV: str(server.port), HTTP_PORT_ENV: str(server.http_port),
            PLUGINS_ENV: "0"}


def _count(conn: Connection, query: str) -> int:
    with driver(conn) as drv:
        return drv.execute_query(query).records[0][0]


def test_status_when_down(server: ManagedServer, cli_env: dict[str, str]) -> None:
    assert not server.is_running()
    result = CliRunner().invoke(cli, ["neo4j", "status"], env=cli_env)
    assert result.exit_code == 1
    assert "running: False" in result.output


def test_start_and_status(server: ManagedServer, cli_env: dict[str, str]) -> None:
    conn = server.start()
    assert conn.uri == f"bolt://127.0.0.1:{server.port}"
    assert conn.password not in repr(conn)
    info = server.status()
    assert info["running"] and info["pid"] == server.pid() and info["uri"] == conn.uri
    assert info["version"] == "5.26.19" and info["log"].endswith("neo4j.log")
    result = CliRunner().invoke(cli, ["neo4j", "status"], env=cli_env)
    assert result.exit_code == 0, result.output
    assert "running: True" in result.output
    assert server.start() == conn  # already running: returns at once


def test_generated_password_connects(server: ManagedServer) -> None:
    assert _count(server.connection_info(), "RETURN 1") == 1


def test_password_file_mode(server: ManagedServer) -> None:
    assert stat.S_IMODE(server.password_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.home.stat().st_mode) == 0o700
    assert len(server.password()) >= 20


def test_wrong_password_is_a_clear_error(server: ManagedServer) -> None:
    with pytest.raises(Neo4jError, match="check NEO4J_PASSWORD") as info:
        driver(Connection(server.uri(), "neo4j", "not-the-password"))
    assert not isinstance(info.value, Neo4jUnavailable)
    assert "not-the-password" not in str(info.value)


def test_env_output(server: ManagedServer, cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["neo4j", "env"], env=cli_env)
    assert result.exit_code == 0, result.output
    line = result.output.strip()
    match = re.fullmatch(r"export NEO4J_URI=(\S+) NEO4J_USERNAME=neo4j NEO4J_PASSWORD=(\S+)", line)
    assert match, line
    assert match.group(1) == server.uri() and match.group(2) == server.password()
    assert line == server.env_exports()


def test_port_in_use(root: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        other = ManagedServer(fresh_home(root / "other"), port=port, http_port=free_port(), plugins=False)
        with pytest.raises(Neo4jError, match=rf"port {port} .*in use.*{PORT_ENV}"):
            other.start()
    assert not other.is_running()


def test_admin_import_then_count(server: ManagedServer, tmp_path: Path) -> None:
    nodes, rels = tmp_path / "nodes.csv", tmp_path / "rels.csv"
    nodes.write_text("id:ID,name\n1,a\n2,b\n3,c\n")
    rels.write_text(":START_ID,:END_ID,weight:float\n1,2,0.5\n2,3,-1.5\n")
    server.admin_import([
        "--id-type=integer", f"--nodes=Neuron={nodes}", f"--relationships=CONNECTS={rels}",
        "--overwrite-destination=true",
    ])
    assert server.is_running()  # it was running, so it was restarted
    conn = server.connection_info()
    assert _count(conn, "MATCH (n:Neuron) RETURN count(n)") == 3
    assert _count(conn, "MATCH (:Neuron)-[r:CONNECTS]->(:Neuron) RETURN sum(r.weight)") == -1.0


def test_admin_import_refused_without_space(server: ManagedServer, tmp_path: Path) -> None:
    """Not enough free space for the expected store: refused before the server is stopped."""
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("id:ID\n7\n")
    pid = server.pid()
    with pytest.raises(OutputError, match=r"bulk import .* needs about .* free .*database is untouched"):
        server.admin_import(["--id-type=integer", f"--nodes=Neuron={nodes}", "--overwrite-destination=true"],
                            store_bytes=1 << 60)
    assert server.pid() == pid
    assert _count(server.connection_info(), "MATCH (n:Neuron) RETURN count(n)") == 3


def test_admin_import_failing_midway(server: ManagedServer, tmp_path: Path) -> None:
    """The importer deleted the old store: the message says so, the server runs an empty database."""
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("id:ID,name\n1,a\n1,b\n")  # duplicate ids fail the node import
    with pytest.raises(Neo4jError, match=r"(?s)import failed.*old 'neo4j' database was deleted.*now empty; "
                       r"the server is running again; see .*import\.log"):
        server.admin_import(["--id-type=integer", f"--nodes=Neuron={nodes}", "--overwrite-destination=true"])
    assert server.is_running()
    assert _count(server.connection_info(), "MATCH (n) RETURN count(n)") == 0


def test_admin_import_error_names_log(server: ManagedServer, tmp_path: Path) -> None:
    with pytest.raises(Neo4jError, match=r"(?s)import failed.*database is unchanged; the server is stopped: "
                       r"start it with `cnngraph neo4j start`; see .*import\.log"):
        server.admin_import([f"--nodes={tmp_path / 'missing.csv'}"], restart=False)
    assert not server.is_running()


def test_reset_database(server: ManagedServer) -> None:
    server.reset_database(restart=True)
    assert _count(server.connection_info(), "MATCH (n) RETURN count(n)") == 0


def test_stop(server: ManagedServer, cli_env: dict[str, str]) -> None:
    uri = server.uri()
    result = CliRunner().invoke(cli, ["neo4j", "stop"], env=cli_env)
    assert result.exit_code == 0 and "stopped" in result.output
    assert not server.is_running() and server.status()["pid"] is None
    with pytest.raises(Neo4jUnavailable, match="cnngraph neo4j start"):
        driver(Connection(uri, "neo4j", server.password()))


def test_plugin_fixture(neo4j_driver) -> None:
    assert neo4j_driver.execute_query("RETURN 40 + 2").records[0][0] == 42
