"""Bulk load: extraction Parquet -> neo4j-admin import files -> ``database import full``.

The import replaces the managed server's whole ``neo4j`` database, so it refuses to run over a
database holding anything unless ``replace=True``. Neurons get their labels from
``--nodes=Neuron:<Type>=...`` per layer, so no label column is written; ``:Model``/``:Layer``/
``FEEDS`` (a few nodes) are written over Bolt after the import, with the same code as the online
loader (:mod:`pipeline.neo4j.db`, :mod:`pipeline.neo4j.common`).

Speed (measured on 2 cores, 17.4 M relationships; docs/graph-model.md):

* ``--id-type=actual``: the neuron id minus the smallest neuron id *is* the node's store id, so
  the importer skips its id mapper (sorting and looking up 2 ids per relationship). The neuron id
  itself is kept as the ``id`` property.
* CSV input (the importer parses CSV faster than it decodes Parquet), one part file per
  extraction row group, written by a thread pool (pyarrow's CSV writer releases the GIL); each
  group's header is a separate one-line file.

Text fields (layer names are any text Keras allows: commas, quotes, line breaks; parametrised
activations have commas) are written unquoted when no value of the part file needs quotes (the
usual case: the check looks at each column's dictionary, a few values), else the whole part is
quoted as the importer reads it (RFC 4180: ``"..."``, ``""`` inside); a group with line breaks
inside fields is listed in ``--multiline-fields`` (format v2: only those files pay for it).
"""

from __future__ import annotations

import re
import shlex
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline import dataset, errors, schema, storage
from pipeline.neo4j import admin, db, server
from pipeline.neo4j.common import (
    INPUT_TYPE,
    LoadResult,
    finish,
    layer_files,
    layer_type,
    managed_only,
    manifest_and_name,
    open_driver,
    remove,
    temp_dir,
)
from pipeline.plan import human_bytes, import_file_bytes
from pipeline.progress import NULL, Progress

INPUT_TYPES = ("csv", "csv.gz", "parquet")
#: Threads writing import files (2 measured best on the 2-core development machine).
WRITERS = 2
#: gzip level of csv.gz import files, and rows formatted per slice (~30 MB of CSV).
GZIP_LEVEL = 3
CSV_SLICE_ROWS = 1 << 20
_SUFFIX = {"parquet": ".parquet", "csv": ".csv", "csv.gz": ".csv.gz"}
#: Parquet columns that may be dictionary-encoded. The importer's parquet-java reader fails on
#: pyarrow's dictionary-encoded int64 pages that fall back to plain encoding mid-chunk
#: ("could not read page ... :START_ID", 5.26.19), so numeric columns are written plain.
_DICT_COLUMNS = ["model", "layer", "activation", "kind"]


def _nullable_positions(table: pa.Table) -> list[tuple[str, pa.Array]]:
    out = []
    for pos in schema.POSITION:
        col = table.column(pos)
        absent = pc.equal(col, -1)
        if pc.all(absent).as_py():
            continue
        out.append((pos, pc.if_else(absent, pa.scalar(None, pa.int32()), col)))
    return out


def node_import_table(table: pa.Table, model: str, typed: bool, base: int = 0) -> pa.Table:
    """A node table in the importer's header convention (``typed``: CSV type suffixes).

    ``:ID`` is the store id (``id - base``, for ``--id-type=actual``); ``id`` the neuron id.
    """
    t = (lambda name, ty: f"{name}:{ty}") if typed else (lambda name, ty: name)
    ids = table.column(schema.ID)
    cols = {
        ":ID": pc.subtract(ids, pa.scalar(base, pa.int64())),
        t("id", "long"): ids,
        "model": pa.array([model] * table.num_rows, pa.string()).dictionary_encode(),
        "layer": table.column(schema.LAYER),
    }
    for pos, arr in _nullable_positions(table):
        cols[t(pos, "int")] = arr
    cols[t("bias", "float")] = table.column(schema.BIAS)
    cols["activation"] = table.column(schema.ACTIVATION)
    _add_extra_columns(table, schema.EXTRA_NODE_COLUMNS, cols, typed)
    return pa.table(cols)


