"""``cnngraph cypher``: run one query (text, a .cypher file, or the name of a shipped query)."""

from __future__ import annotations

import json

import click

from pipeline.cli.options import progress_bar


def resolve_query(query: str) -> str:
    """The text of a shipped query when ``query`` is its bare name, else ``query`` unchanged.

    A bare name is never valid Cypher, so ``cnngraph cypher layer_summary`` is unambiguous; files
    and query texts go to :func:`pipeline.neo4j.query.run_query` as they are.
    """
    from pipeline.neo4j.query import shipped, shipped_queries

    if query.isidentifier() and query in shipped_queries():
        return shipped(query)
    return query


@click.command("cypher")
@click.argument("query")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="A query parameter (JSON or text); repeatable.")
@click.option("--limit", type=int, default=50, show_default=True, help="Rows to print at most.")
def cypher_command(query: str, params: tuple[str, ...], limit: int) -> None:
    """Run QUERY and print its rows.

    QUERY is Cypher text, a .cypher file, or the name of a shipped query (layer_summary,
    strongest_incoming, ...: the files in the project's cypher/ folder).
    """
    from pipeline.neo4j.query import parse_params, run_query

    keys, rows = run_query(resolve_query(query), parse_params(params), limit=limit, progress=progress_bar())
    click.echo("\t".join(keys))
    for row in rows:
        click.echo("\t".join(json.dumps(v) if isinstance(v, (list, dict)) else str(v) for v in row))
