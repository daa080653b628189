"""The extract stage: a walked model written as a Parquet extraction folder, at any granularity.

Neuron level: work is a list of independent tasks (layer x block of rows, :mod:`.tasks`), each
writing one file, so any executor (:mod:`.executors`: in-process, a pool of local processes, Dask)
can run them and the output does not depend on how many workers ran. Channel and layer level
(:mod:`.coarse`) are small and written in-process. Every granularity goes through the same folder
path (:mod:`.folder`): claimed, marked ``.partial``, every file written atomically with its sha256,
a full disk turned into a clear error, and the manifest (:class:`pipeline.dataset.Manifest`)
written last, atomically: its presence is the only claim that a folder is complete.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import schema
from pipeline.dataset import LayerEntry, Manifest, read_manifest, spec_from_manifest
from pipeline.errors import OutputError
from pipeline.extract import coarse, folder
from pipeline.extract.checksum import CHECKSUM_BLOCK, add, edge_checksum, node_checksum
from pipeline.extract.folder import FOLDER_KIND, is_legacy_extraction, layer_dir
from pipeline.extract.tables import (
    CHUNK_NODES,
    constant_column,
    edge_table,
    node_table,
    node_tables,
    parquet_options,
)
from pipeline.extract.tasks import (
    CACHE_EDGES,
    CHUNK_EDGES,
    TASK_EDGES,
    TaskResult,
    layer_tasks,
    run_task,
    stream_edges,
    task_edges,
)
from pipeline.model_files import model_record
from pipeline.plan import Plan, plan, selection
from pipeline.progress import NULL, Progress
from pipeline.spec import LayerSpec, ModelGraph

if TYPE_CHECKING:
    from pipeline.extract.executors import Executor

__all__ = [
    "CACHE_EDGES", "CHECKSUM_BLOCK", "CHUNK_EDGES", "CHUNK_NODES", "FOLDER_KIND", "TASK_EDGES", "ExtractResult",
    "TaskResult", "constant_column", "edge_checksum", "edge_table", "extract", "is_legacy_extraction", "layer_dir",
    "layer_tasks", "node_checksum", "node_table", "node_tables", "parquet_options", "read_manifest", "run_task",
    "spec_from_manifest", "stream_edges", "task_edges",
]


@dataclass
class ExtractResult:
    """What an extraction wrote: where, its plan, counts, time and manifest."""

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
    granularity: str = schema.NEURON,
    aggregate: str = "l1",
) -> ExtractResult:
    """Extract a walked model into out (nodes/, edges/, manifest.json); out=None counts only.

    ``granularity`` ``channel`` or ``layer`` writes the coarser graphs of pipeline.extract.coarse
    (channel edge weights: ``aggregate`` of their kernel slices).
    ``out`` is a folder or an fsspec URL (pipeline.storage). ``executor`` runs the neuron-level
    edge tasks (pipeline.extract.executors; default: a LocalExecutor of ``workers`` processes); the
    output is the same whatever runs them.
    Raises OutputError when out is not an extraction folder or the disk cannot hold the plan.
    """
    if granularity != schema.NEURON:
        coarse.check_options(granularity, aggregate)
    the_plan = plan(graph, layers, granularity)
    chosen, boundary = selection(graph, layers)
    root = folder.prepare(out, the_plan) if out is not None else None
    t0 = time.perf_counter()
    with folder.writing(root):
        if granularity == schema.NEURON:
            entries = _neuron_entries(graph, chosen, boundary, the_plan, root, progress, workers, max_edges,
                                      task_size, executor)
        else:
            progress.start(the_plan.edges, "edges", f"extract ({granularity})")
            entries = coarse.coarse_entries(graph, chosen, boundary, the_plan, root, granularity, aggregate, progress)
            progress.finish()
        seconds = time.perf_counter() - t0
        manifest = Manifest(
            model=model_record(graph),  # absolute files and their sha256, or imagenet / random(seed=N) / in-memory
            layers=entries,
            granularity=granularity,
            aggregate=aggregate if granularity == schema.CHANNEL else None,
            options={"layers": layers},
            nodes=sum(e.nodes for e in entries),
            edges=sum(e.edges for e in entries),
            seconds=round(seconds, 3),
        ).to_json()
        if root is not None:
            folder.finish(root, manifest)
    return ExtractResult(root, the_plan, manifest["nodes"], manifest["edges"], seconds, manifest)


def _neuron_entries(
    graph: ModelGraph, chosen: list[LayerSpec], boundary: list[LayerSpec], the_plan: Plan,
    root: folder.Location | None, progress: Progress, workers: int, max_edges: int, task_size: int,
    executor: Executor | None,
) -> list[LayerEntry]:
    """Write the neuron-level node files in-process and run the edge tasks; the manifest entries."""
    layers = sorted(chosen + boundary, key=lambda s: s.index)
    entries = {}
    for spec in layers:  # nodes: small next to edges
        lp = the_plan.layer(spec.name)
        entry = LayerEntry(
            index=spec.index, name=spec.name, type=spec.type, output_shape=list(spec.output.shape),
            params=spec.params, config=spec.config, inbound=spec.inbound, boundary=lp.boundary,
            id_start=spec.output.offset, id_stop=spec.output.offset + spec.output.size, activation=lp.activation,
        )
        chk = 0
        for k, table in enumerate(node_tables(spec)):
            entry.nodes += table.num_rows
            chk = add(chk, node_checksum(table))
            if root is not None:
                rel = folder.node_file(spec, k)
                entry.node_file_sha256.append(folder.write_table_file(root, rel, iter([table]), schema.NODE_SCHEMA,
                                                                      CHUNK_NODES))
                entry.node_files.append(rel)
        entry.node_checksum = f"{chk:016x}"
        entries[spec.index] = entry
    tasks = [t for spec in chosen for t in layer_tasks(spec, task_size)]
    progress.start(the_plan.edges, "edges", "extract")
    results: list[TaskResult] = []
    if executor is None:
        from pipeline.extract.executors import LocalExecutor

        executor = LocalExecutor(workers)
    for result in executor.run(graph, tasks, root, max_edges):
        results.append(result)
        progress.advance(result.edges)
    progress.finish()
    checksums: dict[int, int] = {}
    for r in sorted(results, key=lambda r: (r.layer, r.seq)):
        entry = entries[r.layer]
        entry.edges += r.edges
        checksums[r.layer] = add(checksums.get(r.layer, 0), r.checksum)
        if r.file:
            entry.edge_files.append(r.file)
            entry.edge_file_sha256.append(r.sha256)
    for spec in layers:
        entry, lp = entries[spec.index], the_plan.layer(spec.name)
        entry.edge_checksum = f"{checksums.get(spec.index, 0):016x}"
        if entry.edges != lp.edges or entry.nodes != lp.nodes:
            raise OutputError(
                f"internal error: layer {spec.name} produced {entry.nodes} nodes and {entry.edges} edges, "
                f"the plan says {lp.nodes} and {lp.edges}; please report this"
            )
    return [entries[s.index] for s in layers]
