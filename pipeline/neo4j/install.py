"""Install the managed server's jars from Maven Central into its home (once per home).

Maven (``mvn dependency:copy-dependencies``) fetches the runtime of ``org.neo4j:neo4j`` and Neo4j
Browser as pinned by the package's ``pom.xml`` into ``lib.partial/``, which is renamed to ``lib/``
and marked ``lib/.installed`` only when complete: an interrupted install is redone, never half used.
The plugins (GDS, APOC: ``plugins.xml``) go the same way into ``plugins/``, less the jars ``lib/``
already holds (same groupId and artifactId: two versions of one library on a class path clash).
Each folder keeps Maven's list of what it resolved in ``.artifacts``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from pipeline import storage
from pipeline.errors import Neo4jError
from pipeline.neo4j.home import LIB_REVISION, PLUGINS_REVISION, ServerHome, java, private_file
from pipeline.progress import NULL, Progress


def install_jars(home: ServerHome, progress: Progress = NULL) -> None:
    """Copy Neo4j's runtime jars from Maven Central into ``home/lib`` (once; ~135 MB, ~1 min), and
    the plugins into ``home/plugins`` when ``home.plugins`` (~35 MB).

    Maven checks every download's checksum (``-C``) and the pom pins every version; jars
    already in ``~/.m2`` are copied, not downloaded (~5 s). Raises :class:`Neo4jError` when
    ``java`` or ``mvn`` is missing or Maven fails (the message names the cause and the log
    file ``logs/install.log``). Holds the home's lock; returns at once when installed.
    """
    if home.is_installed() and (not home.plugins or home.plugins_installed()):
        return
    with home.locked(progress):  # another process may have installed them while we waited
        if not home.is_installed():
            _install(home, progress)
        if home.plugins and not home.plugins_installed():
            _install_plugins(home, progress)


_OFFLINE = re.compile(
    r"UnknownHost|Could not transfer|Connection refused|Connect timed out|Network is unreachable"
    r"|Could not resolve dependencies|offline mode"
)
_CHECKSUM = re.compile(r"[Cc]hecksum validation failed|ChecksumFailure")
#: One line of ``mvn dependency:list -DoutputAbsoluteArtifactFilename``: group, artifact, jar path.
_LISTED = re.compile(r"^\s*([^:\s]+):([^:\s]+):[^/\n]*:(/\S+\.jar)", re.M)


def _maven(home: ServerHome, pom_name: str, folder: Path, what: str, progress: Progress) -> None:
    """Copy the runtime closure of the package's ``pom_name`` into ``folder`` (new), and list it in
    ``folder/.artifacts``; Neo4jError naming the cause and the log on failure."""
    mvn = shutil.which("mvn")
    if not mvn:
        raise Neo4jError(
            "Maven (mvn) is needed once to download Neo4j's jars and was not found on PATH; "
            "install it (e.g. `apt-get install maven`) or set NEO4J_URI to use another server"
        )
    pom = home.home / pom_name
    pom.write_bytes(resources.files("pipeline.neo4j").joinpath(pom_name).read_bytes())
    shutil.rmtree(folder, ignore_errors=True)
    log = home.home / "logs" / "install.log"
    progress.message(f"downloading {what} from Maven Central ...")
    cmd = [
        mvn, "-B", "-C", "-f", str(pom), "dependency:copy-dependencies", "dependency:list",
        "-DincludeScope=runtime", f"-DoutputDirectory={folder}", f"-DoutputFile={folder / '.artifacts'}",
        "-DoutputAbsoluteArtifactFilename=true",
    ]
    with private_file(log) as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=home.home).returncode
    if rc != 0:
        text = log.read_text(errors="replace")
        if _CHECKSUM.search(text):
            why = ("a download did not match its published checksum (a corrupt or tampered file; "
                   "retry, and check any proxy or mirror in ~/.m2/settings.xml)")
        elif _OFFLINE.search(text):
            why = "Maven could not reach Maven Central (check network or proxy settings in ~/.m2/settings.xml)"
        else:
            why = f"Maven failed (exit {rc})"
        raise Neo4jError(f"cannot install {what}: {why}; see {log}")


def artifacts(folder: Path) -> dict[tuple[str, str], str]:
    """``(groupId, artifactId) -> jar file name`` of what an install put in ``folder``."""
    text = storage.small_text(folder / ".artifacts", 1 << 20) or ""
    return {(g, a): Path(path).name for g, a, path in _LISTED.findall(text)}


def _replace(folder: Path, partial: Path) -> None:
    if folder.is_symlink():
        folder.unlink()
    else:
        shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def _install(home: ServerHome, progress: Progress) -> None:
    java()
    home.prepare_dirs()
    partial = home.home / "lib.partial"
    _maven(home, "pom.xml", partial, f"Neo4j {home.version} and Neo4j Browser (about 135 MB)", progress)
    _replace(home.lib, partial)
    home.marker_path.write_text(LIB_REVISION + "\n")
    progress.message(f"installed Neo4j {home.version} in {home.lib}")


def _install_plugins(home: ServerHome, progress: Progress) -> None:
    """GDS and APOC into ``plugins/``. The folder is replaced only when it is empty or an install
    of ours (its ``.installed``): a jar a user put there is never deleted."""
    folder = home.plugins_dir
    if folder.is_dir() and not folder.is_symlink() and any(folder.iterdir()) and not (folder / ".installed").exists():
        raise Neo4jError(f"{folder} holds files cnngraph did not install; move them away (or start with "
                         "--no-plugins) so GDS and APOC can be installed there; nothing was changed")
    partial = home.home / "plugins.partial"
    _maven(home, "plugins.xml", partial, f"the plugins ({PLUGINS_REVISION}, about 35 MB)", progress)
    server_jars = artifacts(home.lib)
    for key, name in artifacts(partial).items():
        if key in server_jars:
            (partial / name).unlink(missing_ok=True)
    _replace(folder, partial)
    (folder / ".installed").write_text(PLUGINS_REVISION + "\n")
    progress.message(f"installed {PLUGINS_REVISION} in {folder}")
