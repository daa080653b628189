"""Run one Cypher query (text or a ``cypher/`` file) with parameters, for ``cnngraph cypher``."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from pipeline.errors import UsageError
from pipeline.progress import NULL, Progress


def parse_params(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``name=value`` pairs; values are read as JSON when they parse (numbers, lists), else text."""
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.isidentifier():
            raise UsageError(f"bad parameter {pair!r}: expected name=value, e.g. model=vgg16")
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value
    return params


#: The package folder of the shipped queries (``cypher/`` at the repository root links to it).
QUERIES = "cypher"


def shipped_queries() -> list[str]:
    """Names of the Browser queries shipped in ``pipeline/cypher/`` (``layer_summary``, ...).

    ``schema`` is left out: the loaders apply it, and it holds several statements.
    """
    folder = resources.files("pipeline").joinpath(QUERIES)
    names = (p.name[: -len(".cypher")] for p in folder.iterdir() if p.name.endswith(".cypher"))
    return sorted(name for name in names if name != "schema")


def shipped(name: str) -> str:
    """The text of the shipped query ``name`` (e.g. ``gds_project``)."""
    return resources.files("pipeline").joinpath(QUERIES, f"{name}.cypher").read_text()


def query_text(query_or_file: str) -> str:
    """The query itself, or the text of a ``.cypher`` file (which must exist)."""
    path = Path(query_or_file)
    if path.suffix != ".cypher" or "\n" in query_or_file:
        return query_or_file
    if not path.is_file():
        raise UsageError(f"{path} does not exist; give a Cypher query or an existing .cypher file "
                         "(the project's cypher/ folder holds ready ones)")
    return path.read_text()


def run_query(query_or_file: str, params: dict[str, Any], conn=None, limit: int | None = None,
              progress: Progress = NULL) -> tuple[list[str], list[list[Any]]]:
    """(column names, rows) of a query; values reach the server only as parameters."""
    from pipeline.neo4j import db, server

    conn = conn or server.connection(progress)
    driver = server.driver(conn)
    try:
        with db.translate(conn.uri, "the query"):
            with driver.session() as session:
                result = session.run(query_text(query_or_file), params)
                keys = list(result.keys())
                rows = []
                for record in result:
                    rows.append(list(record.values()))
                    if limit is not None and len(rows) >= limit:
                        break
    finally:
        driver.close()
    return keys, rows