def edge_import_table(table: pa.Table, typed: bool, base: int = 0) -> pa.Table:
    """A relationship table for the importer (``base`` as in :func:`node_import_table`)."""
    shift = pa.scalar(base, pa.int64())
    cols = {
        ":START_ID": pc.subtract(table.column(schema.SOURCE), shift),
        ":END_ID": pc.subtract(table.column(schema.TARGET), shift),
        ("weight:float" if typed else "weight"): table.column(schema.WEIGHT),
        "kind": table.column(schema.KIND),
    }
    _add_extra_columns(table, schema.EXTRA_EDGE_COLUMNS, cols, typed)
    return pa.table(cols)


#: The importer's CSV type of each coarse-granularity column (arrays are ';'-separated).
_EXTRA_TYPES = {schema.KERNEL: "float[]", schema.SHAPE: "int[]", schema.OUTPUT_SHAPE: "int[]",
                schema.PARAMS: "long", schema.CONFIG: "string"}


def _add_extra_columns(table: pa.Table, names: tuple[str, ...], cols: dict, typed: bool) -> None:
    """Add the coarse-granularity columns ``table`` has; for CSV, lists become ';'-joined text."""
    for name in names:
        if name not in table.column_names:
            continue
        col = table.column(name)
        if typed and pa.types.is_list(col.type):
            col = pc.binary_join(col.cast(pa.list_(pa.string())), ";")
        cols[f"{name}:{_EXTRA_TYPES[name]}" if typed else name] = col


def _plain(table: pa.Table) -> pa.Table:
    """Dictionary columns decoded (the CSV writer wants plain strings)."""
    return pa.table({n: (c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c)
                     for n, c in zip(table.column_names, table.columns, strict=True)})


#: A CSV field needs quotes when it holds the importer's delimiter, its quote or a line break
#: (``--delimiter=,`` and ``--quote='"'``, the defaults); a line break also needs
#: ``--multiline-fields``.
_NEEDS_QUOTES = r'[,"\r\n]'
_LINE_BREAK = r"[\r\n]"


def _text_columns(table: pa.Table) -> list[pa.ChunkedArray]:
    """The distinct-ish text of each text column: a dictionary column's dictionaries (a few
    values), a plain text column itself; ``;``-joined number lists (``...[]``) hold no
    special characters and are skipped."""
    out = []
    for name, col in zip(table.column_names, table.columns, strict=True):
        if name.endswith("[]"):
            continue
        if pa.types.is_dictionary(col.type) and pa.types.is_string(col.type.value_type):
            out.append(pa.chunked_array([c.dictionary for c in col.chunks], col.type.value_type))
        elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            out.append(col)
    return out


def csv_quoting(table: pa.Table) -> tuple[bool, bool]:
    """(some text field of ``table`` needs quotes, some holds a line break); vectorised."""
    def any_match(pattern: str) -> bool:
        return any(pc.any(pc.match_substring_regex(c, pattern)).as_py() for c in cols if len(c))

    cols = _text_columns(table)
    quote = any_match(_NEEDS_QUOTES)
    return quote, quote and any_match(_LINE_BREAK)


