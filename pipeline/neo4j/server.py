"""A managed local Neo4j Community server run from Maven Central jars (no Docker needed).

Layout of the server's home (default ``$CNNGRAPH_HOME/neo4j``, else
``~/.cache/cnngraph/neo4j-<version>``)::

    pom.xml        copy of the package's pom (pins org.neo4j:neo4j)
    lib/           the runtime jars, filled by Maven; ``lib/.installed`` marks a complete copy
    conf/          neo4j.conf, rewritten at every start
    data/ logs/ run/ import/ plugins/
    password       the generated password of user ``neo4j`` (mode 0600)

The server JVM (``org.neo4j.server.CommunityEntryPoint``, what the ``neo4j`` launcher spawns) is
started detached in its own session, so it outlives the Python process that started it; its pid is
kept in ``run/neo4j.pid``. Bolt listens on 127.0.0.1 only; HTTP is off.

Without ``NEO4J_URI`` the managed server is the default target: :func:`connection` starts it on
demand. :func:`driver` opens a verified driver and turns connection errors into this package's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
        if port is None:
            raw = os.environ.get(PORT_ENV, "")
            try:
                port = int(raw) if raw else DEFAULT_PORT
            except ValueError:
                raise Neo4jError(f"{PORT_ENV}={raw!r} is not a port number") from None
        self.port = port
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
    def _marker(self) -> Path:
        return self.lib / ".installed"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "NEO4J_HOME": str(self.home), "NEO4J_CONF": str(self.conf_dir)}

    # -- install -------------------------------------------------------------------------------
    def is_installed(self) -> bool:
        """True when ``lib/`` holds a complete copy of this version's jars."""
        try:
            return self._marker.read_text().strip() == self.version
        except OSError:
            return False

    def install(self, progress: Progress = NULL) -> None:
        """Copy Neo4j's runtime jars from Maven Central into ``home/lib`` (once; ~120 MB, ~1 min).

        Raises :class:`Neo4jError` when ``java`` or ``mvn`` is missing or Maven fails (the
        message names the cause and the log file ``logs/install.log``).
        """
        if self.is_installed():
            return
        _java()
        mvn = shutil.which("mvn")
        if not mvn:
            raise Neo4jError(
                "Maven (mvn) is needed once to download Neo4j's jars and was not found on PATH; "
                "install it (e.g. `apt-get install maven`) or set NEO4J_URI to use another server"
            )
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        pom = self.home / "pom.xml"
        pom.write_bytes(resources.files("pipeline.neo4j").joinpath("pom.xml").read_bytes())
        partial = self.home / "lib.partial"
        shutil.rmtree(partial, ignore_errors=True)
        log = self.home / "logs" / "install.log"
        progress.message(f"downloading Neo4j {self.version} jars from Maven Central (about 120 MB) ...")
        cmd = [
            mvn, "-B", "-f", str(pom), "dependency:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={partial}",
        ]
        with open(log, "w") as out:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=self.home).returncode
        if rc != 0:
            text = log.read_text(errors="replace")
            offline = re.search(
                r"UnknownHost|Could not transfer|Connection refused|Connect timed out|Network is unreachable"
                r"|Could not resolve dependencies|offline mode",
                text,
            )
            why = "Maven could not reach Maven Central (check network or proxy settings in ~/.m2/settings.xml)" \
                if offline else f"Maven failed (exit {rc})"
            raise Neo4jError(f"cannot install Neo4j {self.version}: {why}; see {log}")
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
        (self.conf_dir / "neo4j.conf").write_text("\n".join(lines) + "\n")

    def _prepare_dirs(self) -> None:
        for name in ("data", "logs", "run", "import", "plugins"):
            (self.home / name).mkdir(parents=True, exist_ok=True)

    def admin_argv(self) -> list[str]:
        """The command line of this home's ``neo4j-admin`` (run it with ``NEO4J_HOME``/``NEO4J_CONF`` set)."""
        return [_java(), *_JVM_FLAGS, "-cp", str(self.lib / "*"), _ADMIN_TOOL]

    def write_admin_launcher(self, path: str | Path) -> Path:
        """Write an executable ``neo4j-admin`` for this home (e.g. ``NEO4J_ADMIN`` of an import.sh)."""
        path = Path(path)
        path.write_text("#!/bin/sh\n"
                        f"export NEO4J_HOME={shlex.quote(str(self.home))} NEO4J_CONF={shlex.quote(str(self.conf_dir))}\n"
                        f"exec {shlex.join(self.admin_argv())} \"$@\"\n")
        path.chmod(0o755)
        return path

    def _admin(self, args: list[str], log: Path) -> tuple[int, str]:
        """Run neo4j-admin (``AdminTool``) in this home; output to ``log``; returns (rc, output)."""
        cmd = [*self.admin_argv(), *args]
        with open(log, "w") as out:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=self._env(),
                                cwd=self.home).returncode
        return rc, log.read_text(errors="replace")

    def _ensure_password(self) -> None:
        """Generate the password and set it before the first start (``dbms set-initial-password``)."""
        first_start = not (self.home / "data" / "databases" / "system").exists()
        if not first_start:
            if not self.password_path.exists():
                raise Neo4jError(
                    f"the password file {self.password_path} is missing but the server's data exists; "
                    f"remove {self.home / 'data'} to start afresh (this deletes the database)"
                )
            return
        if not self.password_path.exists():
            fd = os.open(self.password_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(24) + "\n")
        os.chmod(self.password_path, 0o600)
        log = self.home / "logs" / "admin.log"
        # The password goes in argv of a short local process; it is never logged by us.
        rc, text = self._admin(["dbms", "set-initial-password", self.password()], log)
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

        Returns at once when it already runs. Waits until Bolt accepts the generated password;
        on failure raises :class:`Neo4jError` naming the log file.
        """
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
        console = self.home / "logs" / "console.log"
        # Started through `sh ... &` so the JVM is not our child: it is adopted by init, outlives
        # this process and never lingers as our zombie; its own session keeps it from terminal signals.
        launch = subprocess.run(
            ["sh", "-c", 'exec "$@" </dev/null >>"$CNNGRAPH_CONSOLE_LOG" 2>&1 & echo $!', "sh", *cmd],
            env={**self._env(), "CNNGRAPH_CONSOLE_LOG": str(console)}, cwd=self.home,
            capture_output=True, text=True, start_new_session=True, check=False,
        )
        try:
            pid = int(launch.stdout.strip())
        except ValueError:
            raise Neo4jError(f"cannot launch the Neo4j server: {launch.stderr.strip()}") from None
        self.pid_path.write_text(f"{pid}\n")
        try:
            self._wait_ready(conn, pid, timeout)
        except Neo4jError:
            self.stop()
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
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``); True when one was running."""
        pid = self.pid()
        if pid is None:
            self.pid_path.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 10)
        self.pid_path.unlink(missing_ok=True)
        return True

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

    def admin_import(
        self,
        args: list[str],
        progress: Progress = NULL,
        *,
        database: str = "neo4j",
        restart: bool | None = None,
    ) -> None:
        """Run ``neo4j-admin database import full <args> -- <database>`` on this home.

        The server is stopped first when running. ``restart``: None (default) starts it again only
        if it was running; True always starts it; False leaves it stopped. ``args`` are the
        importer's options, e.g. ``["--id-type=integer", "--nodes=Neuron=n.csv",
        "--relationships=CONNECTS=r.csv", "--overwrite-destination=true"]``; paths are best absolute.
        Output goes to ``logs/import.log``; a failure raises :class:`Neo4jError` with its tail.
        """
        self.install(progress)
        again = self._offline(restart)
        self._prepare_dirs()
        self._write_conf()
        log = self.home / "logs" / "import.log"
        progress.message(f"running neo4j-admin database import full into {database!r} ...")
        rc, text = self._admin(["database", "import", "full", *args, "--", database], log)
        if rc != 0:
            tail = "\n".join(line for line in text.splitlines()[-15:] if line.strip())
            raise Neo4jError(f"neo4j-admin import failed (exit {rc}); see {log}:\n{tail}")
        done = re.search(r"IMPORT DONE.*?(?=Peak memory|\Z)", text, re.S)
        if done:
            progress.message(" ".join(done.group(0).split()))
        if again:
            self.start(progress)

    def reset_database(self, *, database: str = "neo4j", restart: bool | None = None) -> None:
        """Delete the user database's files (the server recreates it empty at next start).

        Users, the password and the system database are kept. ``restart`` as in :meth:`admin_import`.
        """
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.\-]*", database):
            raise Neo4jError(f"bad database name {database!r}")
        again = self._offline(restart)
        for sub in ("databases", "transactions"):
            shutil.rmtree(self.home / "data" / sub / database, ignore_errors=True)
        if again:
            self.start()


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
