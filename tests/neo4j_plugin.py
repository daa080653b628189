"""Pytest fixtures for a real Neo4j server: ``neo4j_conn`` (session) and ``neo4j_driver``.

``NEO4J_URI`` (with ``NEO4J_USERNAME``/``NEO4J_PASSWORD``) selects an existing server; otherwise the
managed local server is installed and started if needed, and stopped at session end only when this
session started it. A missing server fails the tests: they never skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pipeline.errors import CnnGraphError
from pipeline.neo4j.server import Connection, ManagedServer, connection, driver


@pytest.fixture(scope="session")
def neo4j_conn() -> Iterator[Connection]:
    """How to reach the test server (started on demand; fails, never skips, without one)."""
    if os.environ.get("NEO4J_URI"):
        conn = connection(start=False)
        try:
            driver(conn).close()
        except CnnGraphError as err:
            pytest.fail(f"NEO4J_URI is set but the server is not usable: {err}", pytrace=False)
        yield conn
        return
    server = ManagedServer()
    started = not server.is_running()
    try:
        conn = server.start()
    except CnnGraphError as err:
        pytest.fail(f"cannot start the managed Neo4j server: {err}", pytrace=False)
    try:
        yield conn
    finally:
        if started:
            server.stop()


@pytest.fixture
def neo4j_driver(neo4j_conn: Connection):
    """A connected ``neo4j.Driver`` for one test, closed afterwards."""
    drv = driver(neo4j_conn)
    try:
        yield drv
    finally:
        drv.close()
