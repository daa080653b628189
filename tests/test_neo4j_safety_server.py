"""The managed server's safety, against real JVMs and real ``cnngraph`` processes.

- The suite runs its own server: the environment resolves to the test home and port, and a full
  pytest run with a "user" server as its default home (holding a sentinel) leaves it untouched.
- Two concurrent first starts give one server, one password, both exit 0; the password never
  appears on a command line; home, password and database files are private.
- ``NEO4J_URI`` as ``cnngraph neo4j env`` prints it is the managed server: bulk load works (the
  inner session of the sentinel test runs tests/neo4j_env_bulk.py, which does just that).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.neo4j.server import (
    HOME_ENV,
    HTTP_PORT_ENV,
    PLUGINS_ENV,
    PORT_ENV,
    ManagedServer,
    default_home,
    default_port,
    driver,
    is_managed_uri,
)
from tests import neo4j_plugin
from tests.neo4j_plugin import free_port, fresh_home

ROOT = Path(__file__).resolve().parents[1]
CNNGRAPH = str(Path(sys.executable).with_name("cnngraph"))
SENTINEL = "cnngraph_user_sentinel"


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without a NEO4J_URI, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("NEO4J_URI", "NEO4J_USERNAME", "NEO4J_PASSWORD")}
    return {**env, **extra}


# The suite's own server -------------------------------------------------------------------


def test_session_resolves_the_test_server() -> None:
    place = neo4j_plugin.PLACE
    assert place is not None
    assert default_home() == place.home != place.user_home
    assert default_port() == place.port != place.user_port
    assert ManagedServer().home == place.home and ManagedServer().port == place.port
    assert not default_home().is_relative_to(Path("~/.cache/cnngraph").expanduser())
    assert place.port not in (7687, 7688)
    # cnngraph subprocesses inherit it.
    out = subprocess.run([CNNGRAPH, "neo4j", "status"], capture_output=True, text=True, env=_clean_env())
    assert f"home: {place.home}\n" in out.stdout, out.stdout + out.stderr


# Concurrency, secrets and modes, on one spare server -------------------------------------


def _gone(pid: int) -> bool:
    """True when ``pid`` has exited (absent, or a zombie its new parent has not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _watch_cmdlines(marker: str, seen: set[bytes], stop: threading.Event) -> None:
    """Collect the command lines of all processes that mention ``marker`` until ``stop``."""
    needle = marker.encode()
    while not stop.is_set():
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    cmdline = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                if needle in cmdline:
                    seen.add(cmdline)
        stop.wait(0.005)


@pytest.fixture(scope="module")
def spare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ManagedServer, dict[str, str]]]:
    """A managed server in a fresh home (never started here), and the environment of its CLI.

    One server serves the module (each start costs seconds): two concurrent ``cnngraph neo4j
    start`` give its first start, it then stands in for the user's server, and the last test stops
    it with ``cnngraph neo4j stop``.
    """
    home = fresh_home(tmp_path_factory.mktemp("spare"))
    env = _clean_env(**{HOME_ENV: str(home.parent), PORT_ENV: str(free_port()), HTTP_PORT_ENV: str(free_port()),
                        PLUGINS_ENV: "0"})
    server = ManagedServer(home, port=int(env[PORT_ENV]), http_port=int(env[HTTP_PORT_ENV]), plugins=False)
    try:
        yield server, env
    finally:
        server.stop()


