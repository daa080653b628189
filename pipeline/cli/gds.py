"""``cnngraph gds memory|project|drop``: Graph Data Science projections of a loaded model (thin over
:mod:`pipeline.neo4j.gds`); the algorithms themselves run from Neo4j Browser or ``cnngraph cypher``
(``gds_pagerank``, ``gds_strength``, ``gds_louvain``, ``gds_strongest_path``)."""

from __future__ import annotations

import click

from pipeline.cli.options import progress_bar


@click.group("gds")
def gds_group() -> None:
    """Project a model loaded into Neo4j into Graph Data Science (weights |w| and signed)."""


def _conn():
    from pipeline.neo4j.server import connection

    return connection(progress_bar())


@gds_group.command()
@click.argument("model")
def memory(model: str) -> None:
    """The heap a projection of MODEL needs, and what the server has free."""
    from pipeline.neo4j import gds
    from pipeline.plan import human_bytes

    mem = gds.memory(_conn(), model)
    click.echo(f"model {model}: {mem['neurons']:,} neurons, {mem['relationships']:,} relationships")
    click.echo(f"projection needs about {human_bytes(mem['needed_bytes'])} of heap "
               f"({human_bytes(mem['needed_bytes_with_paths'])} with --paths); the server has "
               f"{human_bytes(mem['free_heap_bytes'])} free of {human_bytes(mem['max_heap_bytes'])}")


@gds_group.command()
@click.argument("model")
@click.option("--graph", default=None, help="Name of the projection [default: the model's name].")
@click.option("--min-abs-weight", type=float, default=None, metavar="T", help="Only edges with |weight| >= T.")
@click.option("--paths", is_flag=True, help="Add the cost property gds_strongest_path needs (+8 B per relationship).")
def project(model: str, graph: str | None, min_abs_weight: float | None, paths: bool) -> None:
    """Project MODEL into GDS (refused, with the heap needed, when it will not fit)."""
    from pipeline.neo4j import gds

    progress = progress_bar()
    try:
        info = gds.project(_conn(), model, graph, min_abs_weight=min_abs_weight, paths=paths, progress=progress)
    finally:
        progress.finish()
    click.echo(f"projected {info['nodes']:,} neurons and {info['relationships']:,} relationships as "
               f"{info['graph']!r} in {info['millis'] / 1000:.1f} s; try: cnngraph cypher gds_pagerank "
               f"-p graph={info['graph']}")


@gds_group.command()
@click.argument("graph")
def drop(graph: str) -> None:
    """Drop the projection GRAPH, freeing its heap."""
    from pipeline.neo4j import gds

    click.echo(f"dropped {graph!r}." if gds.drop(_conn(), graph) else f"no projection {graph!r}.")
