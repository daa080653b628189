"""Run one Cypher query (text or a ``cypher/`` file) with parameters, for ``cnngraph cypher``."""

from __future__ import annotations

import json
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
