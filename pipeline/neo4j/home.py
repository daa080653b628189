"""The managed Neo4j server's home on disk: layout, lock, configuration, password, neo4j-admin.

Layout of the server's home (default ``$CNNGRAPH_HOME/neo4j``, else
``~/.cache/cnngraph/neo4j-<version>``)::

    pom.xml        copy of the package's pom (pins org.neo4j:neo4j and Neo4j Browser)
    plugins.xml    copy of the package's plugins pom (pins GDS and APOC)
    lib/           the runtime jars, filled by Maven; ``lib/.installed`` marks a complete copy
    plugins/       GDS and APOC (when plugins are on), on the class path too; ``plugins/.installed``
    conf/          neo4j.conf, rewritten at every start
    data/ logs/ run/ import/
    password       the generated password of user ``neo4j`` (mode 0600)
    .lock          flock'ed around install, start, stop and bulk import (one at a time per home)

The home is mode 0700 and the server and neo4j-admin run with umask 077, so no other user can read
the database, logs or password; the password never appears on a command line (neo4j-admin reads it
from an ``@`` argument file, mode 0600, removed at once).

:class:`ServerHome` is what :mod:`~pipeline.neo4j.install` and :mod:`~pipeline.neo4j.admin` work on;
:class:`pipeline.neo4j.server.ManagedServer` adds the running process on top of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shlex
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from pipeline import storage
from pipeline.errors import Neo4jError
from pipeline.progress import NULL, Progress

NEO4J_VERSION = "5.26.19"
BROWSER_VERSION = "5.24.0"
GDS_VERSION = "2.13.9"
APOC_VERSION = "5.26.19"
#: What ``lib/.installed`` and ``plugins/.installed`` hold: a home installed before the Browser
#: was part of ``lib/`` is installed again (from ``~/.m2``, seconds).
LIB_REVISION = f"{NEO4J_VERSION} browser-{BROWSER_VERSION}"
PLUGINS_REVISION = f"GDS {GDS_VERSION}, APOC {APOC_VERSION}"
DEFAULT_PORT = 7687
DEFAULT_HTTP_PORT = 7474
PORT_ENV = "CNNGRAPH_NEO4J_PORT"
HTTP_PORT_ENV = "CNNGRAPH_NEO4J_HTTP_PORT"
#: ``0`` (or ``false``/``no``/``off``) starts the managed server without GDS and APOC.
PLUGINS_ENV = "CNNGRAPH_NEO4J_PLUGINS"
HOME_ENV = "CNNGRAPH_HOME"
HEAP_ENV = "CNNGRAPH_NEO4J_HEAP"
PAGECACHE_ENV = "CNNGRAPH_NEO4J_PAGECACHE"
USERNAME = "neo4j"

#: The server JVM's main class (what the ``neo4j`` launcher spawns) and neo4j-admin's.
ENTRY_POINT = "org.neo4j.server.CommunityEntryPoint"
ADMIN_TOOL = "org.neo4j.cli.AdminTool"
_GIB = 1 << 30
_MIB = 1 << 20
#: A generated password: URL-safe, never starting with "-" (neo4j-admin would read an option).
_PASSWORD_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{7,}")

#: JVM flags the shipped neo4j.conf adds; needed because we bypass the tarball's config.
JVM_FLAGS = [
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


def default_home() -> Path:
    """``$CNNGRAPH_HOME/neo4j`` when the variable is set, else ``~/.cache/cnngraph/neo4j-<version>``."""
    root = os.environ.get(HOME_ENV)
    if root:
        return Path(root).expanduser() / "neo4j"
    return Path("~/.cache/cnngraph").expanduser() / f"neo4j-{NEO4J_VERSION}"


def default_port(env: str = PORT_ENV, default: int = DEFAULT_PORT) -> int:
    """``$CNNGRAPH_NEO4J_PORT`` when set, else 7687: the managed server's Bolt port (``env`` and
    ``default`` select another port's variable, e.g. the HTTP port's)."""
    raw = os.environ.get(env, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        raise Neo4jError(f"{env}={raw!r} is not a port number") from None


def default_plugins() -> bool:
    """Whether the managed server runs GDS and APOC: yes unless ``$CNNGRAPH_NEO4J_PLUGINS`` says no."""
    return os.environ.get(PLUGINS_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * _GIB


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def default_memory(total: int | None = None, plugins: bool = False) -> tuple[str, str]:
    """Heap and page cache sizes for a machine with ``total`` bytes of RAM.

    Heap is 1/12 of RAM within 1-2 GiB; page cache 1/8 of RAM within 1-4 GiB: enough for loading
    and exporting while leaving most memory to TensorFlow and the importer. With GDS (``plugins``)
    the heap is 1/4 of RAM within 1-8 GiB: GDS holds its projections on the heap (~10 B per
    weighted relationship), so analytics want heap more than page cache.
    """
    total = total or _total_memory()
    heap = _clamp(total // 4, _GIB, 8 * _GIB) if plugins else _clamp(total // 12, _GIB, 2 * _GIB)
    pagecache = _clamp(total // 8, _GIB, 4 * _GIB)
    return f"{heap // _MIB}m", f"{pagecache // _MIB}m"



#: Kind of folder a managed server's home is (pipeline.storage ownership marker).
HOME_KIND = "neo4j-home"


def is_legacy_home(home: Path) -> bool:
    """A home made by a cnngraph older than the ownership marker: it holds our copy of the pom."""
    return "`cnngraph neo4j start` copies the runtime closure" in (storage.small_text(home / "pom.xml") or "")


class ServerHome:
    """The folder a managed Neo4j server lives in, and its settings (not the running process).

    Parameters
    ----------
    home:
        The server's folder (see the module docstring); :func:`default_home` when omitted.
    port:
        Bolt port on 127.0.0.1; default ``$CNNGRAPH_NEO4J_PORT`` or 7687.
    http_port:
        HTTP port on 127.0.0.1 (Neo4j Browser at ``/browser/``); default ``$CNNGRAPH_NEO4J_HTTP_PORT``
        or 7474.
    plugins:
        Run GDS and APOC (installed on first use); default :func:`default_plugins` (yes).
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
        http_port: int | None = None,
        plugins: bool | None = None,
        heap: str | None = None,
        pagecache: str | None = None,
    ):
        self.home = Path(home).expanduser().resolve() if home else default_home().resolve()
        self.port = default_port() if port is None else port
        self.http_port = default_port(HTTP_PORT_ENV, DEFAULT_HTTP_PORT) if http_port is None else http_port
        self.plugins = default_plugins() if plugins is None else plugins
        auto_heap, auto_pagecache = default_memory(plugins=self.plugins)
        self.heap = heap or os.environ.get(HEAP_ENV) or auto_heap
        self.pagecache = pagecache or os.environ.get(PAGECACHE_ENV) or auto_pagecache

    def __repr__(self) -> str:
        return f"{type(self).__name__}(home={str(self.home)!r}, port={self.port})"

    # -- paths ---------------------------------------------------------------------------------
    @property
    def lib(self) -> Path:
        """The runtime jars (``lib/*`` is the JVM class path)."""
        return self.home / "lib"

    @property
    def plugins_dir(self) -> Path:
        """GDS and APOC jars (on the class path too, when plugins are on)."""
        return self.home / "plugins"

    @property
    def class_path(self) -> str:
        """The server JVM's class path: ``lib/*``, plus ``plugins/*`` when plugins are on."""
        parts = [self.lib / "*", *([self.plugins_dir / "*"] if self.plugins else [])]
        return os.pathsep.join(str(p) for p in parts)

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
    def marker_path(self) -> Path:
        """Written last by an install; holds the version installed."""
        return self.lib / ".installed"

    def env(self) -> dict[str, str]:
        """The environment of this home's Java processes (``NEO4J_HOME``, ``NEO4J_CONF`` added)."""
        return {**os.environ, "NEO4J_HOME": str(self.home), "NEO4J_CONF": str(self.conf_dir)}

    # -- the home and its lock -----------------------------------------------------------------
    def make_home(self) -> None:
        """Create the home (mode 0700, with our ownership marker), or take one of ours.

        Install, reset and a failed import delete folders inside the home, so a non-empty folder
        that is not provably a cnngraph home (a real Neo4j installation, say, that ``CNNGRAPH_HOME``
        happens to point at) is refused untouched.
        """
        if self.home.exists() and any(self.home.iterdir()) and not storage.owns(self.home, HOME_KIND, is_legacy_home):
            raise Neo4jError(f"{self.home} is not empty and is not a cnngraph managed Neo4j home (it has no "
                             f"{storage.OWNER_FILE} of ours); nothing in it was changed; set {HOME_ENV} to "
                             "another folder")
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        if storage.owner(self.home) is None:
            storage.write_owner(self.home, HOME_KIND)
        if self.home.stat().st_uid == os.getuid():
            os.chmod(self.home, 0o700)

    @contextlib.contextmanager
    def locked(self, progress: Progress = NULL) -> Iterator[None]:
        """Hold this home's lock: other processes' install/start/stop/import wait until it is released.

        Re-entrant within one process (``start`` inside ``admin_import`` does not wait for itself).
        When another process holds it, ``progress`` is told that this one waits.
        """
        self.make_home()
        with _HomeLock.of(self.home).hold(self.lock_path, progress):
            yield

    def is_installed(self) -> bool:
        """True when ``lib/`` holds a complete copy of this version's jars."""
        return (storage.small_text(self.marker_path) or "").strip() == LIB_REVISION

    def plugins_installed(self) -> bool:
        """True when ``plugins/`` holds a complete copy of this revision's GDS and APOC."""
        return (storage.small_text(self.plugins_dir / ".installed") or "").strip() == PLUGINS_REVISION

    # -- configuration, password, neo4j-admin ------------------------------------------------------
    def password(self) -> str:
        """The generated password of user ``neo4j``; raises when the server was never started."""
        try:
            return self.password_path.read_text().strip()
        except OSError:
            raise Neo4jError(
                f"the managed Neo4j server in {self.home} has no password yet: start it with "
                "`cnngraph neo4j start`"
            ) from None

    def write_conf(self) -> None:
        """Write ``conf/neo4j.conf`` (mode 0600) from this home's ports, plugins and memory settings.

        Both listeners are on 127.0.0.1 only, with auth on; the advertised addresses are the real
        ports, so Neo4j Browser (served over HTTP) connects its Bolt session to this server and not
        to 7687. Browser and server send nothing out (no usage data, no remote guides).
        """
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        no_plugins = self.home / "run" / "no-plugins"
        if not self.plugins:
            no_plugins.mkdir(parents=True, exist_ok=True, mode=0o700)  # GDS in plugins/ needs the class path
        lines = [
            "# Written by cnngraph at every start; edits are lost. Settings: docs/neo4j.md",
            "server.default_listen_address=127.0.0.1",
            "server.default_advertised_address=127.0.0.1",
            f"server.bolt.listen_address=127.0.0.1:{self.port}",
            f"server.bolt.advertised_address=127.0.0.1:{self.port}",
            "server.bolt.enabled=true",
            "server.http.enabled=true",
            f"server.http.listen_address=127.0.0.1:{self.http_port}",
            f"server.http.advertised_address=127.0.0.1:{self.http_port}",
            "server.https.enabled=false",
            "dbms.security.auth_enabled=true",
            "dbms.usage_report.enabled=false",
            "client.allow_telemetry=false",
            # Guides and other remote content only from this machine (default: guides.neo4j.com).
            "browser.remote_content_hostname_whitelist=127.0.0.1",
            f"server.directories.plugins={self.plugins_dir if self.plugins else no_plugins}",
            *(["dbms.security.procedures.unrestricted=gds.*,apoc.*"] if self.plugins else []),
            f"server.memory.heap.initial_size={self.heap}",
            f"server.memory.heap.max_size={self.heap}",
            f"server.memory.pagecache.size={self.pagecache}",
            f"server.directories.import={self.home / 'import'}",
            # Transaction logs only as long as recovery needs them (the default keeps 2 days, for
            # backups Community does not make): an online load writes ~245 bytes of log per
            # relationship, 4.3 GB for 17.4 M relationships.
            "db.tx_log.rotation.retention_policy=keep_none",
            # Bolt waits 5 s twice on shutdown by default; nothing is pending on a local server.
            "internal.server.bolt.connection_shutdown_wait_time=1s",
            "internal.server.bolt.thread_pool_shutdown_wait_time=1s",
        ]
        with private_file(self.conf_dir / "neo4j.conf") as out:
            out.write("\n".join(lines) + "\n")

    def prepare_dirs(self) -> None:
        """The home's folders, mode 0700 (existing ones are tightened: the data is private)."""
        self.make_home()
        for name in ("data", "logs", "run", "import", "conf"):
            path = self.home / name
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(path, 0o700)

    def admin_argv(self) -> list[str]:
        """The command line of this home's ``neo4j-admin`` (run it with ``NEO4J_HOME``/``NEO4J_CONF`` set)."""
        return [java(), *JVM_FLAGS, "-cp", str(self.lib / "*"), ADMIN_TOOL]

    def write_admin_launcher(self, path: str | Path) -> Path:
        """Write an executable ``neo4j-admin`` for this home (e.g. ``NEO4J_ADMIN`` of an import.sh)."""
        path = Path(path)
        path.write_text("#!/bin/sh\n"
                        "umask 077\n"
                        f"export NEO4J_HOME={shlex.quote(str(self.home))} NEO4J_CONF={shlex.quote(str(self.conf_dir))}\n"
                        f"exec {shlex.join(self.admin_argv())} \"$@\"\n")
        path.chmod(0o755)
        return path

    def run_admin(self, args: list[str], log: Path) -> tuple[int, str]:
        """Run neo4j-admin (``AdminTool``) in this home, umask 077; output to ``log``; returns (rc, output)."""
        cmd = [*self.admin_argv(), *args]
        with private_file(log) as out:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env(),
                                cwd=self.home, umask=0o077).returncode
        return rc, log.read_text(errors="replace")

    def _new_password(self) -> None:
        """Write a fresh password file (0600) unless one exists; never replaces another's."""
        password = secrets.token_urlsafe(24)
        while not _PASSWORD_RE.fullmatch(password):
            password = secrets.token_urlsafe(24)
        tmp = self.home / f".password.{os.getpid()}.tmp"
        with private_file(tmp) as out:
            out.write(password + "\n")
        try:
            os.link(tmp, self.password_path)  # atomic, and fails when the file exists
        except FileExistsError:
            pass
        finally:
            tmp.unlink()

    def ensure_password(self) -> None:
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
        with private_file(args_file) as out:
            out.write(password + "\n")
        try:
            rc, _ = self.run_admin(["dbms", "set-initial-password", f"@{args_file}"], log)
        finally:
            args_file.unlink(missing_ok=True)
        if rc != 0:
            raise Neo4jError(f"cannot set the Neo4j password (exit {rc}); see {log}")


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


def private_file(path: Path) -> IO[str]:
    """``open(path, "w")``, but the file is mode 0600 (also when it existed with a wider mode) and
    never written through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "w")


def java() -> str:
    """The ``java`` program on PATH; Neo4jError saying how to install one when it is missing."""
    found = shutil.which("java")
    if not found:
        raise Neo4jError(
            "Java 17 or newer is needed to run the managed Neo4j server and `java` was not found on "
            "PATH; install a JDK (e.g. `apt-get install openjdk-17-jre-headless`) or set NEO4J_URI"
        )
    return found
