"""The extract stage: chunked, vectorised node and edge streams, written as Parquet datasets.

Work is a list of independent tasks (layer x block of rows). Each task writes one file, so any
executor can run them (here: in-process or a pool of local processes), and the output does not
depend on how many workers ran. The manifest is written last, atomically: its presence is the only
claim that a folder is complete.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from pipeline import schema, storage
from pipeline.errors import OutputError, disk_full_as
from pipeline.layers import registry
from pipeline.layers.base import EdgeChunk, Task, reused_buffers
from pipeline.model import LayerSpec, ModelGraph, ModelSpec
from pipeline.plan import Plan, plan, selection
from pipeline.progress import NULL, Progress

if TYPE_CHECKING:
    from pipeline.executors import Executor

#: Upper bound on edges held in memory per chunk (~21 bytes each as numpy arrays).
CHUNK_EDGES = 4_000_000
#: Target edges per task (one output file); tasks are whole rows, so files vary around this.
TASK_EDGES = 32_000_000
#: Nodes per node-table chunk.
CHUNK_NODES = 1_000_000
#: Edges generated and checksummed at a time: small enough that the arrays stay in the CPU's L2
#: cache (measured 2x faster than 4 M-edge chunks on full VGG16); Parquet row groups gather them.
CACHE_EDGES = 65_536
CHECKSUM_BLOCK = CACHE_EDGES


# ---------------------------------------------------------------------------------------------
# Tasks and streams


def layer_tasks(spec: LayerSpec, task_edges: int = TASK_EDGES) -> list[Task]:
    """Split a layer's edges into tasks of whole rows, about task_edges each."""
    tr = registry.get(spec.type, spec.name)
    total, rows = tr.count_edges(spec), tr.rows(spec)
    if total == 0:
        return []
    per_task = max(1, min(rows, math.ceil(rows * task_edges / total)))
    return [Task(spec.index, lo, min(lo + per_task, rows), seq) for seq, lo in enumerate(range(0, rows, per_task))]


def task_edges(graph: ModelGraph, task: Task, max_edges: int = CHUNK_EDGES) -> Iterator[EdgeChunk]:
    spec = graph.layers[task.layer]
    return registry.get(spec.type, spec.name).edges(spec, task.lo, task.hi, max_edges)


def stream_edges(
    graph: ModelGraph, layers: list[LayerSpec] | None = None, max_edges: int = CHUNK_EDGES
) -> Iterator[tuple[LayerSpec, EdgeChunk]]:
    """Every edge of the given layers (default: all), layer by layer, in bounded chunks."""
    for spec in layers if layers is not None else graph.layers:
        for task in layer_tasks(spec):
            for chunk in task_edges(graph, task, max_edges):
                yield spec, chunk


def node_tables(spec: LayerSpec, max_nodes: int = CHUNK_NODES) -> Iterator[pa.Table]:
    """The node table of the neurons a layer owns, in chunks."""
    if not spec.makes_neurons:
        return
    for start in range(0, spec.output.size, max_nodes):
        yield node_table(spec, np.arange(start, min(start + max_nodes, spec.output.size), dtype=np.int64))


def node_table(spec: LayerSpec, flat: np.ndarray) -> pa.Table:
    """Node rows of the neurons at row-major positions ``flat`` of the layer's output tensor."""
    tr = registry.get(spec.type, spec.name)
    shape = spec.output.shape
    if len(shape) > len(schema.POSITION):
        raise OutputError(f"layer {spec.name} has rank {len(shape)}; at most {len(schema.POSITION)} axes are supported")
    pos = np.unravel_index(flat, shape)
    missing = len(schema.POSITION) - len(shape)
    bias = tr.bias(spec)
    n = len(flat)
    return pa.table(
        {
            schema.ID: flat + spec.output.offset,
            schema.LAYER: constant_column(spec.name, n),
            schema.LAYER_TYPE: constant_column(spec.type, n),
            **{
                p: np.full(n, -1, np.int32) if i < missing else pos[i - missing].astype(np.int32)
                for i, p in enumerate(schema.POSITION)
            },
            schema.BIAS: np.zeros(n, np.float32) if bias is None else np.asarray(bias, np.float32)[pos[-1]],
            schema.ACTIVATION: constant_column(tr.activation(spec), n),
        },
        schema=schema.NODE_SCHEMA,
    )


