"""Shared pytest set-up: quiet TensorFlow before anything imports it, and the Neo4j fixtures."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

pytest_plugins = ["tests.neo4j_plugin"]