def _write_part(table: pa.Table, path: Path, input_type: str) -> bool:
    """Write one import part file; True when a field holds a line break (``--multiline-fields``)."""
    if input_type == "parquet":
        pq.write_table(table, path, compression="none", row_group_size=1 << 20,
                       use_dictionary=[c for c in _DICT_COLUMNS if c in table.column_names])
        return False
    # pyarrow's "needed" quotes every text field ("" inside), "none" fails on special characters.
    quote, multiline = csv_quoting(table)
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed" if quote else "none",
                                 batch_size=1 << 16)
    table = _plain(table)
    if input_type == "csv":
        with pa.OSFile(str(path), "wb") as sink:
            pacsv.write_csv(table, sink, write_options=options)
        return multiline
    # pyarrow's gzip stream has no level and runs ~0.1-1 M rows/s; zlib level 3 (which releases
    # the GIL) compresses ~4.6 M rows/s to ~4.2 B/row, level 6 ~1.4 M rows/s to ~3.7.
    deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 31: a gzip member
    with open(path, "wb") as fh:
        for start in range(0, max(table.num_rows, 1), CSV_SLICE_ROWS):
            sink = pa.BufferOutputStream()
            pacsv.write_csv(table.slice(start, CSV_SLICE_ROWS), sink, write_options=options)
            fh.write(deflate.compress(sink.getvalue()))
        fh.write(deflate.flush())
    return multiline


def _write_header(table: pa.Table, path: Path) -> None:
    path.write_text(",".join(table.column_names) + "\n")


def min_node_id(dir: Path, manifest: dict) -> int:
    """The smallest neuron id of the extraction (the store-id offset of ``--id-type=actual``)."""
    lows = [pc.min(pq.read_table(path, columns=[schema.ID]).column(schema.ID)).as_py()
            for _, path in layer_files(dir, manifest, "node_files")]
    lows = [v for v in lows if v is not None]
    return min(lows) if lows else 0


def write_import_files(dir: Path, manifest: dict, model: str, out: Path,
                       input_type: str = INPUT_TYPE, progress: Progress = NULL,
                       workers: int = WRITERS) -> list[str]:
    """Write the importer's input under ``out``; return the ``--nodes``/``--relationships`` args
    (and ``--multiline-fields`` when a text field holds a line break).

    One part file per extraction row group, written by ``workers`` threads; with CSV, each
    group's header is the separate file ``header.csv`` listed first.
    """
    if input_type not in INPUT_TYPES:
        raise errors.UsageError(f"unknown import input type {input_type!r}; use {INPUT_TYPES}")
    usable_folder(out)
    suffix = _SUFFIX[input_type]
    typed = input_type != "parquet"
    base = min_node_id(dir, manifest)
    groups: list[tuple[str, str, Path, list]] = []  # (kind, label, folder, [(path, rg, part)])
    for la in manifest["layers"]:
        for key, kind in (("node_files", "nodes"), ("edge_files", "edges")):
            parts = []
            for rel in la.get(key, []):
                pf = pq.ParquetFile(dir / rel)
                parts += [(dir / rel, g) for g in range(pf.num_row_groups)]
            if parts:
                if kind == "nodes":
                    db.neuron_labels(la["type"])  # validated before it reaches an argument
                groups.append((kind, la["type"], out / f"{kind}-{la['index']:04d}", parts))

    def convert(kind: str, src: Path, g: int) -> pa.Table:
        table = pq.ParquetFile(src).read_row_group(g)
        if kind == "nodes":
            label = layer_type(table)
            if label != expected_type[src]:
                raise errors.OutputError(f"{src} holds {label} neurons, the manifest says "
                                         f"{expected_type[src]}")
            return node_import_table(table, model, typed, base)
        return edge_import_table(table, typed, base)

    def task(kind: str, folder: Path, k: int, src: Path, g: int, header: bool) -> tuple[int, bool]:
        table = convert(kind, src, g)
        if header:
            _write_header(table, folder / "header.csv")
        return table.num_rows, _write_part(table, folder / f"part-{k:05d}{suffix}", input_type)

    expected_type = {src: t for kind, t, _, parts in groups for src, _ in parts}
    args: list[str] = []
    total = int(manifest["nodes"]) + int(manifest["edges"])
    progress.start(total, "row", "write import files")
    multiline: list[str] = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        futures = []
        for kind, layer_t, folder, parts in groups:
            folder.mkdir(parents=True)
            parts_regex = str(folder / f"part-.*{re.escape(suffix)}")
            for k, (src, g) in enumerate(parts):
                futures.append((parts_regex, pool.submit(task, kind, folder, k, src, g, typed and k == 0)))
            files = (f"{folder / 'header.csv'}," if typed else "") + parts_regex
            if kind == "nodes":
                args.append(f"--nodes=Neuron:{layer_t}={files}")
            else:
                args.append(f"--relationships=CONNECTS={files}")
        for parts_regex, future in futures:
            rows, breaks = future.result()
            if breaks and parts_regex not in multiline:
                multiline.append(parts_regex)
            progress.advance(rows)
    progress.finish()
    if multiline:
        args += ["--multiline-fields-format=v2", f"--multiline-fields={','.join(multiline)}"]
    return args


