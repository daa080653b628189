"""A managed local Neo4j Community server run from Maven Central jars (no Docker needed).

The server's home (its folders, lock, configuration and password) is
:class:`pipeline.neo4j.home.ServerHome`; the jars come from :mod:`pipeline.neo4j.install`, bulk
imports and resets run through :mod:`pipeline.neo4j.admin`. This module runs the process.

The server JVM (``org.neo4j.server.CommunityEntryPoint``, what the ``neo4j`` launcher spawns) is
started detached in its own session, so it outlives the Python process that started it; its pid is
kept in ``run/neo4j.pid``, written by the process itself before it becomes the JVM and removed only
once it has gone. Bolt and HTTP (Neo4j Browser at ``/browser/``) listen on 127.0.0.1 only, auth on;
GDS and APOC are loaded unless the home's ``plugins`` is off.

Without ``NEO4J_URI`` the managed server is the default target: :func:`connection` starts it on
demand. :func:`driver` opens a verified driver and turns connection errors into this package's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pipeline.errors import Neo4jError, Neo4jUnavailable
from pipeline.neo4j import admin
from pipeline.neo4j.home import (
    DEFAULT_PORT,
    ENTRY_POINT,
    HEAP_ENV,
    HOME_ENV,
    HTTP_PORT_ENV,
    JVM_FLAGS,
    NEO4J_VERSION,
    PAGECACHE_ENV,
    PLUGINS_ENV,
    PLUGINS_REVISION,
    PORT_ENV,
    USERNAME,
    ServerHome,
    default_home,
    default_memory,
    default_port,
    java,
)
from pipeline.neo4j.install import install_jars
from pipeline.progress import NULL, Progress

if TYPE_CHECKING:
    import neo4j

#: Also importable from here (they were defined in this module before the home had its own).
__all__ = [
    "DEFAULT_PORT", "HEAP_ENV", "HOME_ENV", "HTTP_PORT_ENV", "NEO4J_VERSION", "PAGECACHE_ENV", "PLUGINS_ENV",
    "PORT_ENV", "USERNAME",
    "Connection", "ManagedServer", "connection", "default_home", "default_memory", "default_port",
    "driver", "is_managed_uri", "store_bytes",
]

#: Host names that reach the managed server's 127.0.0.1 listener from this machine.
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}

#: Runs the server detached: ``sh -c LAUNCH sh java ...``. The background job (umask 077, stdin
#: from /dev/null, output to the console log) writes its own pid to the pid file, then execs the
#: JVM, so the pid file exists before the server does; the outer shell prints that pid and exits,
#: leaving the JVM to init (never our zombie).
_LAUNCH = (
    "umask 077; "
    "sh -c 'echo $$ >\"$CNNGRAPH_PID_FILE.tmp\" && mv -f \"$CNNGRAPH_PID_FILE.tmp\" \"$CNNGRAPH_PID_FILE\" "
    "&& exec \"$@\"' sh \"$@\" </dev/null >>\"$CNNGRAPH_CONSOLE_LOG\" 2>&1 & echo $!"
)


@dataclass(frozen=True)
class Connection:
    """Where and how to reach a Neo4j server. ``repr`` never shows the password."""

    uri: str
    username: str = USERNAME
    password: str = field(default="", repr=False)


def is_managed_uri(uri: str) -> bool:
    """True when ``uri`` (e.g. ``NEO4J_URI`` as ``cnngraph neo4j env`` prints it) is the managed server.

    Compares scheme (bolt or neo4j), host (127.0.0.1, localhost and ::1 are one) and port with the
    managed server that ``$CNNGRAPH_HOME``/``$CNNGRAPH_NEO4J_PORT`` select; see
    :meth:`ManagedServer.is_address`.
    """
    return ManagedServer().is_address(uri)


def store_bytes(nodes: int, relationships: int) -> int:
    """The expected size of a bulk-imported store of this many neurons and relationships.

    Uses the plan's Neo4j figures (~80 B per relationship and ~120 B per node with properties
    and indexes, measured by benchmarks/load.py): what :meth:`ManagedServer.admin_import` checks
    against the data disk's free space.
    """
    from pipeline.plan import BYTES_PER_EDGE, BYTES_PER_NODE

    return int(relationships * BYTES_PER_EDGE["neo4j"] + nodes * BYTES_PER_NODE["neo4j"])


class ManagedServer(ServerHome):
    """One local Neo4j server living in ``home``: install, start, stop, status, bulk import.

    Install, start, stop, bulk import and reset hold the home's lock (``flock`` on ``home/.lock``),
    so concurrent cnngraph processes take turns: a second ``start`` waits for the first and then
    returns the running server. Parameters as :class:`~pipeline.neo4j.home.ServerHome`.
    """

    def install(self, progress: Progress = NULL) -> None:
        """Copy Neo4j's runtime jars from Maven Central into ``home/lib`` once
        (:func:`pipeline.neo4j.install.install_jars`)."""
        install_jars(self, progress)

    # -- process -------------------------------------------------------------------------------
    def pid(self) -> int | None:
        """The server's pid when it is running, else None (stale pid files are ignored)."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _is_our_process(pid, self.home) else None

    def is_running(self) -> bool:
        """True when this home's server process is alive (it may still be starting up)."""
        return self.pid() is not None

    def running_port(self, connector: str = "bolt") -> int:
        """The Bolt (or ``"http"``) port in the current ``neo4j.conf`` (the one a running server uses)."""
        configured = self.port if connector == "bolt" else self.http_port
        try:
            text = (self.conf_dir / "neo4j.conf").read_text()
        except OSError:
            return configured
        match = re.search(rf"^server\.{connector}\.listen_address=.*:(\d+)\s*$", text, re.M)
        return int(match.group(1)) if match else configured

    def running_settings(self) -> dict[str, str]:
        """The settings of the current ``neo4j.conf`` (those a running server uses)."""
        try:
            text = (self.conf_dir / "neo4j.conf").read_text()
        except OSError:
            return {}
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))

    def uri(self) -> str:
        """``bolt://127.0.0.1:PORT``: the running server's port, else the configured one."""
        port = self.running_port() if self.is_running() else self.port
        return f"bolt://127.0.0.1:{port}"

    def is_address(self, uri: str) -> bool:
        """True when ``uri`` reaches this server: a bolt/neo4j URI to a local host name on its port.

        ``neo4j://localhost:7687``, ``bolt://127.0.0.1:7687`` and ``bolt://[::1]:7687`` are all the
        managed server on 7687 (the port a running server uses, else the configured one).
        """
        try:
            parts = urlsplit(uri.strip())
            port = parts.port or DEFAULT_PORT
        except ValueError:
            return False
        if parts.scheme.lower() not in ("bolt", "neo4j") or (parts.hostname or "").lower() not in _LOCAL_HOSTS:
            return False
        return port == int(urlsplit(self.uri()).port or DEFAULT_PORT)

    def connection_info(self) -> Connection:
        """How to reach this server (its URI, user ``neo4j`` and the generated password)."""
        return Connection(self.uri(), USERNAME, self.password())

    def browser_url(self) -> str:
        """Neo4j Browser's address: the running server's HTTP port, else the configured one."""
        port = self.running_port("http") if self.is_running() else self.http_port
        return f"http://127.0.0.1:{port}/browser/"

    def _check_ports(self) -> None:
        if self.port == self.http_port:
            raise Neo4jError(f"the Bolt and HTTP ports are both {self.port}; choose two ports")
        for port, what, option, env in ((self.port, "Bolt", "--port", PORT_ENV),
                                        (self.http_port, "HTTP", "--http-port", HTTP_PORT_ENV)):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError as err:
                    if err.errno not in (errno.EADDRINUSE, errno.EACCES):
                        raise
                    raise Neo4jError(
                        f"port {port} on 127.0.0.1 is in use by another program; choose another {what} "
                        f"port with `cnngraph neo4j start {option} N` or {env}=N (or point NEO4J_URI "
                        "at the server already listening there)"
                    ) from None

    def start(self, progress: Progress = NULL, timeout: float = 180.0) -> Connection:
        """Start the server in the background (installing it first if needed); returns how to reach it.

        Returns once it accepts the generated password, at once when it already runs (also when
        another process started it while this one waited for the home's lock). On failure
        raises :class:`Neo4jError` naming the log file.
        """
        with self.locked(progress):
            if self.is_running():
                conn = self.connection_info()
                self._wait_ready(conn, self.pid() or 0, timeout)
                return conn
            self.install(progress)
            self.prepare_dirs()
            self._check_ports()
            self.write_conf()
            self.ensure_password()
            conn = Connection(f"bolt://127.0.0.1:{self.port}", USERNAME, self.password())
            extra = f", {PLUGINS_REVISION}" if self.plugins else ""
            progress.message(f"starting Neo4j {self.version}{extra} on {conn.uri} (home {self.home}) ...")
            cmd = [
                java(), f"-Xms{self.heap}", f"-Xmx{self.heap}", *JVM_FLAGS,
                "-cp", self.class_path, ENTRY_POINT,
                f"--home-dir={self.home}", f"--config-dir={self.conf_dir}",
            ]
            env = {**self.env(), "CNNGRAPH_CONSOLE_LOG": str(self.home / "logs" / "console.log"),
                   "CNNGRAPH_PID_FILE": str(self.pid_path)}
            launch = subprocess.run(["sh", "-c", _LAUNCH, "sh", *cmd], env=env, cwd=self.home,
                                    capture_output=True, text=True, start_new_session=True, check=False)
            try:
                pid = int(launch.stdout.strip())
            except ValueError:
                raise Neo4jError(f"cannot launch the Neo4j server: {launch.stderr.strip()}") from None
            try:
                self._wait_ready(conn, pid, timeout)
            except Neo4jError:
                self._stop_pid(pid, 30.0)
                raise
            return conn

    def _wait_ready(self, conn: Connection, pid: int, timeout: float) -> None:
        import neo4j
        from neo4j.exceptions import AuthError, ServiceUnavailable

        deadline = time.monotonic() + timeout
        while True:
            if not _alive(pid):
                raise Neo4jError(
                    f"the Neo4j server exited during startup; see {self.log_path} "
                    f"and {self.home / 'logs' / 'console.log'}"
                )
            try:
                with neo4j.GraphDatabase.driver(
                    conn.uri, auth=(conn.username, conn.password), connection_timeout=2.0
                ) as drv:
                    drv.verify_connectivity()
                return
            except AuthError:
                raise Neo4jError(
                    f"the managed Neo4j server rejects the password in {self.password_path}; remove "
                    f"{self.home / 'data'} to start afresh (this deletes the database)"
                ) from None
            except (ServiceUnavailable, OSError):
                pass
            if time.monotonic() > deadline:
                raise Neo4jError(
                    f"Neo4j did not accept Bolt connections on {conn.uri} within {timeout:.0f} s; "
                    f"see {self.log_path}"
                )
            time.sleep(0.25)

    def stop(self, timeout: float = 120.0) -> bool:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``); True when one was running.

        The pid file is removed only once the process has gone; a process that survives SIGKILL
        raises :class:`Neo4jError` and keeps its pid file.
        """
        with self.locked():
            pid = self.pid()
            if pid is None:
                self.pid_path.unlink(missing_ok=True)  # stale: its process is gone or is not ours
                return False
            self._stop_pid(pid, timeout)
            return True

    def _stop_pid(self, pid: int, timeout: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not _wait_gone(pid, 10):
                raise Neo4jError(f"the Neo4j server (pid {pid}) did not exit after SIGKILL; "
                                 f"its pid file {self.pid_path} is kept")
        with contextlib.suppress(ValueError, OSError):
            if int(self.pid_path.read_text().strip()) == pid:
                self.pid_path.unlink()

    def status(self) -> dict[str, Any]:
        """running, pid, uri, browser (URL), user, plugins, heap, pagecache, home, version,
        installed, log (path of the server log). A running server's settings are those it runs
        with; otherwise the ones the next start would use."""
        pid = self.pid()
        conf = self.running_settings() if pid is not None else {}
        plugins = "dbms.security.procedures.unrestricted" in conf if conf else self.plugins
        return {
            "running": pid is not None,
            "pid": pid,
            "uri": self.uri(),
            "browser": self.browser_url(),
            "user": f"{USERNAME} (password: `cnngraph neo4j env`)",
            "plugins": PLUGINS_REVISION if plugins else "off",
            "heap": conf.get("server.memory.heap.max_size", self.heap),
            "pagecache": conf.get("server.memory.pagecache.size", self.pagecache),
            "home": str(self.home),
            "version": self.version,
            "installed": self.is_installed(),
            "log": str(self.log_path),
        }

    def env_exports(self) -> str:
        """The shell line that points clients at this server (it contains the password)."""
        conn = self.connection_info()
        return (
            f"export NEO4J_URI={shlex.quote(conn.uri)} NEO4J_USERNAME={shlex.quote(conn.username)} "
            f"NEO4J_PASSWORD={shlex.quote(conn.password)}"
        )

    # -- offline database operations ------------------------------------------------------------
    def _offline(self, restart: bool | None) -> bool:
        """Stop the server if running; returns whether to start it again afterwards."""
        was_running = self.stop()
        return was_running if restart is None else restart

    def admin_import(
        self,
        args: list[str],
        progress: Progress = NULL,
        *,
        database: str = "neo4j",
        restart: bool | None = None,
        store_bytes: int | None = None,
        prepare: Callable[[], list[str]] | None = None,
    ) -> dict[str, float]:
        """Run ``neo4j-admin database import full <args> -- <database>`` on this home.

        The server is stopped first when running. ``restart``: None (default) starts it again only
        if it was running; True always starts it; False leaves it stopped. ``args`` are the
        importer's options, e.g. ``["--id-type=integer", "--nodes=Neuron=n.csv",
        "--relationships=CONNECTS=r.csv", "--overwrite-destination=true"]``; paths are best absolute.
        ``store_bytes``: the expected size of the new store (:func:`store_bytes`); when given, an
        :class:`~pipeline.errors.OutputError` refuses before the server is stopped unless the data
        disk has room for it. ``prepare``: runs in a thread while the server stops (e.g. writing
        the import files) and returns more ``args``; when it raises, nothing is imported, the
        server runs again if it ran, and its error is raised.

        Output goes to ``logs/import.log``. A failure raises :class:`Neo4jError` with its tail,
        saying what became of the old database (untouched when the importer stopped before
        writing; otherwise it was deleted by ``--overwrite-destination`` and the unusable partial
        store is removed, so the database is empty) and whether the server runs again. Returns
        the seconds of each part: ``stop`` (waiting for it after ``prepare``), ``neo4j_admin``,
        ``start``.
        """
        timings: dict[str, float] = {}
        with self.locked(progress):
            self.install(progress)
            self.prepare_dirs()
            if store_bytes:
                admin.require_room(self, store_bytes)
            with ThreadPoolExecutor(1, thread_name_prefix="cnngraph-prepare") as pool:
                ready = pool.submit(prepare) if prepare is not None else None
                t0 = time.perf_counter()
                again = self._offline(restart)
                timings["stop"] = time.perf_counter() - t0
                if ready is not None:
                    try:
                        args = [*args, *ready.result()]
                    except BaseException:
                        if again:
                            self.start(progress)
                        raise
            self.write_conf()
            t1 = time.perf_counter()
            failure = admin.import_full(self, args, database, progress)
            timings["neo4j_admin"] = time.perf_counter() - t1
            if failure is not None:
                raise failure.error(self._start_again(again, progress))
            if again:
                t2 = time.perf_counter()
                self.start(progress)
                timings["start"] = time.perf_counter() - t2
        return timings

    def _start_again(self, again: bool, progress: Progress) -> str:
        """After a failed import: start the server again if ``again``; says how that went."""
        if not again:
            return "; the server is stopped: start it with `cnngraph neo4j start`"
        try:
            self.start(progress)
            return "; the server is running again"
        except Neo4jError as err:
            return f"; starting the server again failed ({err})"

    def reset_database(self, *, database: str = "neo4j", restart: bool | None = None) -> None:
        """Delete the user database's files (the server recreates it empty at next start).

        Users, the password and the system database are kept. ``restart`` as in :meth:`admin_import`.
        """
        admin.check_database_name(database)
        with self.locked():
            again = self._offline(restart)
            admin.delete_database(self, database)
            if again:
                self.start()


def _alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _is_our_process(pid: int, home: Path) -> bool:
    """True when ``pid`` is alive and (where /proc exists) is this home's Neo4j JVM."""
    if not _alive(pid):
        return False
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return True
    return ENTRY_POINT.encode() in args and f"--home-dir={home}".encode() in args


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def connection(progress: Progress = NULL, start: bool = True) -> Connection:
    """The server to use: ``NEO4J_URI`` (with ``NEO4J_USERNAME``/``NEO4J_PASSWORD``) when set, else
    the managed server, started on demand (``start=False`` raises :class:`Neo4jUnavailable` instead).
    """
    uri = os.environ.get("NEO4J_URI")
    if uri:
        return Connection(
            uri, os.environ.get("NEO4J_USERNAME") or USERNAME, os.environ.get("NEO4J_PASSWORD", "")
        )
    server = ManagedServer()
    if server.is_running():
        return server.connection_info()
    if not start:
        raise Neo4jUnavailable(
            "the managed Neo4j server is not running: start it with `cnngraph neo4j start` or set NEO4J_URI"
        )
    progress.message("starting the managed Neo4j server ...")
    return server.start(progress)


