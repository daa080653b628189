"""A managed local Neo4j Community server run from Maven Central jars (no Docker needed).

Layout of the server's home (default ``$CNNGRAPH_HOME/neo4j``, else
``~/.cache/cnngraph/neo4j-<version>``)::

    pom.xml        copy of the package's pom (pins org.neo4j:neo4j)
    lib/           the runtime jars, filled by Maven; ``lib/.installed`` marks a complete copy
    conf/          neo4j.conf, rewritten at every start
    data/ logs/ run/ import/ plugins/
    password       the generated password of user ``neo4j`` (mode 0600)
    .lock          flock'ed around install, start, stop and bulk import (one at a time per home)

The home is mode 0700 and the server and neo4j-admin run with umask 077, so no other user can read
the database, logs or password; the password never appears on a command line (neo4j-admin reads it
from an ``@`` argument file, mode 0600, removed at once).

The server JVM (``org.neo4j.server.CommunityEntryPoint``, what the ``neo4j`` launcher spawns) is
started detached in its own session, so it outlives the Python process that started it; its pid is
kept in ``run/neo4j.pid``, written by the process itself before it becomes the JVM and removed only
once it has gone. Bolt listens on 127.0.0.1 only; HTTP is off.

Without ``NEO4J_URI`` the managed server is the default target: :func:`connection` starts it on
demand. :func:`driver` opens a verified driver and turns connection errors into this package's.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pipeline import storage
from pipeline.errors import Neo4jError, Neo4jUnavailable
from pipeline.progress import NULL, Progress

if TYPE_CHECKING:
    import neo4j

NEO4J_VERSION = "5.26.19"
DEFAULT_PORT = 7687
PORT_ENV = "CNNGRAPH_NEO4J_PORT"
HOME_ENV = "CNNGRAPH_HOME"
HEAP_ENV = "CNNGRAPH_NEO4J_HEAP"
PAGECACHE_ENV = "CNNGRAPH_NEO4J_PAGECACHE"
USERNAME = "neo4j"

_ENTRY_POINT = "org.neo4j.server.CommunityEntryPoint"
_ADMIN_TOOL = "org.neo4j.cli.AdminTool"
_GIB = 1 << 30
_MIB = 1 << 20
#: Host names that reach the managed server's 127.0.0.1 listener from this machine.
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
#: A generated password: URL-safe, never starting with "-" (neo4j-admin would read an option).
_PASSWORD_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{7,}")

#: Runs the server detached: ``sh -c LAUNCH sh java ...``. The background job (umask 077, stdin
#: from /dev/null, output to the console log) writes its own pid to the pid file, then execs the
#: JVM, so the pid file exists before the server does; the outer shell prints that pid and exits,
#: leaving the JVM to init (never our zombie).
_LAUNCH = (
    "umask 077; "
    "sh -c 'echo $$ >\"$CNNGRAPH_PID_FILE.tmp\" && mv -f \"$CNNGRAPH_PID_FILE.tmp\" \"$CNNGRAPH_PID_FILE\" "
    "&& exec \"$@\"' sh \"$@\" </dev/null >>\"$CNNGRAPH_CONSOLE_LOG\" 2>&1 & echo $!"
)

#: JVM flags the shipped neo4j.conf adds; needed because we bypass the tarball's config.
_JVM_FLAGS = [
    "-XX:+UseG1GC",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:+DisableExplicitGC",
    "-Djdk.nio.maxCachedBufferSize=1024",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dlog4j2.disable.jmx=true",
    "-Dfile.encoding=UTF-8",
    *(
        f"--add-opens=java.base/{pkg}=ALL-UNNAMED"
        for pkg in ("java.nio", "java.io", "sun.nio.ch", "java.lang", "java.util", "java.util.concurrent")
    ),
]


@dataclass(frozen=True)
class Connection:
    """Where and how to reach a Neo4j server. ``repr`` never shows the password."""

    uri: str
    username: str = USERNAME
    password: str = field(default="", repr=False)


def default_home() -> Path:
    """``$CNNGRAPH_HOME/neo4j`` when the variable is set, else ``~/.cache/cnngraph/neo4j-<version>``."""
    root = os.environ.get(HOME_ENV)
    if root:
        return Path(root).expanduser() / "neo4j"
    return Path("~/.cache/cnngraph").expanduser() / f"neo4j-{NEO4J_VERSION}"


def default_port() -> int:
    """``$CNNGRAPH_NEO4J_PORT`` when set, else 7687: the managed server's Bolt port."""
    raw = os.environ.get(PORT_ENV, "")
    try:
        return int(raw) if raw else DEFAULT_PORT
    except ValueError:
        raise Neo4jError(f"{PORT_ENV}={raw!r} is not a port number") from None


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


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * _GIB


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def default_memory(total: int | None = None) -> tuple[str, str]:
    """Heap and page cache sizes for a machine with ``total`` bytes of RAM.

    Heap is 1/12 of RAM within 1-2 GiB; page cache 1/8 of RAM within 1-4 GiB: enough for loading
    and exporting while leaving most memory to TensorFlow and the importer.
    """
    total = total or _total_memory()
    heap = _clamp(total // 12, _GIB, 2 * _GIB)
    pagecache = _clamp(total // 8, _GIB, 4 * _GIB)
    return f"{heap // _MIB}m", f"{pagecache // _MIB}m"


class ManagedServer:
    """One local Neo4j server living in ``home``: install, start, stop, status, bulk import.

    Install, start, stop, bulk import and reset hold the home's lock (``flock`` on ``home/.lock``),
    so concurrent cnngraph processes take turns: a second ``start`` waits for the first and then
    returns the running server.

    Parameters
    ----------
    home:
        The server's folder (see the module docstring); :func:`default_home` when omitted.
    port:
        Bolt port on 127.0.0.1; default ``$CNNGRAPH_NEO4J_PORT`` or 7687.
    heap, pagecache:
        Memory sizes such as ``"2g"``; default ``$CNNGRAPH_NEO4J_HEAP`` / ``$CNNGRAPH_NEO4J_PAGECACHE``
        or :func:`default_memory`.
    """

    version = NEO4J_VERSION

    def __init__(
        self,
        home: Path | None = None,
        *,
        port: int | None = None,
        heap: str | None = None,
        pagecache: str | None = None,
    ):
        self.home = Path(home).expanduser().resolve() if home else default_home().resolve()
        self.port = default_port() if port is None else port
        auto_heap, auto_pagecache = default_memory()
        self.heap = heap or os.environ.get(HEAP_ENV) or auto_heap
        self.pagecache = pagecache or os.environ.get(PAGECACHE_ENV) or auto_pagecache

    def __repr__(self) -> str:
        return f"ManagedServer(home={str(self.home)!r}, port={self.port})"

    # -- paths ---------------------------------------------------------------------------------
    @property
    def lib(self) -> Path:
        return self.home / "lib"

    @property
    def conf_dir(self) -> Path:
        return self.home / "conf"

    @property
    def log_path(self) -> Path:
        """The server's user log (startup errors land here and in ``debug.log`` beside it)."""
        return self.home / "logs" / "neo4j.log"

    @property
    def pid_path(self) -> Path:
        return self.home / "run" / "neo4j.pid"

    @property
    def password_path(self) -> Path:
        return self.home / "password"

    @property
    def lock_path(self) -> Path:
        return self.home / ".lock"

    @property
    def _marker(self) -> Path:
        return self.lib / ".installed"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "NEO4J_HOME": str(self.home), "NEO4J_CONF": str(self.conf_dir)}

    # -- the home and its lock -----------------------------------------------------------------
    def _make_home(self) -> None:
        """Create the home (mode 0700; an existing one of ours is tightened to 0700)."""
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.home.stat().st_uid == os.getuid():
            os.chmod(self.home, 0o700)

    @contextlib.contextmanager
    def locked(self, progress: Progress = NULL) -> Iterator[None]:
        """Hold this home's lock: other processes' install/start/stop/import wait until it is released.

        Re-entrant within one process (``start`` inside ``admin_import`` does not wait for itself).
        When another process holds it, ``progress`` is told that this one waits.
        """
        self._make_home()
        with _HomeLock.of(self.home).hold(self.lock_path, progress):
            yield

    # -- install -------------------------------------------------------------------------------
    def is_installed(self) -> bool:
        """True when ``lib/`` holds a complete copy of this version's jars."""
        try:
            return self._marker.read_text().strip() == self.version
        except OSError:
            return False

    def install(self, progress: Progress = NULL) -> None:
        """Copy Neo4j's runtime jars from Maven Central into ``home/lib`` (once; ~120 MB, ~1 min).

        Maven checks every download's checksum (``-C``) and the pom pins every version; jars
        already in ``~/.m2`` are copied, not downloaded (~5 s). Raises :class:`Neo4jError` when
        ``java`` or ``mvn`` is missing or Maven fails (the message names the cause and the log
        file ``logs/install.log``).
        """
        if self.is_installed():
            return
        with self.locked(progress):
            if not self.is_installed():  # another process may have installed it while we waited
                self._install(progress)

    def _install(self, progress: Progress) -> None:
        _java()
        mvn = shutil.which("mvn")
        if not mvn:
            raise Neo4jError(
                "Maven (mvn) is needed once to download Neo4j's jars and was not found on PATH; "
                "install it (e.g. `apt-get install maven`) or set NEO4J_URI to use another server"
            )
        self._prepare_dirs()
        pom = self.home / "pom.xml"
        pom.write_bytes(resources.files("pipeline.neo4j").joinpath("pom.xml").read_bytes())
        partial = self.home / "lib.partial"
        shutil.rmtree(partial, ignore_errors=True)
        log = self.home / "logs" / "install.log"
        progress.message(f"downloading Neo4j {self.version} jars from Maven Central (about 120 MB) ...")
        cmd = [
            mvn, "-B", "-C", "-f", str(pom), "dependency:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={partial}",
        ]
        with _private(log) as out:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=self.home).returncode
        if rc != 0:
            text = log.read_text(errors="replace")
            offline = re.search(
                r"UnknownHost|Could not transfer|Connection refused|Connect timed out|Network is unreachable"
                r"|Could not resolve dependencies|offline mode",
                text,
            )
            checksum = re.search(r"[Cc]hecksum validation failed|ChecksumFailure", text)
            if checksum:
                why = ("a download did not match its published checksum (a corrupt or tampered file; "
                       "retry, and check any proxy or mirror in ~/.m2/settings.xml)")
            elif offline:
                why = "Maven could not reach Maven Central (check network or proxy settings in ~/.m2/settings.xml)"
            else:
                why = f"Maven failed (exit {rc})"
            raise Neo4jError(f"cannot install Neo4j {self.version}: {why}; see {log}")
        if self.lib.is_symlink():
            self.lib.unlink()
        else:
            shutil.rmtree(self.lib, ignore_errors=True)
        partial.rename(self.lib)
        self._marker.write_text(self.version + "\n")
        progress.message(f"installed Neo4j {self.version} in {self.lib}")

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

    def running_port(self) -> int:
        """The Bolt port in the current ``neo4j.conf`` (the one a running server uses)."""
        try:
            text = (self.conf_dir / "neo4j.conf").read_text()
        except OSError:
            return self.port
        match = re.search(r"^server\.bolt\.listen_address=.*:(\d+)\s*$", text, re.M)
        return int(match.group(1)) if match else self.port

    def uri(self) -> str:
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

    def password(self) -> str:
        """The generated password of user ``neo4j``; raises when the server was never started."""
        try:
            return self.password_path.read_text().strip()
        except OSError:
            raise Neo4jError(
                f"the managed Neo4j server in {self.home} has no password yet: start it with "
                "`cnngraph neo4j start`"
            ) from None

    def connection_info(self) -> Connection:
        return Connection(self.uri(), USERNAME, self.password())

    def _write_conf(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        lines = [
            "# Written by cnngraph at every start; edits are lost. Settings: docs/neo4j.md",
            "server.default_listen_address=127.0.0.1",
            f"server.bolt.listen_address=127.0.0.1:{self.port}",
            "server.bolt.enabled=true",
            "server.http.enabled=false",
            "server.https.enabled=false",
            "dbms.security.auth_enabled=true",
            "dbms.usage_report.enabled=false",
            f"server.memory.heap.initial_size={self.heap}",
            f"server.memory.heap.max_size={self.heap}",
            f"server.memory.pagecache.size={self.pagecache}",
            f"server.directories.import={self.home / 'import'}",
            # Bolt waits 5 s twice on shutdown by default; nothing is pending on a local server.
            "internal.server.bolt.connection_shutdown_wait_time=1s",
            "internal.server.bolt.thread_pool_shutdown_wait_time=1s",
        ]
        with _private(self.conf_dir / "neo4j.conf") as out:
            out.write("\n".join(lines) + "\n")

    def _prepare_dirs(self) -> None:
        """The home's folders, mode 0700 (existing ones are tightened: the data is private)."""
        self._make_home()
        for name in ("data", "logs", "run", "import", "plugins", "conf"):
            path = self.home / name
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(path, 0o700)

    def admin_argv(self) -> list[str]:
        """The command line of this home's ``neo4j-admin`` (run it with ``NEO4J_HOME``/``NEO4J_CONF`` set)."""
        return [_java(), *_JVM_FLAGS, "-cp", str(self.lib / "*"), _ADMIN_TOOL]

    def write_admin_launcher(self, path: str | Path) -> Path:
        """Write an executable ``neo4j-admin`` for this home (e.g. ``NEO4J_ADMIN`` of an import.sh)."""
        path = Path(path)
        path.write_text("#!/bin/sh\n"
                        "umask 077\n"
                        f"export NEO4J_HOME={shlex.quote(str(self.home))} NEO4J_CONF={shlex.quote(str(self.conf_dir))}\n"
                        f"exec {shlex.join(self.admin_argv())} \"$@\"\n")
        path.chmod(0o755)
        return path

    def _admin(self, args: list[str], log: Path) -> tuple[int, str]:
        """Run neo4j-admin (``AdminTool``) in this home, umask 077; output to ``log``; returns (rc, output)."""
        cmd = [*self.admin_argv(), *args]
        with _private(log) as out:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=self._env(),
                                cwd=self.home, umask=0o077).returncode
        return rc, log.read_text(errors="replace")

    def _new_password(self) -> None:
        """Write a fresh password file (0600) unless one exists; never replaces another's."""
        password = secrets.token_urlsafe(24)
        while not _PASSWORD_RE.fullmatch(password):
            password = secrets.token_urlsafe(24)
        tmp = self.home / f".password.{os.getpid()}.tmp"
        with _private(tmp) as out:
            out.write(password + "\n")
        try:
            os.link(tmp, self.password_path)  # atomic, and fails when the file exists
        except FileExistsError:
            pass
        finally:
            tmp.unlink()

    def _ensure_password(self) -> None:
        """Generate the password and set it before the first start (``dbms set-initial-password``).

        The password reaches neo4j-admin in an ``@`` argument file (mode 0600, removed after),
        never on its command line, where ``ps`` would show it to every user.
        """
        first_start = not (self.home / "data" / "databases" / "system").exists()
        if not first_start:
            if not self.password_path.exists():
                raise Neo4jError(
                    f"the password file {self.password_path} is missing but the server's data exists; "
                    f"remove {self.home / 'data'} to start afresh (this deletes the database)"
                )
            return
        if not self.password_path.exists():
            self._new_password()
        os.chmod(self.password_path, 0o600)
        password = self.password()
        if not _PASSWORD_RE.fullmatch(password):
            raise Neo4jError(
                f"the password in {self.password_path} must be 8 or more letters, digits, '_' or '-' "
                "(not starting with '-'); remove the file to have one generated"
            )
        log = self.home / "logs" / "admin.log"
        args_file = self.home / "run" / "initial-password.args"
        with _private(args_file) as out:
            out.write(password + "\n")
        try:
            rc, _ = self._admin(["dbms", "set-initial-password", f"@{args_file}"], log)
        finally:
            args_file.unlink(missing_ok=True)
        if rc != 0:
            raise Neo4jError(f"cannot set the Neo4j password (exit {rc}); see {log}")

    def _check_port(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", self.port))
            except OSError as err:
                if err.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise
                raise Neo4jError(
                    f"port {self.port} on 127.0.0.1 is in use by another program; choose another Bolt "
                    f"port with `cnngraph neo4j start --port N` or {PORT_ENV}=N (or point NEO4J_URI "
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
            self._prepare_dirs()
            self._check_port()
            self._write_conf()
            self._ensure_password()
            conn = Connection(f"bolt://127.0.0.1:{self.port}", USERNAME, self.password())
            progress.message(f"starting Neo4j {self.version} on {conn.uri} (home {self.home}) ...")
            cmd = [
                _java(), f"-Xms{self.heap}", f"-Xmx{self.heap}", *_JVM_FLAGS,
                "-cp", str(self.lib / "*"), _ENTRY_POINT,
                f"--home-dir={self.home}", f"--config-dir={self.conf_dir}",
            ]
            env = {**self._env(), "CNNGRAPH_CONSOLE_LOG": str(self.home / "logs" / "console.log"),
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
        """running, pid, uri, home, version, installed, log (path of the server log)."""
        pid = self.pid()
        return {
            "running": pid is not None,
            "pid": pid,
            "uri": self.uri(),
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

    def _store_state(self, database: str) -> set[tuple[str, int, int, int]]:
        """(name, inode, size, mtime) of the database's store files: shows whether an import touched them."""
        folder = self.home / "data" / "databases" / database
        try:
            entries = list(folder.iterdir())
        except OSError:
            return set()
        state = set()
        for path in entries:
            if path.name == "database_lock":
                continue
            with contextlib.suppress(OSError):
                st = path.stat()
                state.add((path.name, st.st_ino, st.st_size, st.st_mtime_ns))
        return state

    def admin_import(
        self,
        args: list[str],
        progress: Progress = NULL,
        *,
        database: str = "neo4j",
        restart: bool | None = None,
        store_bytes: int | None = None,
    ) -> None:
        """Run ``neo4j-admin database import full <args> -- <database>`` on this home.

        The server is stopped first when running. ``restart``: None (default) starts it again only
        if it was running; True always starts it; False leaves it stopped. ``args`` are the
        importer's options, e.g. ``["--id-type=integer", "--nodes=Neuron=n.csv",
        "--relationships=CONNECTS=r.csv", "--overwrite-destination=true"]``; paths are best absolute.
        ``store_bytes``: the expected size of the new store (:func:`store_bytes`); when given, an
        :class:`~pipeline.errors.OutputError` refuses before the server is stopped unless the data
        disk has room for it.

        Output goes to ``logs/import.log``. A failure raises :class:`Neo4jError` with its tail,
        saying what became of the old database (untouched when the importer stopped before
        writing; otherwise it was deleted by ``--overwrite-destination`` and the unusable partial
        store is removed, so the database is empty) and whether the server runs again.
        """
        with self.locked(progress):
            self.install(progress)
            self._prepare_dirs()
            if store_bytes:
                storage.require_free(
                    self.home / "data", store_bytes, f"the bulk import into {self.home / 'data'} needs",
                    f"the database is untouched; free some space there or set {HOME_ENV} to a folder "
                    "on a larger disk (the managed server then lives there)")
            again = self._offline(restart)
            self._write_conf()
            log = self.home / "logs" / "import.log"
            before = self._store_state(database)
            progress.message(f"running neo4j-admin database import full into {database!r} ...")
            rc, text = self._admin(["database", "import", "full", *args, "--", database], log)
            if rc != 0:
                raise self._import_failed(rc, text, log, database, before, again, progress)
            done = re.search(r"IMPORT DONE.*?(?=Peak memory|\Z)", text, re.S)
            if done:
                progress.message(" ".join(done.group(0).split()))
            if again:
                self.start(progress)

    def _import_failed(self, rc: int, text: str, log: Path, database: str,
                       before: set[tuple[str, int, int, int]], again: bool, progress: Progress) -> Neo4jError:
        """The error of a failed import; removes the importer's partial store and restarts the server."""
        tail = "\n".join(line for line in text.splitlines()[-15:] if line.strip())
        if self._store_state(database) == before:
            fate = f"the {database!r} database is unchanged"
        else:
            # The importer deleted the old store (--overwrite-destination) and wrote a partial one
            # that the server cannot open ("likely in an unusable state"): this run's files only.
            for sub in ("databases", "transactions"):
                shutil.rmtree(self.home / "data" / sub / database, ignore_errors=True)
            fate = (f"the old {database!r} database was deleted by the import (--overwrite-destination) "
                    "and the import's unusable partial store removed, so the database is now empty")
        if again:
            try:
                self.start(progress)
                fate += "; the server is running again"
            except Neo4jError as err:
                fate += f"; starting the server again failed ({err})"
        else:
            fate += "; the server is stopped: start it with `cnngraph neo4j start`"
        return Neo4jError(f"neo4j-admin import failed (exit {rc}): {fate}; see {log}:\n{tail}")

    def reset_database(self, *, database: str = "neo4j", restart: bool | None = None) -> None:
        """Delete the user database's files (the server recreates it empty at next start).

        Users, the password and the system database are kept. ``restart`` as in :meth:`admin_import`.
        """
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.\-]*", database):
            raise Neo4jError(f"bad database name {database!r}")
        with self.locked():
            again = self._offline(restart)
            for sub in ("databases", "transactions"):
                shutil.rmtree(self.home / "data" / sub / database, ignore_errors=True)
            if again:
                self.start()


class _HomeLock:
    """The lock of one home in this process: a thread lock plus, while held, the ``flock`` on its file.

    ``flock`` locks conflict between two opens of the same file even in one process, so nested
    uses (``start`` inside ``admin_import``, or two ManagedServer objects for one home) share one
    open file and count their depth instead.
    """

    _registry: dict[Path, _HomeLock] = {}
    _registry_lock = threading.Lock()

    def __init__(self) -> None:
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @classmethod
    def of(cls, home: Path) -> _HomeLock:
        with cls._registry_lock:
            return cls._registry.setdefault(home, cls())

    @contextlib.contextmanager
    def hold(self, path: Path, progress: Progress) -> Iterator[None]:
        with self._thread_lock:
            if self._depth == 0:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        progress.message(f"waiting for another cnngraph process using {path.parent} "
                                         "(install, start, stop or bulk import) ...")
                        fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._fd is not None:
                    os.close(self._fd)  # releases the flock
                    self._fd = None


def _private(path: Path) -> IO[str]:
    """``open(path, "w")``, but the file is mode 0600 (also when it existed with a wider mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "w")


def _java() -> str:
    java = shutil.which("java")
    if not java:
        raise Neo4jError(
            "Java 17 or newer is needed to run the managed Neo4j server and `java` was not found on "
            "PATH; install a JDK (e.g. `apt-get install openjdk-17-jre-headless`) or set NEO4J_URI"
        )
    return java


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
    return _ENTRY_POINT.encode() in args and f"--home-dir={home}".encode() in args


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
