"""The one way an extraction folder is written, for every granularity.

:func:`prepare` claims the folder (pipeline.storage's ownership marker ``.cnngraph.json``: only a
folder that is provably ours is reused), removes a stale manifest first, marks the folder
``.partial`` and checks the disk against the plan; every Parquet file is written under a temporary
name and renamed when complete (:func:`write_table_file`, which returns its sha256); the manifest
is written last, atomically (:func:`finish`): its presence is the only claim that a folder is
complete. Folders are local paths or fsspec URLs (:func:`pipeline.storage.location`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import schema, storage
from pipeline.errors import disk_full_as
from pipeline.extract.tables import parquet_options
from pipeline.plan import Plan
from pipeline.spec import LayerSpec

#: Kind of folder an extraction is (pipeline.storage ownership marker).
FOLDER_KIND = "extraction"
#: The marker of a folder being written, and its content.
PARTIAL = ".partial"
PARTIAL_TEXT = "extraction in progress; this folder is incomplete\n"

Location = Path | storage.RemotePath


#: Largest manifest read as a proof of ownership (a full VGG16 manifest is well under 1 MB).
MANIFEST_LIMIT = 64 << 20


def is_legacy_extraction(folder: Path) -> bool:
    """A folder written by a cnngraph older than the ownership marker: our manifest or .partial."""
    return (storage.small_text(folder / PARTIAL, 4096) == PARTIAL_TEXT
            or storage.small_json(folder / schema.MANIFEST, MANIFEST_LIMIT).get("format") == schema.FORMAT)


def layer_dir(spec: LayerSpec) -> str:
    """The folder name of a layer's files: ``L<index>-<name>`` with unsafe characters replaced."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in spec.name)
    return f"L{spec.index:03d}-{safe}"


def node_file(spec: LayerSpec, seq: int) -> str:
    """Relative path of a layer's seq-th node file."""
    return f"{schema.NODES_DIR}/{layer_dir(spec)}/part-{seq:05d}.parquet"


def edge_file(spec: LayerSpec, seq: int) -> str:
    """Relative path of a layer's seq-th edge file (one per task)."""
    return f"{schema.EDGES_DIR}/{layer_dir(spec)}/part-{seq:05d}.parquet"


def prepare(out: str | os.PathLike | Location, the_plan: Plan) -> Location:
    """Make out an empty extraction folder, refusing foreign folders and too little disk; return it.

    Only a folder that is provably ours (pipeline.storage ownership marker, or an older version's
    manifest) is reused, and then only what an extraction writes is removed from it.
    """
    root = storage.location(out)
    storage.claim_folder(root, FOLDER_KIND, "choose another --out", legacy=is_legacy_extraction)
    (root / schema.MANIFEST).unlink(missing_ok=True)  # first: a stale manifest must not claim completeness
    (root / PARTIAL).write_text(PARTIAL_TEXT)
    for sub in (schema.NODES_DIR, schema.EDGES_DIR):
        storage.rmtree(root / sub)
    storage.require_free(root, the_plan.bytes["parquet"],
                         f"the output ({the_plan.nodes:,} nodes, {the_plan.edges:,} edges) needs",
                         "choose a smaller --input-shape or --layers, or another --out")
    return root


@contextmanager
def writing(root: Location | None) -> Iterator[None]:
    """Turn a full disk while the folder is written into an OutputError that says what to do."""
    with disk_full_as(root, "the extraction", "the folder is marked incomplete (no manifest); "
                      "free some space or choose another --out, then run again (it starts afresh)"):
        yield


def write_part(path: Location, tables: Iterator[pa.Table], schema_: pa.Schema, row_group: int) -> str:
    """Write tables to path via a temporary name, renamed only when complete; return the file's sha256.

    Tables are gathered into row groups of at least ``row_group`` rows (the last may be smaller).
    """
    tmp = storage.temp_sibling(path)
    writer = storage.parquet_writer(tmp, schema_, **parquet_options(schema_))
    try:
        pending: list[pa.Table] = []
        rows = 0
        for table in tables:
            pending.append(table)
            rows += table.num_rows
            if rows >= row_group:
                writer.write_table(pa.concat_tables(pending), row_group_size=rows)
                pending, rows = [], 0
        if pending:
            writer.write_table(pa.concat_tables(pending), row_group_size=max(rows, 1))
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    storage.replace(tmp, path)
    return storage.sha256(path)


def write_table_file(root: Location, rel: str, tables: Iterator[pa.Table], schema_: pa.Schema, row_group: int) -> str:
    """Write the file ``rel`` under root (creating its folder) with :func:`write_part`; its sha256."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_part(path, tables, schema_, row_group)


def finish(root: Location, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically, then drop the ``.partial`` marker: the folder is complete."""
    write_json_atomic(root / schema.MANIFEST, manifest)
    (root / PARTIAL).unlink(missing_ok=True)


def write_json_atomic(path: Location, data: dict[str, Any]) -> None:
    """Write JSON to path via a fresh temporary name (fsynced locally), then rename it into place."""
    tmp = storage.temp_sibling(path)
    text = json.dumps(data, indent=1, default=_json_default)
    if isinstance(path, storage.RemotePath):
        tmp.write_text(text)
        storage.replace(tmp, path)
        return
    with storage.open_new(tmp) as fh:
        fh.write(text.encode())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    return str(obj)