def constant_column(value: str, n: int) -> pa.DictionaryArray:
    """A dictionary-encoded string column holding one value n times."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([value]))


def edge_table(chunk: EdgeChunk) -> pa.Table:
    return pa.table(
        {
            schema.SOURCE: chunk.source,
            schema.TARGET: chunk.target,
            schema.WEIGHT: chunk.weight,
            schema.KIND: constant_column(chunk.kind, len(chunk)),
        },
        schema=schema.EDGE_SCHEMA,
    )


# ---------------------------------------------------------------------------------------------
# Checksums: order-independent, so any chunking or worker count gives the same value


_M1, _M2, _M3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9)


def _mix(h: np.ndarray) -> np.ndarray:
    h ^= h >> np.uint64(31)
    h *= _M1
    h ^= h >> np.uint64(29)
    return h


def edge_checksum(
    source: np.ndarray, target: np.ndarray, weight: np.ndarray, kind: str, scratch: np.ndarray | None = None
) -> int:
    """Sum over edges of a 64-bit hash of (source, target, weight bits, kind), modulo 2**64.

    In-place arithmetic only (into ``scratch`` when given), so it costs about as much as
    generating the edges.
    """
    n = len(source)
    block = min(n, CHECKSUM_BLOCK)
    h_all = np.empty(block, np.uint64) if scratch is None or len(scratch) < block else scratch[:block]
    key = np.uint64(int.from_bytes(kind.encode()[:8].ljust(8, b"\0"), "little"))
    total = 0
    with np.errstate(over="ignore"):
        for i in range(0, n, block):  # blocks that stay in the CPU cache: ~2x faster than whole chunks
            j = min(i + block, n)
            h = h_all[: j - i]
            np.multiply(source[i:j].view(np.uint64), _M1, out=h)
            h ^= target[i:j].view(np.uint64)
            h *= _M2
            np.bitwise_xor(h, weight[i:j].view(np.uint32), out=h, casting="unsafe")
            h ^= key
            h *= _M3
            np.multiply(h, h, out=h)  # non-linear, so the sum does not factor into per-column sums
            total += int(h.sum(dtype=np.uint64))
    return total % (1 << 64)


def node_checksum(table: pa.Table) -> int:
    ids = table.column(schema.ID).to_numpy()
    bias = table.column(schema.BIAS).to_numpy()
    with np.errstate(over="ignore"):
        h = ids.view(np.uint64) * _M2
        h ^= bias.view(np.uint32).astype(np.uint64) * _M3
        return int(_mix(h).sum(dtype=np.uint64))


def _add(a: int, b: int) -> int:
    return (a + b) % (1 << 64)


# ---------------------------------------------------------------------------------------------
# Sinks


@dataclass
class TaskResult:
    layer: int
    seq: int
    edges: int
    checksum: int
    file: str | None
    sha256: str | None = None  # of the file's bytes


def _write_parquet(path: Path, tables: Iterator[pa.Table], schema_: pa.Schema, row_group: int) -> str:
    """Write tables to path (a Path or storage.RemotePath) via a temporary name, renamed only when
    complete; return the file's sha256."""
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
        storage.remove_file(tmp)
        raise
    writer.close()
    storage.replace(tmp, path)
    return storage.sha256(path)


