"""Bulk load: extraction Parquet -> neo4j-admin import files -> ``database import full``.

The import replaces the managed server's whole ``neo4j`` database, so it refuses to run over a
database holding anything unless ``replace=True``. Import files are written one input file at a
time (one row group in memory). Neurons get their labels from ``--nodes=Neuron:<Type>=...`` per
layer, so no label column is written; ``:Model``/``:Layer``/``FEEDS`` (a few nodes) are written
over Bolt after the import, with the same code as the online loader.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline import errors, schema
from pipeline.neo4j import graph, loader
from pipeline.progress import NULL, Progress

INPUT_TYPES = ("parquet", "csv", "csv.gz")


def _nullable_positions(table: pa.Table) -> list[tuple[str, pa.Array]]:
    out = []
    for pos in schema.POSITION:
        col = table.column(pos)
        absent = pc.equal(col, -1)
        if pc.all(absent).as_py():
            continue
        out.append((pos, pc.if_else(absent, pa.scalar(None, pa.int32()), col)))
    return out


def node_import_table(table: pa.Table, model: str, typed: bool) -> pa.Table:
    """A node table in the importer's header convention (``typed``: CSV type suffixes)."""
    t = (lambda name, ty: f"{name}:{ty}") if typed else (lambda name, ty: name)
    cols = {
        "id:ID": table.column(schema.ID),
        "model": pa.array([model] * table.num_rows, pa.string()).dictionary_encode(),
        "layer": table.column(schema.LAYER),
    }
    for pos, arr in _nullable_positions(table):
        cols[t(pos, "int")] = arr
    cols[t("bias", "float")] = table.column(schema.BIAS)
    cols["activation"] = table.column(schema.ACTIVATION)
    return pa.table(cols)


def edge_import_table(table: pa.Table, typed: bool) -> pa.Table:
    return pa.table({
        ":START_ID": table.column(schema.SOURCE),
        ":END_ID": table.column(schema.TARGET),
        ("weight:float" if typed else "weight"): table.column(schema.WEIGHT),
        "kind": table.column(schema.KIND),
    })


class _Writer:
    """Writes one output file from a stream of tables in the chosen format."""

    def __init__(self, path: Path, input_type: str):
        self.path, self.input_type, self.writer, self.sink = path, input_type, None, None

    def write(self, table: pa.Table) -> None:
        if self.input_type == "parquet":
            if self.writer is None:
                # Uncompressed: neo4j-admin 5.26.19's Snappy reader fails (FAILED_TO_UNCOMPRESS)
                # on some pyarrow-written pages of real-sized files; these files are temporary.
                self.writer = pq.ParquetWriter(self.path, table.schema, compression="none")
            self.writer.write_table(table)
            return
        table = pa.table({n: (c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c)
                          for n, c in zip(table.column_names, table.columns, strict=True)})
        if self.writer is None:
            self.sink = (pa.CompressedOutputStream(str(self.path), "gzip")
                         if self.input_type == "csv.gz" else pa.OSFile(str(self.path), "wb"))
            self.writer = pacsv.CSVWriter(
                self.sink, table.schema,
                write_options=pacsv.WriteOptions(quoting_style="none"),
            )
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.sink is not None:
            self.sink.close()


def write_import_files(dir: Path, manifest: dict, model: str, out: Path,
                       input_type: str = loader.INPUT_TYPE,
                       progress: Progress = NULL) -> list[str]:
    """Write the importer's input under ``out``; return the ``--nodes``/``--relationships`` args."""
    if input_type not in INPUT_TYPES:
        raise errors.UsageError(f"unknown import input type {input_type!r}; use {INPUT_TYPES}")
    suffix = {"parquet": ".parquet", "csv": ".csv", "csv.gz": ".csv.gz"}[input_type]
    typed = input_type != "parquet"
    args: list[str] = []
    total = int(manifest["nodes"]) + int(manifest["edges"])
    progress.start(total, "row", "write import files")
    for la in manifest["layers"]:
        groups = (("node_files", "nodes"), ("edge_files", "edges"))
        for key, kind in groups:
            files = la.get(key, [])
            if not files:
                continue
            folder = out / f"{kind}-{la['index']:04d}"
            folder.mkdir(parents=True)
            label = None
            for k, rel in enumerate(files):
                pf = pq.ParquetFile(dir / rel)
                writer = _Writer(folder / f"part-{k:05d}{suffix}", input_type)
                try:
                    for g in range(pf.num_row_groups):
                        table = pf.read_row_group(g)
                        if kind == "nodes":
                            label = loader._layer_type(table)
                            table = node_import_table(table, model, typed)
                        else:
                            table = edge_import_table(table, typed)
                        writer.write(table)
                        progress.advance(table.num_rows)
                finally:
                    writer.close()
            pattern = str(folder / f"part-.*{re.escape(suffix)}")
            if kind == "nodes":
                graph.neuron_labels(label)
                args.append(f"--nodes=Neuron:{label}={pattern}")
            else:
                args.append(f"--relationships=CONNECTS={pattern}")
    progress.finish()
    return args


def import_options(input_type: str) -> list[str]:
    opts = ["--id-type=integer", "--normalize-types=false", "--overwrite-destination=true"]
    if input_type == "parquet":
        opts.append("--input-type=parquet")
    return opts


def load_bulk(dir: Path, manifest: dict, name: str, replace: bool = False,
              progress: Progress = NULL, *, conn=None, input_type: str = loader.INPUT_TYPE,
              work_dir=None) -> loader.LoadResult:
    """The bulk loader (see :func:`pipeline.neo4j.loader.load`)."""
    from pipeline.neo4j import server

    loader.managed_only()
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    managed = server.ManagedServer()
    if conn is None:
        conn = server.connection(progress=progress)
    driver = server.driver(conn)
    try:
        with graph.translate(conn.uri, "the check before a bulk import"):
            nodes, models = graph.database_summary(driver)
    finally:
        driver.close()
    if nodes and not replace:
        listed = f" (models: {', '.join(models)})" if models else ""
        raise errors.UsageError(
            f"bulk import replaces the whole database, which holds {nodes} nodes{listed}; "
            "pass --replace to discard them, or use --mode online to add this model beside them"
        )
    timings["check"] = time.perf_counter() - t0

    out = loader.temp_dir(work_dir)
    try:
        t1 = time.perf_counter()
        args = write_import_files(dir, manifest, name, out, input_type, progress)
        timings["write_files"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        progress.message("stopping the managed Neo4j server for the bulk import")
        managed.admin_import(import_options(input_type) + args, progress, restart=True)
        timings["import"] = time.perf_counter() - t2
    finally:
        loader.remove(out)
    t3 = time.perf_counter()
    conn = server.connection(progress=progress)
    driver = server.driver(conn)
    try:
        with graph.translate(conn.uri, f"bulk load of {name!r}"):
            graph.apply_schema(driver)
            graph.write_model(driver, manifest, name, "bulk", "loading")
        timings["schema"] = time.perf_counter() - t3
        t4 = time.perf_counter()
        loader.finish(driver, manifest, name, "bulk", conn.uri)
        timings["verify"] = time.perf_counter() - t4
    finally:
        driver.close()
    return loader.LoadResult(name, "bulk", int(manifest["nodes"]), int(manifest["edges"]),
                             len(manifest["layers"]), time.perf_counter() - t0, timings)
