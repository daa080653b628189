"""Install the managed server's Neo4j jars from Maven Central into its home (once per home).

Maven (``mvn dependency:copy-dependencies``) fetches the runtime of ``org.neo4j:neo4j`` as pinned by
the package's ``pom.xml`` into ``lib.partial/``, which is renamed to ``lib/`` and marked
``lib/.installed`` only when complete: an interrupted install is redone, never half used.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import resources

from pipeline.errors import Neo4jError
from pipeline.neo4j.home import ServerHome, java, private_file
from pipeline.progress import NULL, Progress


def install_jars(home: ServerHome, progress: Progress = NULL) -> None:
    """Copy Neo4j's runtime jars from Maven Central into ``home/lib`` (once; ~120 MB, ~1 min).

    Maven checks every download's checksum (``-C``) and the pom pins every version; jars
    already in ``~/.m2`` are copied, not downloaded (~5 s). Raises :class:`Neo4jError` when
    ``java`` or ``mvn`` is missing or Maven fails (the message names the cause and the log
    file ``logs/install.log``). Holds the home's lock; returns at once when installed.
    """
    if home.is_installed():
        return
    with home.locked(progress):
        if not home.is_installed():  # another process may have installed it while we waited
            _install(home, progress)


def _install(home: ServerHome, progress: Progress) -> None:
    java()
    mvn = shutil.which("mvn")
    if not mvn:
        raise Neo4jError(
            "Maven (mvn) is needed once to download Neo4j's jars and was not found on PATH; "
            "install it (e.g. `apt-get install maven`) or set NEO4J_URI to use another server"
        )
    home.prepare_dirs()
    pom = home.home / "pom.xml"
    pom.write_bytes(resources.files("pipeline.neo4j").joinpath("pom.xml").read_bytes())
    partial = home.home / "lib.partial"
    shutil.rmtree(partial, ignore_errors=True)
    log = home.home / "logs" / "install.log"
    progress.message(f"downloading Neo4j {home.version} jars from Maven Central (about 120 MB) ...")
    cmd = [
        mvn, "-B", "-C", "-f", str(pom), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={partial}",
    ]
    with private_file(log) as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=home.home).returncode
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
        raise Neo4jError(f"cannot install Neo4j {home.version}: {why}; see {log}")
    if home.lib.is_symlink():
        home.lib.unlink()
    else:
        shutil.rmtree(home.lib, ignore_errors=True)
    partial.rename(home.lib)
    home.marker_path.write_text(home.version + "\n")
    progress.message(f"installed Neo4j {home.version} in {home.lib}")
