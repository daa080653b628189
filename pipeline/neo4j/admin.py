"""Offline work on the managed server's database files: ``neo4j-admin database import full``, reset.

These functions run on a stopped server's home (:class:`~pipeline.neo4j.home.ServerHome`);
:meth:`pipeline.neo4j.server.ManagedServer.admin_import` and ``reset_database`` stop the server,
call them under the home's lock and start it again.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline import storage
from pipeline.errors import Neo4jError
from pipeline.neo4j.home import HOME_ENV, ServerHome
from pipeline.progress import NULL, Progress

#: The store's state: (file name, inode, size, mtime) of each of the database's store files.
StoreState = set[tuple[str, int, int, int]]


@dataclass
class ImportFailure:
    """A failed import: the importer's exit code, its log, and what became of the old database."""

    rc: int
    log: Path
    tail: str
    fate: str

    def error(self, server_note: str) -> Neo4jError:
        """The error to raise, ``server_note`` saying whether the server runs again (``"; ..."``)."""
        return Neo4jError(f"neo4j-admin import failed (exit {self.rc}): {self.fate}{server_note}; "
                          f"see {self.log}:\n{self.tail}")


def check_database_name(database: str) -> str:
    """``database`` if it is a plain database name (it becomes a folder name), else Neo4jError."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.\-]*", database):
        raise Neo4jError(f"bad database name {database!r}")
    return database


def require_room(home: ServerHome, store_bytes: int) -> None:
    """OutputError unless the data disk has ``store_bytes`` free (checked before anything stops)."""
    storage.require_free(
        home.home / "data", store_bytes, f"the bulk import into {home.home / 'data'} needs",
        f"the database is untouched; free some space there or set {HOME_ENV} to a folder "
        "on a larger disk (the managed server then lives there)")


def store_state(home: ServerHome, database: str) -> StoreState:
    """(name, inode, size, mtime) of the database's store files: shows whether an import touched them."""
    folder = home.home / "data" / "databases" / database
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


def delete_database(home: ServerHome, database: str) -> None:
    """Delete the database's store and transaction logs (the server recreates it empty); the
    caller checks the name (:func:`check_database_name`)."""
    for sub in ("databases", "transactions"):
        shutil.rmtree(home.home / "data" / sub / database, ignore_errors=True)


def import_full(home: ServerHome, args: list[str], database: str = "neo4j",
                progress: Progress = NULL) -> ImportFailure | None:
    """Run ``neo4j-admin database import full <args> -- <database>`` on the stopped server's home.

    Output goes to ``logs/import.log``. Returns None on success, else an :class:`ImportFailure`
    saying what became of the old database: untouched when the importer stopped before writing;
    otherwise it was deleted by ``--overwrite-destination`` and the unusable partial store is
    removed here, so the database is empty.
    """
    log = home.home / "logs" / "import.log"
    before = store_state(home, database)
    progress.message(f"running neo4j-admin database import full into {database!r} ...")
    rc, text = home.run_admin(["database", "import", "full", *args, "--", database], log)
    if rc != 0:
        tail = "\n".join(line for line in text.splitlines()[-15:] if line.strip())
        if store_state(home, database) == before:
            fate = f"the {database!r} database is unchanged"
        else:
            # The importer deleted the old store (--overwrite-destination) and wrote a partial one
            # that the server cannot open ("likely in an unusable state"): this run's files only.
            delete_database(home, database)
            fate = (f"the old {database!r} database was deleted by the import (--overwrite-destination) "
                    "and the import's unusable partial store removed, so the database is now empty")
        return ImportFailure(rc, log, tail, fate)
    done = re.search(r"IMPORT DONE.*?(?=Peak memory|\Z)", text, re.S)
    if done:
        progress.message(" ".join(done.group(0).split()))
    return None