def driver(conn: Connection, **config: Any) -> neo4j.Driver:
    """A connected ``neo4j.Driver`` for ``conn`` (checked with ``verify_connectivity``).

    Raises :class:`Neo4jUnavailable` when the server cannot be reached and :class:`Neo4jError`
    when it rejects the credentials. The caller closes the driver (it is a context manager).
    """
    import neo4j
    from neo4j.exceptions import AuthError, ConfigurationError, ServiceUnavailable

    # The library's queries are known; server notifications (deprecations, "label does not exist
    # yet" on an empty database) would only be printed at users as warnings.
    config.setdefault("notifications_min_severity", "OFF")
    try:
        drv = neo4j.GraphDatabase.driver(conn.uri, auth=(conn.username, conn.password), **config)
    except (ConfigurationError, ValueError) as err:
        raise Neo4jError(f"bad Neo4j URI {conn.uri!r}: {err}") from None
    try:
        drv.verify_connectivity()
    except AuthError:
        drv.close()
        raise Neo4jError(
            f"Neo4j at {conn.uri} rejected user {conn.username!r}: check NEO4J_PASSWORD "
            "(for the managed server, `cnngraph neo4j env` prints the right one)"
        ) from None
    except (ServiceUnavailable, OSError) as err:
        drv.close()
        raise Neo4jUnavailable(
            f"cannot reach Neo4j at {conn.uri} ({type(err).__name__}): start the managed server with "
            "`cnngraph neo4j start`, or set NEO4J_URI to a running server"
        ) from None
    return drv
