"""Shared pytest set-up: quiet TensorFlow before anything imports it, and the Neo4j fixtures.

tests.neo4j_plugin also moves the managed server to the test session's own home and port
(``CNNGRAPH_TEST_HOME``, ``CNNGRAPH_TEST_NEO4J_PORT``) before any test runs: never the user's.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# as pipeline.model._quiet_tensorflow does, before a test module imports TensorFlow itself
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

pytest_plugins = ["tests.neo4j_plugin"]