def parquet_options(schema_: pa.Schema) -> dict[str, Any]:
    """Writer settings measured fastest at small size (benchmarks/extract.py): ids as deltas.

    The emitter's weight-major order makes ids arithmetic progressions (delta-packed to ~0 bits)
    and weights long constant runs (which LZ4 folds); byte-stream-split or zstd cost 2x the time
    for under 0.05 bytes per edge.
    """
    ints = [f.name for f in schema_ if pa.types.is_integer(f.type)]
    floats = [f.name for f in schema_ if pa.types.is_floating(f.type)]
    return {
        "compression": "lz4",
        "use_dictionary": [f.name for f in schema_ if pa.types.is_dictionary(f.type)],
        "column_encoding": {**dict.fromkeys(ints, "DELTA_BINARY_PACKED"), **dict.fromkeys(floats, "PLAIN")},
        "write_statistics": [schema.ID, schema.SOURCE, schema.TARGET],
    }


def layer_dir(spec: LayerSpec) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in spec.name)
    return f"L{spec.index:03d}-{safe}"


def run_task(graph: ModelGraph, task: Task, out: Path | None, max_edges: int = CHUNK_EDGES) -> TaskResult:
    """Generate one task's edges; write them to a Parquet file under out (None: count only).

    ``out`` is a Path or a storage.RemotePath. Edges are generated and checksummed in cache-sized
    chunks (CACHE_EDGES) in reused buffers; written ones are copied and gathered into row groups
    of about max_edges. The file's bytes depend only on the task and max_edges.
    """
    spec = graph.layers[task.layer]
    count, checksum = 0, 0
    gen = min(max_edges, CACHE_EDGES)

    def tables(arena) -> Iterator[pa.Table]:
        nonlocal count, checksum
        for chunk in task_edges(graph, task, gen):
            count += len(chunk)
            checksum = _add(checksum, edge_checksum(chunk.source, chunk.target, chunk.weight, chunk.kind, arena.scratch))
            if out is not None:  # the buffers are reused by the next chunk: keep copies
                yield edge_table(EdgeChunk(chunk.source.copy(), chunk.target.copy(), chunk.weight.copy(), chunk.kind))

    with reused_buffers(gen) as arena:
        if out is None:
            for _ in tables(arena):
                pass
            return TaskResult(task.layer, task.seq, count, checksum, None)
        rel = f"{schema.EDGES_DIR}/{layer_dir(spec)}/part-{task.seq:05d}.parquet"
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = _write_parquet(path, tables(arena), schema.EDGE_SCHEMA, row_group=max_edges)
    return TaskResult(task.layer, task.seq, count, checksum, rel, digest)


# ---------------------------------------------------------------------------------------------
# The stage entry point


@dataclass
class ExtractResult:
    out: Path | None
    plan: Plan
    nodes: int
    edges: int
    seconds: float
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def edges_per_second(self) -> float:
        return self.edges / self.seconds if self.seconds else 0.0