def usable_folder(out: Path) -> Path:
    """``out`` if the importer can take files under it: it separates files with ``,``."""
    if "," in str(out):
        raise errors.UsageError(f"the folder {out} has a ',' in its path, which neo4j-admin reads as "
                                "a file separator; choose another folder (for bulk: TMPDIR or work_dir)")
    return out


def import_options(input_type: str) -> list[str]:
    """The importer options besides the file groups."""
    opts = ["--id-type=actual", "--normalize-types=false", "--overwrite-destination=true"]
    if input_type == "parquet":
        opts.append("--input-type=parquet")
    return opts


def load_bulk(dir: Path, manifest: dict, name: str, replace: bool = False,
              progress: Progress = NULL, *, conn: server.Connection | None = None,
              input_type: str = INPUT_TYPE, work_dir: str | Path | None = None) -> LoadResult:
    """The bulk loader (see :func:`pipeline.neo4j.loader.load`).

    Only what the importer needs runs before it, and overlapped: the import files are written
    while the server stops. Progress messages and the result's timings give each part's time.
    """
    managed_only()
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    managed = server.ManagedServer()
    _refuse_non_empty(managed, conn, replace, progress)
    timings["check"] = time.perf_counter() - t0

    out = temp_dir(work_dir)
    t1 = time.perf_counter()
    wrote: dict[str, float] = {}

    def write() -> list[str]:
        with errors.disk_full_as(out, "writing import files", "they were removed and the database is "
                                 "untouched; point TMPDIR at a disk with more space and run again"):
            args = write_import_files(dir, manifest, name, out, input_type, progress)
        wrote["write_files"] = time.perf_counter() - t1
        progress.message(f"import files written in {wrote['write_files']:.1f} s")
        return args

    try:
        progress.message("writing the import files while the managed Neo4j server stops")
        report = f"--report-file={out / 'import.report'}"  # else it lands in the caller's folder
        parts = managed.admin_import(
            [*import_options(input_type), report], progress, restart=True, prepare=write,
            store_bytes=server.store_bytes(int(manifest["nodes"]), int(manifest["edges"])))
    finally:
        remove(out)
    timings.update(wrote)
    timings["import"] = time.perf_counter() - t1 - wrote["write_files"]
    timings.update({f"import_{k}": v for k, v in parts.items()})
    progress.message("server stop " + _secs(parts, "stop") + " (while writing), neo4j-admin "
                     + _secs(parts, "neo4j_admin") + ", server start " + _secs(parts, "start"))
    timings.update(complete_import(manifest, name, server.connection(progress=progress), progress))
    return _result(manifest, name, t0, timings)


def _secs(timings: dict[str, float], key: str) -> str:
    return f"{timings.get(key, 0.0):.1f} s"


def _refuse_non_empty(managed: server.ManagedServer, conn: server.Connection | None, replace: bool,
                      progress: Progress) -> None:
    """UsageError when the database holds anything and ``replace`` is off.

    With ``replace`` nothing is asked (everything is discarded anyway), and a stopped server whose
    database was never created is empty: neither starts the server only to stop it again.
    """
    if replace or (not managed.is_running() and not admin.store_state(managed, "neo4j")):
        return
    if conn is None:
        conn = server.connection(progress=progress)
    driver = server.driver(conn, notifications_min_severity="OFF")
    try:
        with db.translate(conn.uri, "the check before a bulk import"):
            nodes, models = db.database_summary(driver)
    finally:
        driver.close()
    if nodes:
        listed = f" (models: {', '.join(models)})" if models else ""
        raise errors.UsageError(
            f"bulk import replaces the whole database, which holds {nodes} nodes{listed}; "
            "pass --replace to discard them, or use --mode online to add this model beside them"
        )


