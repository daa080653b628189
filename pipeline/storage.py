"""Where extraction output goes: a local folder (:class:`pathlib.Path`) or any fsspec URL.

Local paths and ``file://`` URLs become plain :class:`~pathlib.Path` objects, so the local case is
the standard library's. Other URLs (``s3://bucket/run``, ``gcs://...``, ``memory://...``) become a
:class:`RemotePath`: the few path operations the extract stage uses, over an fsspec filesystem.
fsspec (and the filesystem's own package, e.g. s3fs) is needed only for those:
``pip install 'cnngraph[dask]'`` and the filesystem's package.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import OutputError, UsageError

DASK_EXTRA = "pip install 'cnngraph[dask]'"


def location(out: str | os.PathLike) -> Path | RemotePath:
    """A Path for local folders and file:// URLs; a RemotePath for other fsspec URLs."""
    if isinstance(out, (Path, RemotePath)):
        return out
    text = os.fspath(out)
    if "://" not in text:
        return Path(text)
    if text.startswith("file://"):
        return Path(text[len("file://") :])
    return RemotePath(text)


def _fsspec():
    try:
        import fsspec
    except ImportError as err:
        raise UsageError(f"writing to a URL needs fsspec: {DASK_EXTRA}") from err
    return fsspec


class RemotePath:
    """A path on an fsspec filesystem, with the subset of pathlib's API the extract stage uses.

    Picklable (it keeps only the URL), so tasks can carry it to Dask workers.
    """

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self._fs = None
        self._path = None

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"])

    def _resolve(self) -> tuple[Any, str]:
        if self._fs is None:
            try:
                self._fs, self._path = _fsspec().core.url_to_fs(self.url)
            except ImportError as err:  # the filesystem's own package is missing (s3fs, gcsfs, ...)
                raise UsageError(f"cannot write to {self.url}: {err}") from err
        return self._fs, self._path

    @property
    def fs(self):
        return self._resolve()[0]

    @property
    def path(self) -> str:
        return self._resolve()[1]

    def __truediv__(self, rel: str) -> RemotePath:
        return RemotePath(f"{self.url}/{rel}")

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemotePath({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    @property
    def name(self) -> str:
        return posixpath.basename(self.url)

    @property
    def parent(self) -> RemotePath:
        return RemotePath(posixpath.dirname(self.url))

    def with_name(self, name: str) -> RemotePath:
        return self.parent / name

    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def is_dir(self) -> bool:
        return self.fs.isdir(self.path)

    def iterdir(self):
        if not self.exists():
            return iter(())
        return iter(self / posixpath.basename(p.rstrip("/")) for p in self.fs.ls(self.path, detail=False))

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        self.fs.makedirs(self.path, exist_ok=True)

    def unlink(self, missing_ok: bool = False) -> None:
        if self.exists():
            self.fs.rm(self.path)
        elif not missing_ok:
            raise FileNotFoundError(self.url)

    def write_text(self, text: str) -> None:
        with self.fs.open(self.path, "w") as fh:
            fh.write(text)

    def read_text(self) -> str:
        with self.fs.open(self.path, "r") as fh:
            return fh.read()

    def open(self, mode: str = "rb"):
        return self.fs.open(self.path, mode)


def replace(src: Path | RemotePath, dst: Path | RemotePath) -> None:
    """Rename src to dst (atomic on local disks; a copy and delete on object stores)."""
    if isinstance(src, RemotePath):
        src.fs.mv(src.path, dst.path)
    else:
        os.replace(src, dst)


def rmtree(loc: Path | RemotePath) -> None:
    if isinstance(loc, RemotePath):
        if loc.exists():
            loc.fs.rm(loc.path, recursive=True)
    else:
        shutil.rmtree(loc, ignore_errors=True)


def free_bytes(loc: Path | RemotePath) -> int | None:
    """Free space at a local folder; None for remote storage (unknown)."""
    return None if isinstance(loc, RemotePath) else shutil.disk_usage(loc).free


#: Free space required before a large write, as a multiple of its planned size (the Parquet plan
#: measured within 10% per model and ~35% per layer).
DISK_MARGIN = 1.25


#: The file that proves a folder was written by cnngraph: JSON naming the tool, the kind of folder
#: and a random run id. A file of this name with other content proves nothing.
OWNER_FILE = ".cnngraph.json"
TOOL = "cnngraph"


def write_owner(folder: Path | RemotePath, kind: str) -> str:
    """Mark ``folder`` as cnngraph's own ``kind`` of folder (a fresh run id each call); return the id."""
    run = uuid.uuid4().hex
    body = json.dumps({"tool": TOOL, "kind": kind, "run": run}) + "\n"
    if isinstance(folder, RemotePath):
        (folder / OWNER_FILE).write_text(body)
        return run
    tmp = temp_sibling(folder / OWNER_FILE)
    with open_new(tmp) as fh:
        fh.write(body.encode())
    os.replace(tmp, folder / OWNER_FILE)
    return run


def small_text(path: Path | RemotePath, limit: int = 1 << 16) -> str | None:
    """A regular file's text when it is at most ``limit`` bytes, else None (missing, a folder, a
    symlink, too big, not text). Proofs of ownership read files a user may have put there: they
    never follow a link or read a large file."""
    try:
        if isinstance(path, Path):
            if path.is_symlink() or not path.is_file() or path.stat().st_size > limit:
                return None
        elif not path.exists():
            return None
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def small_json(path: Path | RemotePath, limit: int = 1 << 16) -> dict[str, Any]:
    """The JSON object in a file read with :func:`small_text`; ``{}`` when there is none."""
    try:
        data = json.loads(small_text(path, limit) or "null")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def owner(folder: Path | RemotePath) -> dict[str, Any] | None:
    """The ownership record of ``folder`` when it holds our marker (never through a symlink), else None."""
    data = small_json(folder / OWNER_FILE, 4096)
    return data if data.get("tool") == TOOL and isinstance(data.get("kind"), str) else None


def owns(folder: Path | RemotePath, kind: str, legacy: Callable[[Path | RemotePath], bool] | None = None) -> bool:
    """True when ``folder`` is provably cnngraph's ``kind`` of folder: our marker, or (for folders
    written before the marker existed) ``legacy(folder)``, a check of a file's own content."""
    record = owner(folder)
    if record is not None:
        return record["kind"] == kind
    if (folder / OWNER_FILE).exists():
        return False  # a file of our marker's name that is not ours
    return bool(legacy and legacy(folder))


def claim_folder(out: Path | RemotePath, kind: str, what: str,
                 legacy: Callable[[Path | RemotePath], bool] | None = None) -> bool:
    """Make ``out`` ours to (re)write: create it or take an empty folder, or reuse one we wrote.

    ``kind`` names the kind of folder (``extraction``, ``import-files``, ...); ``what`` says what to
    choose instead in the refusal ("choose another --out"). A non-empty folder without our marker
    (or a ``legacy`` proof) is refused with OutputError, and nothing in it is touched. Returns
    whether it holds files from an earlier run of ours; on return ``out`` carries our marker.
    """
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder; {what}")
    if isinstance(out, Path) and out.is_symlink():
        raise OutputError(f"{out} is a symbolic link; cnngraph writes only into real folders; {what}")
    earlier = out.exists() and any(out.iterdir())
    if earlier and not owns(out, kind, legacy):
        raise OutputError(f"{out} is not empty and is not a cnngraph {kind} folder (it has no "
                          f"{OWNER_FILE} of ours); nothing in it was changed; {what}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_owner(out, kind)
    except OSError as err:
        raise OutputError(f"cannot write to {out}: {err.strerror or err}; {what}") from err
    return earlier


def clear_folder(out: Path) -> None:
    """Empty a local folder that :func:`claim_folder` proved ours (keeping our marker)."""
    for child in out.iterdir():
        if child.name == OWNER_FILE:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def temp_sibling(path: Path | RemotePath) -> Path | RemotePath:
    """A fresh, unpredictable name beside ``path`` for writing it before it is complete."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def umask() -> int:
    """The process's file mode creation mask (new files get 0o666 & ~umask())."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def open_new(path: Path, mode: int = 0o666):
    """Open a new local file for binary writing: fails if anything (a file, a symlink) is there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    return os.fdopen(fd, "wb")


def require_free(where: Path | RemotePath, need: int, needs: str, advice: str) -> None:
    """OutputError unless ``where`` has DISK_MARGIN x ``need`` bytes free (unknown remotely).

    The message reads "<needs> about <size> (...) but only <free> is free at <where>; <advice>".
    """
    from pipeline.plan import human_bytes

    free = free_bytes(where)
    if free is not None and need * DISK_MARGIN > free:
        raise OutputError(f"{needs} about {human_bytes(need)} ({DISK_MARGIN:g}x that to be safe) but only "
                          f"{human_bytes(free)} is free at {where}; {advice}")


def parquet_writer(where: Path | RemotePath, schema, **options):
    """A pyarrow ParquetWriter on a local path or, through fsspec, on any filesystem."""
    import pyarrow.parquet as pq

    if isinstance(where, RemotePath):
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        return pq.ParquetWriter(where.path, schema, filesystem=PyFileSystem(FSSpecHandler(where.fs)), **options)
    open_new(where).close()  # claims the (fresh, temporary) name: never writes through a symlink
    return pq.ParquetWriter(where, schema, **options)


def sha256(loc: Path | RemotePath, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (~2 GB/s with the CPU's SHA extensions)."""
    h = hashlib.sha256()
    with loc.open("rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()