def extract(
    graph: ModelGraph,
    out: str | Path | None,
    layers: str | None = None,
    progress: Progress = NULL,
    workers: int = 1,
    max_edges: int = CHUNK_EDGES,
    task_size: int = TASK_EDGES,
    executor: Executor | None = None,
    granularity: str = "neuron",
    aggregate: str = "l1",
) -> ExtractResult:
    """Extract a walked model into out (nodes/, edges/, manifest.json); out=None counts only.

    ``granularity`` ``channel`` or ``layer`` writes the coarser graphs of pipeline.granularity
    (channel edge weights: ``aggregate`` of their kernel slices).
    ``out`` is a folder or an fsspec URL (pipeline.storage). ``executor`` runs the edge tasks
    (pipeline.executors; default: a LocalExecutor of ``workers`` processes); the output is the same
    whatever runs them.
    Raises OutputError when out is not an extraction folder or the disk cannot hold the plan.
    """
    if granularity != "neuron":
        from pipeline.granularity import extract_coarse

        return extract_coarse(graph, out, layers, granularity, aggregate, progress)
    the_plan = plan(graph, layers)
    chosen, boundary = selection(graph, layers)
    out_path = storage.location(out) if out is not None else None
    if out_path is not None:
        _prepare(out_path, the_plan)
    t0 = time.perf_counter()
    with disk_full_as(out_path, "the extraction", "the folder is marked incomplete (no manifest); "
                      "free some space or choose another --out, then run again (it starts afresh)"):
        # Nodes: small next to edges, written in-process.
        node_info: dict[str, dict[str, Any]] = {}
        for spec in sorted(chosen + boundary, key=lambda s: s.index):
            n, chk, files, shas = 0, 0, [], []
            for k, table in enumerate(node_tables(spec)):
                n += table.num_rows
                chk = _add(chk, node_checksum(table))
                if out_path is not None:
                    rel = f"{schema.NODES_DIR}/{layer_dir(spec)}/part-{k:05d}.parquet"
                    (out_path / rel).parent.mkdir(parents=True, exist_ok=True)
                    shas.append(_write_parquet(out_path / rel, iter([table]), schema.NODE_SCHEMA, CHUNK_NODES))
                    files.append(rel)
            node_info[spec.name] = {"nodes": n, "node_checksum": f"{chk:016x}", "node_files": files, "node_file_sha256": shas}
        # Edges: independent tasks.
        tasks = [t for spec in chosen for t in layer_tasks(spec, task_size)]
        progress.start(the_plan.edges, "edges", "extract")
        results: list[TaskResult] = []
        if executor is None:
            from pipeline.executors import LocalExecutor

            executor = LocalExecutor(workers)
        for result in executor.run(graph, tasks, out_path, max_edges):
            results.append(result)
            progress.advance(result.edges)
        progress.finish()
        seconds = time.perf_counter() - t0
        manifest = _manifest(graph, the_plan, chosen, boundary, node_info, results, layers, seconds)
        if out_path is not None:
            _write_json_atomic(out_path / schema.MANIFEST, manifest)
            (out_path / _PARTIAL).unlink(missing_ok=True)
    return ExtractResult(out_path, the_plan, manifest["nodes"], manifest["edges"], seconds, manifest)


#: Kind of folder an extraction is (pipeline.storage ownership marker).
FOLDER_KIND = "extraction"
_PARTIAL = ".partial"
_PARTIAL_TEXT = "extraction in progress; this folder is incomplete\n"


def is_legacy_extraction(folder: Path) -> bool:
    """A folder written by a cnngraph older than the ownership marker: our manifest or .partial."""
    try:
        if (folder / _PARTIAL).exists() and (folder / _PARTIAL).read_text() == _PARTIAL_TEXT:
            return True
        return json.loads((folder / schema.MANIFEST).read_text()).get("format") == schema.FORMAT
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return False


def _prepare(out: Path, the_plan: Plan) -> None:
    """Make out an empty extraction folder, refusing foreign folders and too little disk.

    Only a folder that is provably ours (pipeline.storage ownership marker, or an older version's
    manifest) is reused, and then only what an extraction writes is removed from it.
    """
    storage.claim_folder(out, FOLDER_KIND, "choose another --out", legacy=is_legacy_extraction)
    (out / schema.MANIFEST).unlink(missing_ok=True)  # first: a stale manifest must not claim completeness
    (out / _PARTIAL).write_text(_PARTIAL_TEXT)
    for sub in (schema.NODES_DIR, schema.EDGES_DIR):
        storage.rmtree(out / sub)
    storage.require_free(out, the_plan.bytes["parquet"],
                         f"the output ({the_plan.nodes:,} nodes, {the_plan.edges:,} edges) needs",
                         "choose a smaller --input-shape or --layers, or another --out")


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
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


