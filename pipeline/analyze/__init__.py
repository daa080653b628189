"""The analyze stage: exact measures of a neuron graph, streamed, memory O(neurons), all on |w|.

:func:`analyze` writes into a folder (kind ``analysis``; names in :mod:`~pipeline.analyze.columns`):

* ``neurons.parquet``: per neuron ``id``, ``layer``, ``d``/``h``/``w``/``c``, in/out degree and
  strength (sums of |w|), ``pagerank`` (GDS's formula ``(1 - d) + d * sum PR(u) |w| / out_strength(u)``,
  d = 0.85: one pass in layer order is its exact fixed point on our DAG), and with a target its
  ``influence`` (sum over all paths to the target of the product of |w|).
* ``layers.parquet``: per layer (edges into it) the count, signed weight min/max/mean/std (exact),
  |w| mean (exact), |w| quantiles and a histogram from a fixed fine histogram (128 bins per
  octave of |w|: quantiles within 2^-7 relative; the stored histogram has 8 bins per octave).
* ``thresholds.parquet``: per layer and threshold t, the edges with |w| >= t (exact, counted in
  their target's layer) and the neurons with an in-edge and an out-edge of |w| >= t.
* ``path.parquet`` (with a target): the max-product path from an input neuron to it.
* ``analysis.json``: what was computed, from what, the counts and the seconds of each pass.

Every edge kind is treated the same: |w| of the weight it carries. Max-pooling edges (and
``maximum``) carry 1.0, average pooling 1/n, Add 1 (Subtract -1), Concatenate and identity-shaped
kinds 1 or their scale, ``multiply`` its constant factor, layer/group norm their centred gamma:
so a max-pool neuron counts every window member as a full-strength path, the "every possible
choice" reading of the graph.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.analyze import columns, in_neo4j
from pipeline.analyze.passes import Runner, State, forward_pass, reverse_pass, strongest_path
from pipeline.analyze.tables import (
    layer_table,
    neuron_schema,
    neuron_tables,
    path_table,
    threshold_table,
    write_table,
)
from pipeline.errors import UsageError
from pipeline.export.base import LayerInfo, Source
from pipeline.export.neo4j_source import Neo4jSource
from pipeline.export.select import Selection, layer_range, neuron_id
from pipeline.export.sources import NEO4J_PREFIX, ModelSource, model_spec_of, open_source
from pipeline.progress import NULL, Progress
from pipeline.storage import claim_folder, temp_sibling

__all__ = ["AnalysisResult", "analyze", "columns", "parse_thresholds"]

#: Selections that make sense for whole-graph measures.
SELECTIONS = ("layers", "min_abs_weight")


@dataclass
class AnalysisResult:
    """What an analysis computed and where it wrote it."""

    out: Path
    neurons: int
    edges: int
    target: int | None
    seconds: dict[str, float] = field(default_factory=dict)
    path: list[int] = field(default_factory=list)


def parse_thresholds(value: Any) -> np.ndarray:
    """Thresholds from ``"T1,T2,.."`` or a sequence of numbers: sorted, unique, each >= 0 (compared
    with |w| after rounding to float32, as ``min_abs_weight`` is)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        out = np.array([float(str(x).strip()) for x in items if str(x).strip()], np.float64)
    except ValueError:
        raise UsageError(f"bad thresholds {value!r}: give numbers separated by commas, e.g. 0,0.001,0.01") from None
    if not len(out) or not np.all(np.isfinite(out)) or (out < 0).any():
        raise UsageError(f"bad thresholds {value!r}: give one or more finite numbers >= 0, e.g. 0,0.001,0.01")
    return np.unique(out)


def _target(src: Source, target: Any, klass: int | None) -> int | None:
    if target is not None and klass is not None:
        raise UsageError("give --target LAYER:INDEX or --class K, not both")
    if klass is not None:
        return neuron_id(src, (src.layers[-1].name, int(klass)))
    return None if target is None else neuron_id(src, target)


def _neuron_layers(src: Source, chosen: list[LayerInfo]) -> list[LayerInfo]:
    """The layers whose neurons the selected graph holds: the chosen ones and those feeding them."""
    spans = [r for la in chosen if la.edges for r in la.inputs]
    idx = {la.index for la in chosen}
    return [o for o in src.owners if o.index in idx or any(o.offset < hi and lo < o.stop for lo, hi in spans)]