def _result(manifest: dict, name: str, t0: float, timings: dict[str, float]) -> LoadResult:
    return LoadResult(name, "bulk", int(manifest["nodes"]), int(manifest["edges"]),
                      len(manifest["layers"]), time.perf_counter() - t0, timings)


def complete_import(manifest: dict, name: str, conn: server.Connection | None = None,
                    progress: Progress = NULL) -> dict[str, float]:
    """After ``neo4j-admin import``: schema, ``:Model``/``:Layer`` nodes, then the count check.

    Raises UsageError when the database holds none of the model's neurons (the import has not
    run), LoadMismatch when its counts differ from the manifest. Returns timings.
    """
    conn, driver = open_driver(conn, progress)
    timings: dict[str, float] = {}
    try:
        with db.translate(conn.uri, f"bulk load of {name!r}"):
            found, _, _ = driver.execute_query(
                "RETURN EXISTS { MATCH (:Neuron {model: $name}) } AS found", name=name)
            if not found[0]["found"]:
                raise errors.UsageError(
                    f"the database at {conn.uri} holds no neurons of model {name!r}: run the "
                    f"{SCRIPT} written with the import files on that server first (database stopped), "
                    "start it, then run this again"
                )
            t0 = time.perf_counter()
            db.apply_schema(driver)
            db.write_model(driver, manifest, name, "bulk", "loading")
            timings["schema"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            finish(driver, manifest, name, "bulk", conn.uri)
            timings["verify"] = time.perf_counter() - t1
            progress.message(f"schema and architecture {timings['schema']:.1f} s, count check "
                             f"{timings['verify']:.1f} s")
    finally:
        driver.close()
    return timings


def after_import(dir: str | Path, model_name: str | None = None, progress: Progress = NULL,
                 conn: server.Connection | None = None) -> LoadResult:
    """Finish a bulk load whose import files (:func:`write_server_files`) were imported elsewhere."""
    t0 = time.perf_counter()
    manifest, name = manifest_and_name(dir, model_name)
    return _result(manifest, name, t0, complete_import(manifest, name, conn, progress))


# Import files for a server elsewhere --------------------------------------------------------

#: The script written beside import files for another server; written last, it marks them complete.
SCRIPT = "import.sh"
_PARTIAL = ".cnngraph-import-partial"
_PARTIAL_TEXT = "import files being written; this folder is incomplete\n"
#: Kind of folder the import files are (pipeline.storage ownership marker).
IMPORT_KIND = "import-files"
_SCRIPT_SIGNATURE = "(written by cnngraph)."


def _is_legacy_import(folder: Path) -> bool:
    """Import files of a cnngraph older than the ownership marker: our script or partial marker."""
    if storage.small_text(folder / _PARTIAL, 4096) == _PARTIAL_TEXT:
        return True
    head = (storage.small_text(folder / SCRIPT, 16 << 20) or "")[:4096]
    return head.startswith("#!/bin/sh\n# neo4j-admin bulk import of model ") and _SCRIPT_SIGNATURE in head


@dataclass
class ImportFiles:
    """Import files written for a Neo4j server elsewhere (see :func:`write_server_files`)."""

    folder: Path
    script: Path
    model: str
    nodes: int
    relationships: int
    bytes: int
    seconds: float


def write_server_files(dir: str | Path, out: str | Path, model_name: str | None = None,
                       input_type: str = "csv.gz", progress: Progress = NULL,
                       check: bool = True) -> ImportFiles:
    """Write neo4j-admin import files for extraction ``dir`` under ``out``, and ``out/import.sh``.

    For a server on another (larger) machine: ``import.sh`` runs ``neo4j-admin database import
    full`` there; afterwards ``cnngraph load DIR --after-import`` (:func:`complete_import`) adds
    the schema and architecture and checks the counts. Streams one row group at a time; the
    script is written last, so a folder without it is incomplete (a rerun starts it afresh).
    ``check``: first check the extraction's files against the manifest's sha256 (before ``out``
    is touched).
    """
    t0 = time.perf_counter()
    if input_type not in ("csv", "csv.gz"):
        raise errors.UsageError(f"import files for another server are csv or csv.gz, not {input_type!r}")
    dir, out = Path(dir), Path(out).resolve()
    manifest, name = manifest_and_name(dir, model_name)
    if check:
        dataset.check_files(dir, manifest, progress)
    usable_folder(out)
    if storage.claim_folder(out, IMPORT_KIND, "choose another folder", legacy=_is_legacy_import):
        storage.clear_folder(out)  # an earlier run's files (the folder is provably ours)
    need = import_file_bytes(int(manifest["edges"]), int(manifest["nodes"]), input_type)
    storage.require_free(out, need, f"the {input_type} import files need", "choose another folder")
    progress.message(f"writing about {human_bytes(need)} of {input_type} import files to {out}")
    (out / _PARTIAL).write_text(_PARTIAL_TEXT)
    with errors.disk_full_as(out, "writing import files", f"{out} has no {SCRIPT}, so it is marked "
                             "incomplete; free some space or choose another folder, then run again"):
        args = write_import_files(dir, manifest, name, out, input_type, progress)
    opts = [o for o in import_options(input_type) if not o.startswith("--overwrite-destination")]
    script = out / SCRIPT
    tmp = out / (SCRIPT + ".tmp")
    tmp.write_text(_script(manifest, name, opts, [a.replace(f"{out}/", _HERE) for a in args]))
    tmp.chmod(0o755)
    tmp.replace(script)
    (out / _PARTIAL).unlink()
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return ImportFiles(out, script, name, int(manifest["nodes"]), int(manifest["edges"]), size,
                       time.perf_counter() - t0)


#: Stands for the script's folder in arguments (a path never holds a NUL).
_HERE = "\0"


def _sh_word(arg: str) -> str:
    """``arg`` as one sh word: literal text quoted (shlex.quote), each :data:`_HERE` the
    script's folder ``"$D"/``."""
    return '"$D"/'.join(shlex.quote(part) if part else "" for part in arg.split(_HERE))


def _script(manifest: dict, name: str, options: list[str], files: list[str]) -> str:
    """import.sh: neo4j-admin over the files beside it (``$D`` is the script's folder; arguments
    are quoted for sh, so any character is safe)."""
    lines = [f"  {_sh_word(a)} \\" for a in [*options, *files]]
    return "\n".join([
        "#!/bin/sh",
        f"# neo4j-admin bulk import of model {name!r}: {int(manifest['nodes']):,} neurons, "
        f"{int(manifest['edges']):,} relationships (written by cnngraph).",
        "# On the Neo4j machine, with the database stopped:",
        "#   NEO4J_HOME=/path/to/neo4j sh import.sh [more import options, e.g. --overwrite-destination=true]",
        "# NEO4J_ADMIN=/path/to/neo4j-admin overrides the program; NEO4J_DATABASE the database (neo4j).",
        f"# Then start Neo4j and run: cnngraph load EXTRACTION_DIR --after-import --model-name "
        f"{shlex.quote(name)}",
        "set -e",
        'D=$(cd "$(dirname "$0")" && pwd)',
        'case "$D" in *,*) echo "import.sh: neo4j-admin reads \',\' as a file separator; move this '
        'folder ($D) to a path without one" >&2; exit 1 ;; esac',
        'exec "${NEO4J_ADMIN:-${NEO4J_HOME:?set NEO4J_HOME to the Neo4j installation}/bin/neo4j-admin}" \\',
        "  database import full \\",
        *lines,
        '  "$@" -- "${NEO4J_DATABASE:-neo4j}"',
        "",
    ])
