"""``cnngraph report``: a thin shell over :func:`pipeline.report.report`."""

from __future__ import annotations

import click

from pipeline.cli.options import (
    model_build_options,
    progress_bar,
    silent_option,
    source_or_model,
    target_options,
)


@click.command("report")
@click.argument("source")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder of the page.")
@model_build_options
@target_options("Add influence maps and the strongest path into this neuron (INDEX: h,w,c or a unit number).")
@click.option("--workers", type=int, default=None, help="Local worker processes (model sources)  [default: the cores]")
@click.option("--no-check", is_flag=True, help="Folder sources: skip checking the files against their sha256.")
@silent_option
def report_command(source: str, out: str, input_shape: str | None, no_top: bool, weights: str | None, seed: int,
                   target: str | None, klass: int | None, thresholds: str | None, workers: int | None,
                   no_check: bool, silent: bool) -> None:
    """One HTML page of pictures of SOURCE's neuron graph, written as OUT/index.html.

    SOURCE is a model (name or file), a folder written by `cnngraph extract`, or neo4j:NAME. The
    page shows the layer graph, the plan's exact sizes, |w| histograms and quantiles, degree,
    strength and PageRank per layer, the threshold sweep and, with --target or --class, the
    influence of every input pixel and the strongest path; for neo4j:NAME also GDS's PageRank.
    Pictures are PNG files beside the page, the numbers behind them in OUT/data; it opens offline.
    """
    from pipeline.analyze import columns
    from pipeline.report import report

    progress = progress_bar(silent)
    src = source_or_model(source, input_shape, no_top, weights, seed, progress)
    try:
        res = report(src, out, target=target, klass=klass, progress=progress, workers=workers, check=not no_check,
                     thresholds=thresholds if thresholds is not None else columns.DEFAULT_THRESHOLDS)
    finally:
        progress.finish()
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in res.seconds.items() if k != "total")
    click.echo(f"wrote {res.page} ({len(res.pictures)} pictures) in {res.seconds['total']:.1f} s ({parts})")
