"""``cnngraph export``: a thin shell over :mod:`pipeline.export`."""

from __future__ import annotations

import click

from pipeline.cli.options import (
    model_build_options,
    progress_bar,
    silent_option,
    source_or_model,
)


@click.command("export")
@click.argument("source")
@click.option("--out", required=True, type=click.Path(), help="Output file (graphml) or folder (parquet).")
@click.option("--format", "fmt", type=click.Choice(["graphml", "parquet"]), default="graphml", show_default=True,
              help="Output format.")
@model_build_options
@click.option("--layers", default=None, metavar="FIRST:LAST", help="Edges into the layers FIRST..LAST (names or indexes).")
@click.option("--upstream-of", multiple=True, metavar="LAYER:INDEX",
              help="Upstream cone of a neuron (INDEX: h,w,c or a unit number); repeatable.")
@click.option("--downstream-of", multiple=True, metavar="LAYER:INDEX",
              help="Downstream cone of a neuron; repeatable.")
@click.option("--depth", type=click.IntRange(0), default=None, help="Depth of the cones (default: unlimited).")
@click.option("--min-abs-weight", type=float, default=None, metavar="T", help="Only edges with |weight| >= T.")
@click.option("--top-k-in", type=click.IntRange(1), default=None, metavar="K",
              help="Per neuron, only its K strongest incoming edges by |weight|.")
@click.option("--cypher", default=None, metavar="QUERY",
              help="neo4j:NAME sources only: the relationships this query returns.")
@click.option("--force", is_flag=True, help="Go ahead even when the selection exceeds the size limit.")
@click.option("--overwrite", is_flag=True, help="Replace an existing GraphML file at --out (never the source).")
@click.option("--abs-weight", is_flag=True,
              help="GraphML: add an abs_weight edge attribute (|weight|); weights are signed, so give "
                   "NetworkX/igraph weighted algorithms this one.")
@click.option("--no-check", is_flag=True, help="Folder sources: skip checking the files against their sha256.")
@silent_option
def export_command(source: str, out: str, fmt: str, input_shape: str | None, no_top: bool, weights: str | None,
                   seed: int, layers: str | None, upstream_of: tuple[str, ...], downstream_of: tuple[str, ...],
                   depth: int | None, min_abs_weight: float | None, top_k_in: int | None, cypher: str | None,
                   force: bool, overwrite: bool, abs_weight: bool, no_check: bool, silent: bool) -> None:
    """Export a subgraph of SOURCE as GraphML or Parquet.

    SOURCE is a model (a keras.applications name such as vgg16, or a .keras file; its edges are
    made on the fly), a folder written by `cnngraph extract`, or neo4j:NAME for a model loaded
    into Neo4j. Selections combine: --layers and the weight filters define the graph, the cones
    are taken in it. Weights are signed: for PageRank, HITS or paths in NetworkX or igraph, export
    with --abs-weight and pass weight="abs_weight".
    """

    from pipeline import export
    from pipeline.plan import human_bytes

    progress = progress_bar(silent)
    try:
        src = source_or_model(source, input_shape, no_top, weights, seed, progress)
        if overwrite and fmt != "graphml":
            raise click.UsageError("--overwrite applies to GraphML files; a Parquet export folder of ours "
                                   "is always replaced")
        if abs_weight and fmt != "graphml":
            raise click.UsageError("--abs-weight applies to GraphML files; Parquet keeps the extraction "
                                   "schema (take abs(weight) when reading it)")
        options = {"overwrite": True} if overwrite else {}
        if abs_weight:
            options["abs_weight"] = True
        result = export.export(
            src, out, fmt, force=force, progress=progress, check=not no_check, layers=layers,
            upstream_of=list(upstream_of), downstream_of=list(downstream_of), depth=depth,
            min_abs_weight=min_abs_weight, top_k_in=top_k_in, cypher=cypher, **options,
        )
    finally:
        progress.finish()
    size = f" ({human_bytes(result.bytes)})" if result.bytes else ""
    click.echo(f"wrote {result.nodes:,} nodes and {result.edges:,} edges to {result.path}{size} "
               f"in {result.seconds:.1f} s")
