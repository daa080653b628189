"""README's `eval "$(cnngraph neo4j env)"`, then a bulk load: NEO4J_URI is the managed server itself.

Not collected by the suite on its own (no ``test_`` prefix): the sentinel test of
tests/test_neo4j_safety_server.py runs it in an inner pytest session whose default home is a
stand-in for the user's, so this one bulk load (``--replace`` wipes the database it reaches) also
proves that the suite's cnngraph processes reach only the test server. Run it alone with
``pytest tests/neo4j_env_bulk.py``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.neo4j.server import ManagedServer, driver

ROOT = Path(__file__).resolve().parents[1]
CNNGRAPH = str(Path(sys.executable).with_name("cnngraph"))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny extracted CNN (Conv2D -> Flatten -> Dense)."""
    from pipeline.extract import extract
    from pipeline.model import walk
    from tests.helpers import keras, sequential

    k = keras()
    model = sequential((4, 4, 1), [k.layers.Conv2D(2, 3), k.layers.Flatten(), k.layers.Dense(2)], seed=3)
    out = tmp_path_factory.mktemp("envbulk") / "tiny"
    extract(walk(model), out)
    return out


def test_bulk_load_after_neo4j_env(neo4j_conn, tiny_dir: Path) -> None:
    if os.environ.get("NEO4J_URI"):
        pytest.fail("this test bulk-loads into the managed server: unset NEO4J_URI")
    script = (f'eval "$({CNNGRAPH} neo4j env)" && {CNNGRAPH} load {shlex.quote(str(tiny_dir))} '
              "--mode bulk --replace --model-name envbulk -s")
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=dict(os.environ), cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    with driver(ManagedServer().connection_info()) as drv:
        records = drv.execute_query("MATCH (n:Neuron {model: 'envbulk'}) RETURN count(n) AS n").records
    assert records[0]["n"] == json.loads((tiny_dir / "manifest.json").read_text())["nodes"]
