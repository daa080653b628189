"""``cnngraph cypher``: run one query (text, a .cypher file, or the name of a shipped query)."""

from __future__ import annotations

import json
from importlib import resources

import click

from pipeline.cli.options import progress_bar

#: The package folder of the shipped queries (``cypher/`` at the repository root links to it).
QUERIES = "cypher"


def shipped_queries() -> list[str]:
    """Names of the Browser queries shipped in ``pipeline/cypher/`` (``layer_summary``, ...).

    ``schema`` is left out: the loaders apply it, and it holds several statements.
    """
    folder = resources.files("pipeline").joinpath(QUERIES)
    names = (p.name[: -len(".cypher")] for p in folder.iterdir() if p.name.endswith(".cypher"))
    return sorted(name for name in names if name != "schema")


def resolve_query(query: str) -> str:
    """The text of a shipped query when ``query`` is its bare name, else ``query`` unchanged.

    A bare name is never valid Cypher, so ``cnngraph cypher layer_summary`` is unambiguous; files
    and query texts go to :func:`pipeline.neo4j.query.run_query` as they are.
    """
    if query.isidentifier() and query in shipped_queries():
        return resources.files("pipeline").joinpath(QUERIES, f"{query}.cypher").read_text()
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
