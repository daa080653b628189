"""Pytest fixtures for a real Neo4j server: ``neo4j_conn`` (session) and ``neo4j_driver``.

The suite never touches the user's managed server. At start-up this plugin points
``CNNGRAPH_HOME`` and ``CNNGRAPH_NEO4J_PORT`` (in ``os.environ``, for the whole session, so that
``default_home()``, ``ManagedServer()``, ``connection()`` and every ``cnngraph`` subprocess see
them) at the test server's own place:

- ``CNNGRAPH_TEST_HOME``: the test session's ``CNNGRAPH_HOME`` (the server lives in its ``neo4j``
  folder); default a fresh folder from :func:`tempfile.mkdtemp`. Jars come from Maven's ``~/.m2``
  cache, so a fresh home costs a ~5 s copy.
- ``CNNGRAPH_TEST_NEO4J_PORT``: its Bolt port; default 7689 (the user's default is 7687, the
  demo's 7688).
- ``CNNGRAPH_TEST_NEO4J_HTTP_PORT``: its HTTP port (Neo4j Browser); default a free port (the
  user's default is 7474, the demo's 7475).

The test server runs with GDS and APOC (the GDS and Browser tests use them); servers that tests
start beside it (stand-ins for the user's) run without.

At session end the test server is stopped (when this session started it) and what the session
created is removed: the whole folder when the session made it, else only its ``neo4j`` home when
that did not exist before. A test home or port equal to the user's is refused.

``NEO4J_URI`` (with ``NEO4J_USERNAME``/``NEO4J_PASSWORD``) still selects an existing server for
``neo4j_conn``; the environment above is set all the same. A missing server fails the tests: they
never skip.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline import storage
from pipeline.errors import CnnGraphError
from pipeline.neo4j.home import HOME_KIND
from pipeline.neo4j.server import (
    HOME_ENV,
    HTTP_PORT_ENV,
    PLUGINS_ENV,
    PORT_ENV,
    Connection,
    ManagedServer,
    connection,
    default_home,
    default_port,
    driver,
)

TEST_HOME_ENV = "CNNGRAPH_TEST_HOME"
TEST_PORT_ENV = "CNNGRAPH_TEST_NEO4J_PORT"
TEST_HTTP_PORT_ENV = "CNNGRAPH_TEST_NEO4J_HTTP_PORT"
#: The test server's default Bolt port: not the user's (7687) nor the demo's (7688).
TEST_PORT = 7689


@dataclass(frozen=True)
class SessionPlace:
    """Where this session's managed server lives, and what it replaced."""

    root: Path  # the session's CNNGRAPH_HOME
    port: int
    user_home: Path  # what default_home() resolved to before the session changed the environment
    user_port: int
    made_root: bool  # the session created ``root`` (so removes it)
    made_home: bool  # the session created ``root/neo4j`` (so removes it)
    was_running: bool  # its server ran before the session (so is left running)
    saved_env: dict[str, str | None]

    @property
    def home(self) -> Path:
        return self.root / "neo4j"


#: Set by :func:`pytest_configure`; tests read it to check the isolation.
PLACE: SessionPlace | None = None


def _test_port(env: str = TEST_PORT_ENV, default: int | None = TEST_PORT) -> int:
    raw = os.environ.get(env, "")
    try:
        return int(raw) if raw else default or free_port()
    except ValueError:
        raise pytest.UsageError(f"{env}={raw!r} is not a port number") from None


def pytest_configure(config: pytest.Config) -> None:
    """Point the managed server's environment at the test place before any test resolves it."""
    global PLACE
    if PLACE is not None:
        return
    try:
        user_home, user_port = default_home().resolve(), default_port()
    except CnnGraphError as err:
        raise pytest.UsageError(str(err)) from None
    port = _test_port()
    given = os.environ.get(TEST_HOME_ENV)
    if given:
        root = Path(given).expanduser().resolve()
        made_root = not root.exists()
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="cnngraph-test-")).resolve()
        made_root = True
    home = root / "neo4j"
    if home == user_home or port == user_port:
        if made_root:
            root.rmdir()
        raise pytest.UsageError(
            f"the test server must not be the user's managed server ({user_home}, port {user_port}): "
            f"set {TEST_HOME_ENV} and {TEST_PORT_ENV} to another folder and port"
        )
    saved = {name: os.environ.get(name) for name in (HOME_ENV, PORT_ENV, HTTP_PORT_ENV, PLUGINS_ENV)}
    was_running = ManagedServer(home, port=port).is_running()
    PLACE = SessionPlace(root, port, user_home, user_port, made_root, not home.exists(), was_running, saved)
    os.environ[HOME_ENV] = str(root)
    os.environ[PORT_ENV] = str(port)
    os.environ[HTTP_PORT_ENV] = str(_test_port(TEST_HTTP_PORT_ENV, None))
    os.environ.pop(PLUGINS_ENV, None)  # the test server runs GDS and APOC


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the test server this session started; remove what the session created; restore the env."""
    global PLACE
    place = PLACE
    if place is None:
        return
    try:
        if not place.was_running:  # started by a fixture, connection() or a cnngraph subprocess
            ManagedServer(place.home, port=place.port).stop()
    finally:
        if place.made_root:
            shutil.rmtree(place.root, ignore_errors=True)
        elif place.made_home:
            shutil.rmtree(place.home, ignore_errors=True)
        for name, value in place.saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        PLACE = None


@pytest.fixture(scope="session")
def neo4j_conn() -> Iterator[Connection]:
    """How to reach the test server (started on demand; fails, never skips, without one)."""
    if os.environ.get("NEO4J_URI"):
        conn = connection(start=False)
        try:
            driver(conn).close()
        except CnnGraphError as err:
            pytest.fail(f"NEO4J_URI is set but the server is not usable: {err}", pytrace=False)
        yield conn
        return
    assert PLACE is not None, "tests.neo4j_plugin was not configured"
    try:
        conn = ManagedServer(PLACE.home, port=PLACE.port).start()
    except CnnGraphError as err:
        pytest.fail(f"cannot start the test's managed Neo4j server ({TEST_HOME_ENV}, {TEST_PORT_ENV} "
                    f"choose its place): {err}", pytrace=False)
    yield conn


@pytest.fixture
def neo4j_driver(neo4j_conn: Connection):
    """A connected ``neo4j.Driver`` for one test, closed afterwards."""
    drv = driver(neo4j_conn)
    try:
        yield drv
    finally:
        drv.close()


# -- helpers for tests that run servers or neo4j-admin of their own ----------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fresh_home(root: Path) -> Path:
    """A fresh home under ``root`` (as ``$CNNGRAPH_HOME/neo4j``) reusing the test server's jars."""
    shared = ManagedServer()
    shared.install()
    home = root / "neo4j"
    home.mkdir(parents=True)
    storage.write_owner(home, HOME_KIND)  # ours, so the server may use it
    (home / "lib").symlink_to(shared.lib)  # servers of fresh homes run with plugins=False
    return home


def run_import_script(script: Path, work: Path) -> None:
    """Run an ``import.sh`` written by ``load --files-only`` with the managed home's neo4j-admin,
    the server stopped meanwhile (started again afterwards, whatever happens)."""
    import subprocess

    managed = ManagedServer()
    launcher = managed.write_admin_launcher(work / "neo4j-admin")
    managed.stop()
    try:
        done = subprocess.run(["sh", str(script), "--overwrite-destination=true"], capture_output=True,
                              text=True, env={**os.environ, "NEO4J_ADMIN": str(launcher)}, cwd=work)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    finally:
        managed.start()
