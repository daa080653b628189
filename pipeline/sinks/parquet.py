"""The Parquet export sink: a folder in the extraction schema (``FOLDER/edges/part-00000.parquet``,
``FOLDER/nodes/part-00000.parquet``, ``FOLDER/selection.json``).

The folder is built in a fresh temporary folder beside FOLDER and renamed when complete; an
existing FOLDER is replaced only when it is provably an earlier export of ours (the
:mod:`pipeline.storage` ownership marker, or an older version's ``selection.json``), never
anything else. Like :class:`~pipeline.sinks.graphml.GraphMLWriter`, the writer takes the edges as
they stream in and the nodes at :meth:`ParquetExportWriter.close` (their set is known only after
the edges).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schema, storage
from pipeline.errors import OutputError
from pipeline.extract.tables import parquet_options

#: Kind of folder a Parquet export is (pipeline.storage ownership marker).
EXPORT_KIND = "export"
EXPORT_FORMAT = "cnngraph-export/1"
#: The file that says what was selected (and, for older versions, that the folder is ours).
SELECTION_FILE = "selection.json"
PART = "part-00000.parquet"


def is_legacy_export(folder: Path) -> bool:
    """An export folder of a cnngraph older than the ownership marker: our selection.json."""
    return storage.small_json(folder / SELECTION_FILE).get("format") == EXPORT_FORMAT


def check_folder(out: Path) -> None:
    """Refuse an output that is not a folder, or a non-empty folder that is not an export of ours."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputError(f"{out} exists and is not a folder; nothing was changed; choose another --out")
    if out.exists() and any(out.iterdir()) and not storage.owns(out, EXPORT_KIND, is_legacy_export):
        raise OutputError(f"{out} is not empty and is not a cnngraph export folder (it has no "
                          f"{storage.OWNER_FILE} of ours); nothing in it was changed; choose another --out")


def replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished export in; an earlier export of ours is moved aside first, then removed."""
    if not out.exists():
        os.rename(tmp, out)
        return
    check_folder(out)  # again: it may have changed while the export ran
    old = storage.temp_sibling(out)
    os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old)


class ParquetExportWriter:
    """Writes one export folder: :meth:`edges` per batch, then :meth:`close` with the node tables
    and the selection record. Leaving the ``with`` block early removes the temporary folder."""

    def __init__(self, out: str | Path, granularity: str = schema.NEURON):
        self.out = Path(out)
        self.edge_schema = schema.edge_schema(granularity)
        self.node_schema = schema.node_schema(granularity)
        self._edges: pq.ParquetWriter | None = None
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp: Path | None = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".tmp",
                                                      dir=self.out.parent))
        try:
            (self.tmp / schema.EDGES_DIR).mkdir()
            (self.tmp / schema.NODES_DIR).mkdir()
            self._edges = pq.ParquetWriter(
                self.tmp / schema.EDGES_DIR / PART, self.edge_schema, **parquet_options(self.edge_schema))
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> ParquetExportWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def edges(self, table: pa.Table) -> None:
        """Append edges (extraction schema columns, the granularity's extra columns included)."""
        self._edges.write_table(table.cast(self.edge_schema))

    def close(self, node_tables: Iterable[pa.Table], info: dict[str, Any]) -> Path:
        """Write the nodes and ``selection.json`` (``info``), then move the folder to its place."""
        self._close_edges()
        nodes = pq.ParquetWriter(self.tmp / schema.NODES_DIR / PART, self.node_schema,
                                 **parquet_options(self.node_schema))
        try:
            for t in node_tables:
                nodes.write_table(t.cast(self.node_schema))
        finally:
            nodes.close()
        (self.tmp / SELECTION_FILE).write_text(json.dumps({"format": EXPORT_FORMAT, **info}, indent=1, default=str))
        self.tmp.chmod(0o777 & ~storage.umask())  # mkdtemp makes 0700; the result is an ordinary folder
        storage.write_owner(self.tmp, EXPORT_KIND)
        replace_folder(self.tmp, self.out)
        self.tmp = None
        return self.out

    def _close_edges(self) -> None:
        if self._edges is not None:
            writer, self._edges = self._edges, None
            writer.close()

    def abort(self) -> None:
        """Drop the unfinished export: close the files and remove our own temporary folder."""
        try:
            self._close_edges()
        except (OSError, pa.ArrowException):  # the error that led here is the one to report
            pass
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
