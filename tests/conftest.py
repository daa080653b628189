"""Shared pytest set-up: quiet TensorFlow before anything imports it, and the Neo4j fixtures.

tests.neo4j_plugin also moves the managed server to the test session's own home and port
(``CNNGRAPH_TEST_HOME``, ``CNNGRAPH_TEST_NEO4J_PORT``) before any test runs: never the user's.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# as pipeline.model_files.quiet_tensorflow does, before a test module imports TensorFlow itself
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

pytest_plugins = ["tests.neo4j_plugin"]

#: Fixtures that reach the real Neo4j server: a test using one is marked ``neo4j``.
NEO4J_FIXTURES = {"neo4j_conn", "neo4j_driver"}


def pytest_collection_modifyitems(config, items):
    """Mark every test that talks to Neo4j (``-m neo4j`` runs them, ``-m "not neo4j"`` skips the server)."""
    import pytest

    for item in items:
        if NEO4J_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.neo4j)