def _manifest(graph, the_plan, chosen, boundary, node_info, results, layers, seconds) -> dict[str, Any]:
    by_layer: dict[int, list[TaskResult]] = {}
    for r in sorted(results, key=lambda r: (r.layer, r.seq)):
        by_layer.setdefault(r.layer, []).append(r)
    entries = []
    for spec in sorted(chosen + boundary, key=lambda s: s.index):
        lp = the_plan.layer(spec.name)
        rs = by_layer.get(spec.index, [])
        edges = sum(r.edges for r in rs)
        chk = 0
        for r in rs:
            chk = _add(chk, r.checksum)
        info = node_info[spec.name]
        if edges != lp.edges or info["nodes"] != lp.nodes:
            raise OutputError(
                f"internal error: layer {spec.name} produced {info['nodes']} nodes and {edges} edges, "
                f"the plan says {lp.nodes} and {lp.edges}; please report this"
            )
        entries.append(
            {
                "index": spec.index,
                "name": spec.name,
                "type": spec.type,
                "output_shape": list(spec.output.shape),
                "params": spec.params,
                "config": spec.config,
                "inbound": spec.inbound,
                "boundary": lp.boundary,
                "nodes": info["nodes"],
                "edges": edges,
                "id_start": spec.output.offset,
                "id_stop": spec.output.offset + spec.output.size,
                "activation": lp.activation,
                "node_checksum": info["node_checksum"],
                "edge_checksum": f"{chk:016x}",
                "node_files": info["node_files"],
                "edge_files": [r.file for r in rs if r.file],
                "node_file_sha256": info.get("node_file_sha256", []),
                "edge_file_sha256": [r.sha256 for r in rs if r.file],
            }
        )
    from pipeline.model import model_record

    return {
        "format": schema.FORMAT,
        "complete": True,
        "model": model_record(graph),  # absolute files and their sha256, or imagenet / random(seed=N) / in-memory
        "granularity": "neuron",
        "options": {"layers": layers},
        "nodes": sum(e["nodes"] for e in entries),
        "edges": sum(e["edges"] for e in entries),
        "seconds": round(seconds, 3),
        "layers": entries,
    }


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a complete extraction folder; OutputError when absent or incomplete."""
    path = Path(folder) / schema.MANIFEST
    if not path.exists():
        raise OutputError(
            f"{folder} has no {schema.MANIFEST}: it is not a complete extraction (rerun `cnngraph extract`)"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise OutputError(f"{path} is corrupt: {err}; rerun `cnngraph extract`") from err
    if data.get("format") != schema.FORMAT or not data.get("complete"):
        raise OutputError(f"{path} is not a complete {schema.FORMAT} manifest; rerun `cnngraph extract`")
    return data


def spec_from_manifest(manifest: dict[str, Any], folder: str | Path | None = None, check: bool = True) -> ModelSpec:
    """The ModelSpec that rebuilds the model a manifest was extracted from (new and old manifests).

    With ``check``, the model and weights files it names must still have their recorded sha256
    (ModelError otherwise). A folder of an in-memory model cannot be rebuilt: the error says how
    to pass the model. ``folder`` only names the folder in messages.
    """
    from pipeline.errors import ModelError
    from pipeline.model import IN_MEMORY_WEIGHTS, MODEL_FILE_WEIGHTS, check_provenance

    m = dict(manifest["model"])
    weights = str(m.get("weights") or "")
    where = folder if folder is not None else "this folder"
    if weights == IN_MEMORY_WEIGHTS:
        name = m.get("name") or m.get("source") or "model"
        raise ModelError(
            f"{where} was extracted from an in-memory model ({name}), which its manifest cannot rebuild: "
            f"save it (model.save('{name}.keras')) and run `cnngraph verify {name}.keras --folder {where}`, "
            f"or in Python: verify(model, walk(model), folder='{where}')"
        )
    if weights.startswith("random(") or weights == MODEL_FILE_WEIGHTS:
        m["weights"] = None
    if check:
        check_provenance(m, folder)
    return ModelSpec.from_json(m)