def test_two_concurrent_first_starts(spare: tuple[ManagedServer, dict[str, str]]) -> None:
    server, env = spare
    home = server.home
    assert not server.password_path.exists()  # a first start: no password yet
    seen: set[bytes] = set()
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_cmdlines, args=(str(home), seen, stop), daemon=True)
    watcher.start()
    try:
        starts = [subprocess.Popen([CNNGRAPH, "neo4j", "start"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in starts]
    finally:
        stop.set()
        watcher.join()
    assert [p.returncode for p in starts] == [0, 0], outs
    pid = server.pid()
    assert pid is not None
    for out, _ in outs:
        assert f"is running at {server.uri()} (pid {pid})" in out
    jvms = {c for c in seen if c.split(b"\0")[0].endswith(b"java") and b"CommunityEntryPoint" in c}
    assert jvms == {Path(f"/proc/{pid}/cmdline").read_bytes()}  # one server
    # The password reached neo4j-admin (seen running) through a file, never through argv.
    password = server.password().encode()
    assert any(b"set-initial-password" in c for c in seen)
    assert not [c for c in seen if password in c]
    with driver(server.connection_info()) as drv:
        assert drv.execute_query("RETURN 1").records[0][0] == 1
    # Private files: home 0700, password 0600, nothing under data/, logs/, run/ for others.
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE(server.password_path.stat().st_mode) == 0o600
    for sub in ("data", "logs", "run", "conf"):
        for path in [home / sub, *(home / sub).rglob("*")]:
            assert not path.lstat().st_mode & 0o077, path
    assert not list(home.glob(".password.*")) and not list((home / "run").glob("*.args"))
    # The pid file is the running server's, until the server is gone (test_cli_stop_removes_the_pid_file).
    assert int(server.pid_path.read_text()) == pid


@pytest.fixture
def user_server(spare: tuple[ManagedServer, dict[str, str]]) -> Iterator[ManagedServer]:
    """The spare server standing in for the user's default one, holding a sentinel node."""
    server, _ = spare
    with driver(server.start()) as drv:  # running already after the concurrent starts
        drv.execute_query("MATCH (n) DETACH DELETE n")
        drv.execute_query(f"CREATE (:{SENTINEL} {{note: 'the user data'}})")
    yield server


def test_suite_leaves_the_default_home_untouched(user_server: ManagedServer, tmp_path: Path) -> None:
    """A pytest run whose default home is the user's server (sentinel inside) bulk-loads elsewhere.

    The inner session runs tests/neo4j_env_bulk.py: `eval "$(cnngraph neo4j env)"`, then
    `cnngraph load --mode bulk --replace`, which replaces the whole database of the server it
    reaches. Without the plugin's isolation that is the user's server, and the sentinel is gone.
    """
    pid = user_server.pid()
    inner_home = tmp_path / "inner-test-home"
    env = _clean_env(**{
        HOME_ENV: str(user_server.home.parent), PORT_ENV: str(user_server.port),
        HTTP_PORT_ENV: str(user_server.http_port), PLUGINS_ENV: "0",
        neo4j_plugin.TEST_HOME_ENV: str(inner_home), neo4j_plugin.TEST_PORT_ENV: str(free_port()),
        neo4j_plugin.TEST_HTTP_PORT_ENV: str(free_port()),  # not this session's (when it was given one)
    })
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(Path(__file__).with_name("neo4j_env_bulk.py").relative_to(ROOT))],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout
    assert not inner_home.exists()  # the inner session removed the home it made
    assert user_server.pid() == pid  # never stopped for an import
    with driver(user_server.connection_info()) as drv:
        records = drv.execute_query("MATCH (n) RETURN labels(n) AS labels, count(*) AS n").records
    assert [(r["labels"], r["n"]) for r in records] == [([SENTINEL], 1)]


def test_cli_stop_removes_the_pid_file(spare: tuple[ManagedServer, dict[str, str]]) -> None:
    server, env = spare
    server.start()  # running already after the tests above
    pid = server.pid()
    assert pid is not None and int(server.pid_path.read_text()) == pid
    stopped = subprocess.run([CNNGRAPH, "neo4j", "stop"], capture_output=True, text=True, env=env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not server.pid_path.exists() and _gone(pid)
    assert not server.is_running()


# NEO4J_URI forms that are the managed server ----------------------------------------------


@pytest.mark.parametrize(("uri", "managed"), [
    ("bolt://127.0.0.1:{port}", True),
    ("neo4j://localhost:{port}", True),
    ("bolt://LOCALHOST:{port}/", True),
    ("bolt://[::1]:{port}", True),
    ("bolt://127.0.0.1:{other}", False),
    ("bolt://db.example.invalid:{port}", False),
    ("bolt+s://localhost:{port}", False),
    ("http://localhost:{port}", False),
    ("not a uri", False),
])
def test_is_managed_uri(uri: str, managed: bool) -> None:
    port = ManagedServer().port
    assert is_managed_uri(uri.format(port=port, other=port + 1)) is managed
