"""The report stage: one static HTML page of pictures of a model's neuron graph.

:func:`report` runs the analysis (:func:`pipeline.analyze.analyze`, into ``OUT/analysis``) and
draws what it measured, with the plan's exact counts, into ``OUT/index.html``: the layer graph, the
size table, |w| histograms and quantiles per layer, degree / strength / PageRank distributions,
the threshold sweep and, with a target, input and per-layer influence maps and the strongest path;
for ``neo4j:NAME`` also GDS's PageRank. Pictures are PNG files beside the page and the numbers
behind each are in ``OUT/data/`` (JSON or Parquet). Everything is read from the analysis tables a
batch at a time, so memory stays that of the analysis (O(neurons)).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.analyze import columns as analysis_columns
from pipeline.progress import NULL, Progress

__all__ = ["FOLDER_KIND", "PAGE", "ReportResult", "report"]

#: The ownership marker's kind of a report folder (pipeline.storage.claim_folder).
FOLDER_KIND = "report"
#: The page, and the analysis folder inside the report folder.
PAGE = "index.html"
ANALYSIS = "analysis"
SUMMARY = "report.json"


@dataclass
class ReportResult:
    """Where the report is, what it drew and how long each part took (seconds)."""

    out: Path
    page: Path
    analysis: Path
    pictures: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _layer_table(source: Any, conn: Any):
    from pipeline.dataset import read_manifest
    from pipeline.export import NEO4J_PREFIX
    from pipeline.report import layers
    from pipeline.spec import ModelGraph

    if isinstance(source, ModelGraph):
        return layers.from_graph(source)
    text = str(source)
    if text.startswith(NEO4J_PREFIX):
        return layers.from_neo4j(text[len(NEO4J_PREFIX):], conn)
    return layers.from_manifest(read_manifest(text))


def report(source: Any, out: str | Path, *, target: Any = None, klass: int | None = None,
           thresholds: Any = analysis_columns.DEFAULT_THRESHOLDS, progress: Progress = NULL, conn: Any = None,
           check: bool = True, executor: Any = None, workers: int | None = None) -> ReportResult:
    """Analyse ``source`` and write the report page ``out/index.html`` with its pictures and data.

    Parameters
    ----------
    source : model name or file, ModelSpec, ModelGraph, extraction folder, or ``"neo4j:NAME"``.
    target : ``"LAYER:INDEX"``: adds the influence maps and the strongest path; ``klass``: unit K
        of the last layer as the target.
    thresholds : the |w| sweep (as :func:`pipeline.analyze.analyze`).
    conn, check, executor, workers : as :func:`pipeline.analyze.analyze`.

    Raises
    ------
    UsageError (bad target or thresholds), OutputError (``out`` not ours, or inside the source),
    ModelError, Neo4jError.
    """
    from pipeline.export import NEO4J_PREFIX, check_out
    from pipeline.export.sources import model_spec_of
    from pipeline.spec import ModelGraph

    out = Path(out)
    check_out(source, out)
    spec = model_spec_of(source)
    if spec is not None:
        from pipeline.model_store import isolated_graph

        with isolated_graph(spec) as graph:  # TensorFlow stays in a short-lived child
            return report(graph, out, target=target, klass=klass, thresholds=thresholds, progress=progress,
                          executor=executor, workers=workers)
    if not isinstance(source, ModelGraph) and not str(source).startswith(NEO4J_PREFIX):
        source = Path(source)
    if str(source).startswith(NEO4J_PREFIX) and conn is None:
        from pipeline.neo4j import server

        conn = server.connection(progress=progress)
    return _report(source, out, target, klass, thresholds, progress, conn, check, executor, workers)


def _report(source: Any, out: Path, target: Any, klass: int | None, thresholds: Any, progress: Progress,
            conn: Any, check: bool, executor: Any, workers: int | None) -> ReportResult:
    import json

    from pipeline.analyze import analyze
    from pipeline.export import NEO4J_PREFIX
    from pipeline.report import parts
    from pipeline.report.page import Section, page, write_json, write_text
    from pipeline.spec import ModelGraph
    from pipeline.storage import claim_folder

    t0 = time.perf_counter()
    seconds: dict[str, float] = {}

    @contextmanager
    def timed(name: str):
        t = time.perf_counter()
        yield
        seconds[name] = round(time.perf_counter() - t, 3)

    with timed("plan"):
        layers = _layer_table(source, conn)
    earlier = claim_folder(out, FOLDER_KIND, "choose another --out")
    analysis = out / ANALYSIS
    with timed("analysis"):  # checks the target and thresholds before it writes anything
        res = analyze(source, analysis, target=target, klass=klass, thresholds=thresholds, progress=progress,
                      conn=conn, check=check, executor=executor, workers=workers)
    if earlier:  # the folder is ours (its marker says so): no picture of an earlier report stays behind
        for old in [*out.glob("*.png"), *(out / parts.DATA).glob("*")]:
            if old.is_file():
                old.unlink()
    (out / parts.DATA).mkdir(exist_ok=True)
    has_target = res.target is not None
    neo4j = str(source).startswith(NEO4J_PREFIX)
    progress.start(6 + (1 if has_target else 0) + (1 if neo4j else 0), "parts", "report: pictures")

    def part(name: str, make, *args):
        with timed(name):
            made = make(*args)
        progress.advance(1)
        return made

    plan_section = part("size table", parts.plan_part, out, layers)
    graph_section, layout = part("layer graph", parts.graph_part, out, layers)
    weights_section = part("weights", parts.weights_part, out, analysis)
    stats = part("reading neurons", parts.neuron_stats, analysis, layers, res.target)
    gds_section, gds = part("gds pagerank", parts.gds_part, out, str(source)[len(NEO4J_PREFIX):], conn, layers,
                            progress) if neo4j else (None, None)
    dist_section = part("distributions", parts.distributions_part, out, stats, gds)
    thr_section = part("thresholds", parts.thresholds_part, out, analysis)
    infl_sections = part("influence", parts.influence_part, out, analysis, stats, layout, layers) if has_target else []
    for s, names in ((plan_section, ["size table"]), (graph_section, ["layer graph"]), (weights_section, ["weights"]),
                     (dist_section, ["reading neurons", "distributions"]), (gds_section, ["gds pagerank"]),
                     (thr_section, ["thresholds"]), *((s, ["influence"]) for s in infl_sections)):
        if s is not None:
            s.seconds = sum(seconds[n] for n in names) / (len(infl_sections) if names == ["influence"] else 1)
    sections = [graph_section, plan_section, weights_section, dist_section, *([gds_section] if neo4j else []),
                thr_section, *infl_sections]
    progress.finish()
    summary = json.loads((analysis / analysis_columns.SUMMARY_FILE).read_text())
    seconds["total"] = round(time.perf_counter() - t0, 3)
    analysis_section = Section("Analysis")
    analysis_section.seconds = seconds["analysis"]
    passes = ", ".join(f"{k} {v:.1f} s" for k, v in summary["seconds"].items() if k != "total")
    analysis_section.note(f"cnngraph analyze: {summary['neurons']:,} neurons, {summary['edges']:,} edges ({passes}); "
                          f"measures {', '.join(summary['measures'])}.")
    analysis_section.data += [f"{ANALYSIS}/{n}" for n in (analysis_columns.NEURONS_FILE, analysis_columns.LAYERS_FILE,
                              analysis_columns.THRESHOLDS_FILE, analysis_columns.SUMMARY_FILE)]
    sections.insert(0, analysis_section)
    given = summary["target"]["given"] if summary["target"] else None
    intro = [f"{layers.model}: {layers.nodes:,} neurons, {layers.edges:,} edges in {len(layers.layers)} layers; "
             f"source {'a walked model' if isinstance(source, ModelGraph) else source}"
             + (f"; target {given}" if given else "") + ".",
             "Every measure is exact and on |w| (cnngraph analyze); pictures are PNG files beside this page, the "
             "numbers behind each in data/."]
    pictures = sorted(p.name for p in out.glob("*.png"))
    write_json(out / SUMMARY, {"model": layers.model, "target": given, "seconds": seconds, "pictures": pictures,
                               "analysis": ANALYSIS})
    page_path = write_text(out / PAGE, page(f"cnngraph report: {layers.model}", intro, sections, seconds["total"]))
    return ReportResult(out, page_path, analysis, pictures, seconds)
