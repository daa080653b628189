"""The extraction folder as a whole: checking that the files its manifest lists are the ones written.

Every stage that reads a folder (verify, load, export) calls :func:`check_files` first, so a
deleted, truncated or edited Parquet file is named in one clear error instead of surfacing as a
pyarrow traceback or, worse, as a silently smaller graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import storage
from pipeline.errors import OutputError
from pipeline.progress import NULL, Progress

#: How to skip the check on the command line (named in the error message).
NO_CHECK = "--no-check"


def listed_files(manifest: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(relative path, recorded sha256 or None) of every file a manifest lists."""
    out: list[tuple[str, str | None]] = []
    for entry in manifest.get("layers", []):
        for files, shas in (("node_files", "node_file_sha256"), ("edge_files", "edge_file_sha256")):
            names = entry.get(files) or []
            digests = entry.get(shas) or []
            out += [(name, digests[i] if i < len(digests) else None) for i, name in enumerate(names)]
    return out


def check_files(folder: str | Path, manifest: dict[str, Any], progress: Progress = NULL) -> int:
    """Check that every file the manifest lists exists and has its recorded sha256; return the count.

    Raises OutputError naming the first missing or changed file (~2 GB/s: seconds for most
    folders; pass ``--no-check`` on the command line to skip it for huge ones).
    """
    root = Path(folder)
    files = listed_files(manifest)
    progress.start(len(files), "files", "check")
    try:
        for rel, digest in files:
            path = root / rel
            if not path.is_file():
                raise OutputError(f"{path} is missing: the extraction folder {root} is damaged; "
                                  "rerun `cnngraph extract` into it")
            if digest is not None and storage.sha256(path) != digest:
                raise OutputError(f"{path} has changed since it was written (sha256 differs from the "
                                  f"manifest): the extraction folder {root} is damaged; rerun `cnngraph "
                                  f"extract` into it ({NO_CHECK} skips this check)")
            progress.advance(1)
    finally:
        progress.finish()
    return len(files)
