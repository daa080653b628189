"""``cnngraph analyze``: a thin shell over :func:`pipeline.analyze.analyze`."""

from __future__ import annotations

import click

from pipeline.cli.options import (
    model_build_options,
    progress_bar,
    silent_option,
    source_or_model,
    target_options,
)


@click.command("analyze")
@click.argument("source")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder of the tables.")
@model_build_options
@target_options("Add influence on this neuron and the strongest path into it (INDEX: h,w,c or a unit number).")
@click.option("--layers", default=None, metavar="FIRST:LAST", help="Edges into the layers FIRST..LAST (names or indexes).")
@click.option("--min-abs-weight", type=float, default=None, metavar="T", help="Only edges with |weight| >= T.")
@click.option("--workers", type=int, default=None, help="Local worker processes (model sources)  [default: the cores]")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="Who runs a model source's tasks: local processes, or a Dask cluster.")
@click.option("--scheduler", default=None, metavar="ADDRESS", help="Dask scheduler address, for --executor dask.")
@click.option("--no-check", is_flag=True, help="Folder sources: skip checking the files against their sha256.")
@click.option("--write", is_flag=True, help="neo4j:NAME sources: also store the per-neuron measures as node properties.")
@silent_option
def analyze_command(source: str, out: str, input_shape: str | None, no_top: bool, weights: str | None, seed: int,
                    target: str | None, klass: int | None, thresholds: str | None, layers: str | None,
                    min_abs_weight: float | None, workers: int | None, executor: str, scheduler: str | None,
                    no_check: bool, write: bool, silent: bool) -> None:
    """Exact streaming measures of SOURCE's neuron graph, written as Parquet tables into OUT.

    SOURCE is a model (name or file; edges made on the fly by worker processes), a folder written
    by `cnngraph extract`, or neo4j:NAME. Writes neurons.parquet (degree, strength, PageRank,
    influence with a target), layers.parquet (weight statistics), thresholds.parquet (a |w| sweep),
    path.parquet (strongest path into the target) and analysis.json; all on |weight|. For
    neo4j:NAME, PageRank runs in GDS when the server has it; --write stores the measures on the
    neurons (n.pagerank, n.in_strength, ...) for Browser queries.
    """
    from pipeline.analyze import analyze, columns
    from pipeline.extract.executors import make_executor

    progress = progress_bar(silent)
    src = source_or_model(source, input_shape, no_top, weights, seed, progress)
    runner = make_executor(executor, workers, scheduler)
    try:
        res = analyze(src, out, target=target, klass=klass, progress=progress, executor=runner,
                      thresholds=thresholds if thresholds is not None else columns.DEFAULT_THRESHOLDS,
                      check=not no_check, write=write, layers=layers, min_abs_weight=min_abs_weight)
    finally:
        progress.finish()
    passes = ", ".join(f"{k} {v:.1f} s" for k, v in res.seconds.items() if k != "total")
    what = f"; strongest path of {len(res.path)} neurons" if res.target is not None else ""
    click.echo(f"analyzed {res.neurons:,} neurons and {res.edges:,} edges into {res.out} in "
               f"{res.seconds['total']:.1f} s ({passes}){what}")