def analyze(source: Any, out: str | Path, *, target: Any = None, klass: int | None = None,
            thresholds: Any = columns.DEFAULT_THRESHOLDS, progress: Progress = NULL, executor: Any = None,
            workers: int | None = None, conn: Any = None, check: bool = True, task_edges: int | None = None,
            write: bool = False, **selection: Any) -> AnalysisResult:
    """Compute the measures of ``source``'s neuron graph into the folder ``out``.

    Parameters
    ----------
    source : model name or file, ModelSpec, ModelGraph, extraction folder, or ``"neo4j:NAME"``.
    target : ``"LAYER:INDEX"`` (or ``(layer, index)``): adds ``influence`` and ``path.parquet``.
    klass : unit K of the model's last layer as the target.
    thresholds : the |w| sweep (``"0,0.01"`` or numbers).
    executor, workers : for model sources, who runs the tasks (pipeline.extract.executors;
        default: local processes, one per core); ``task_edges``: edges per task (default: the
        extraction's); results are the same whatever the workers.
    conn, check : the Neo4j connection of a ``neo4j:NAME`` source; check a folder's sha256s.
        A ``neo4j:NAME`` source of the whole model on a server with GDS gets its PageRank from GDS
        (:mod:`~pipeline.analyze.in_neo4j`: exact, and it spares a second read of every edge).
    write : ``neo4j:NAME`` sources: also store the per-neuron measures as node properties
        (``in_degree``, ..., ``pagerank``, ``influence``), for Browser queries.
    **selection : ``layers="A:B"`` (edges into those layers), ``min_abs_weight=T``.

    Raises
    ------
    UsageError (bad target, layer, thresholds or selection), OutputError (out not ours), ModelError.
    """
    from pipeline.export import check_out
    from pipeline.extract.executors import make_executor

    t0 = time.perf_counter()
    unknown = sorted(set(selection) - set(SELECTIONS))
    if unknown:
        raise UsageError(f"analyze does not take the selection {', '.join(unknown)}; it takes "
                         f"{', '.join(SELECTIONS)}")
    sel = Selection.make(**selection)
    thr = parse_thresholds(thresholds)
    if write and not str(source).startswith(NEO4J_PREFIX):
        raise UsageError("--write stores the measures in Neo4j: it needs a neo4j:NAME source")
    out = Path(out)
    check_out(source, out)
    spec = model_spec_of(source)
    if spec is not None:
        from pipeline.model_store import isolated_graph

        with isolated_graph(spec) as graph:  # TensorFlow stays in a short-lived child
            return analyze(graph, out, target=target, klass=klass, thresholds=thr, progress=progress,
                           executor=executor, workers=workers, task_edges=task_edges, **selection)
    src = open_source(source, conn, check)
    try:
        chosen = layer_range(src, sel.layers)
        tid = _target(src, target, klass)
        layers = _neuron_layers(src, chosen)
        if tid is not None and not any(la.offset <= tid < la.stop for la in layers):
            raise UsageError(f"the target {target or klass} is outside the selected layers; widen --layers")
        claim_folder(out, columns.FOLDER_KIND, "choose another --out")
        with_edges = [la for la in chosen if la.edges]
        edges = sum(la.edges for la in with_edges)
        neurons = sum(la.size for la in layers)
        n = max(o.stop for o in src.owners)
        measures = ["degree", "strength", "pagerank", "weights", "thresholds"] + (
            ["influence", "path"] if tid is not None else [])
        progress.message(f"analyzing {src.name}: {edges:,} edges{' (before --min-abs-weight)' if sel.min_abs_weight else ''}"
                         f" and {neurons:,} neurons, 2 passes over the edges ({', '.join(measures)}); "
                         f"about {n * 70 / 1e6:,.0f} MB of per-neuron arrays")
        state = State(n, tid, thr, sel.min_abs_weight)
        if isinstance(src, ModelSource):
            runner_exec = executor if executor is not None else make_executor("local", workers)
            with runner_exec.session(src.graph) as session:
                runner = Runner(src, session, progress, task_edges)
                reverse_pass(state, with_edges, runner)
                forward_pass(state, with_edges, runner)
        else:
            runner = Runner(src, None, progress)
            reverse_pass(state, with_edges, runner)
            if isinstance(src, Neo4jSource) and sel.layers is None and in_neo4j.has_gds(src):
                t1 = time.perf_counter()
                in_neo4j.gds_pagerank(src, state.pagerank, len(src.layers), sel.min_abs_weight, progress)
                state.seconds["forward (GDS PageRank)"] = round(time.perf_counter() - t1, 3)
                measures[measures.index("pagerank")] = "pagerank (GDS)"
            else:
                forward_pass(state, with_edges, runner)
        steps = strongest_path(state, src, layers) if tid is not None else []
        t1 = time.perf_counter()
        write_table(out / columns.NEURONS_FILE, neuron_tables(state, layers), neuron_schema(tid is not None))
        write_table(out / columns.LAYERS_FILE, iter([t := layer_table(state, with_edges)]), t.schema)
        write_table(out / columns.THRESHOLDS_FILE, iter([t := threshold_table(state, layers)]), t.schema)
        if tid is not None:
            write_table(out / columns.PATH_FILE, iter([t := path_table(steps, layers)]), t.schema)
        elif (out / columns.PATH_FILE).exists():  # an earlier analysis of ours had a target
            (out / columns.PATH_FILE).unlink()
        state.seconds["write"] = round(time.perf_counter() - t1, 3)
        if write:
            t1 = time.perf_counter()
            progress.start(neurons, "neurons", "analyze: writing measures to Neo4j")
            in_neo4j.write_measures(src, neuron_tables(state, layers), progress)
            progress.finish()
            state.seconds["write to Neo4j"] = round(time.perf_counter() - t1, 3)
        state.seconds["total"] = round(time.perf_counter() - t0, 3)
        kept = sum(st.edges for st in state.stats.values())
        summary = {
            "format": columns.FORMAT, "model": src.name, "source": str(source) if isinstance(source, (str, Path))
            else type(source).__name__, "selection": {k: v for k, v in selection.items() if v is not None},
            "target": None if tid is None else {"id": tid, "given": str(target if target is not None else
                                                                        f"class {klass}")},
            "measures": measures, "damping": columns.DAMPING, "thresholds": thr.tolist(),
            "neurons": int(neurons), "edges": int(kept), "layers": [la.name for la in layers],
            "quantiles": "from a fine histogram of |w| (128 bins per octave; relative error < 2^-7)",
            "seconds": state.seconds, "path": [s[0] for s in steps],
        }
        tmp = temp_sibling(out / columns.SUMMARY_FILE)
        tmp.write_text(json.dumps(summary, indent=1))
        os.replace(tmp, out / columns.SUMMARY_FILE)
    finally:
        if src is not source:
            src.close()
    return AnalysisResult(out, int(neurons), int(kept), tid, state.seconds, [s[0] for s in steps])
