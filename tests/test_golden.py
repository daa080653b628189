"""Golden files: the full node and edge tables of a tiny fixed model, compared exactly.

The model (input 4x4x1 -> Conv2D(2, 2, 'same', relu) -> MaxPooling2D(2) -> Flatten -> Dense(2,
softmax)) has hand-set, exactly representable weights, so the tables are stable across machines.
When edge generation changes on purpose, regenerate the files and review the diff:

    CNNGRAPH_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py
    git diff tests/golden/

Weights are written as ``str(numpy.float32)``, the shortest text that reads back to the same
float32, so comparing parsed values is bit-exact.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds

from pipeline import schema
from pipeline.extract import extract
from pipeline.model import walk
from pipeline.replay import verify
from tests.helpers import keras

GOLDEN = Path(__file__).parent / "golden"
EDGES_CSV = GOLDEN / "tiny_edges.csv"
NODES_CSV = GOLDEN / "tiny_nodes.csv"
REGEN = os.environ.get("CNNGRAPH_REGEN_GOLDEN") == "1"


def tiny_model():
    k = keras()
    L = k.layers
    inp = k.Input((4, 4, 1), name="input")
    x = L.Conv2D(2, 2, padding="same", activation="relu", name="conv")(inp)
    x = L.MaxPooling2D(2, name="pool")(x)
    x = L.Flatten(name="flat")(x)
    out = L.Dense(2, activation="softmax", name="fc")(x)
    model = k.Model(inp, out, name="tiny")
    kernel = np.array([[[[1, -2]], [[2, 1]]], [[[-1, 3]], [[4, -1]]]], dtype=np.float32) / 4
    model.get_layer("conv").set_weights([kernel, np.array([0.5, -0.25], np.float32)])
    dense = (np.arange(16, dtype=np.float32).reshape(8, 2) - 7) / 8
    model.get_layer("fc").set_weights([dense, np.array([0.125, -1.0], np.float32)])
    return model


def _f32(value) -> str:
    return str(np.float32(value))


def engine_tables(out: Path) -> tuple[list[list[str]], list[list[str]]]:
    """(edge rows, node rows) as text, sorted, from an extraction folder."""
    edges = ds.dataset(out / schema.EDGES_DIR).to_table().to_pylist()
    nodes = ds.dataset(out / schema.NODES_DIR).to_table().to_pylist()
    edge_rows = sorted(
        ([e[schema.SOURCE], e[schema.TARGET], _f32(e[schema.WEIGHT]), e[schema.KIND]] for e in edges),
        key=lambda r: (r[1], r[0]),
    )
    node_rows = sorted(
        ([n[c] if c != schema.BIAS else _f32(n[c]) for c in schema.NODE_COLUMNS] for n in nodes),
        key=lambda r: r[0],
    )
    return [[str(v) for v in r] for r in edge_rows], [[str(v) for v in r] for r in node_rows]


def _write(path: Path, header, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def test_tiny_model_matches_golden_files(tmp_path):
    model = tiny_model()
    graph = walk(model)
    extract(graph, tmp_path / "out")
    edge_rows, node_rows = engine_tables(tmp_path / "out")
    if REGEN:
        _write(EDGES_CSV, schema.EDGE_COLUMNS, edge_rows)
        _write(NODES_CSV, schema.NODE_COLUMNS, node_rows)
    header, golden_edges = _read(EDGES_CSV)
    assert tuple(header) == schema.EDGE_COLUMNS
    # Weights compared as float32 bits, not as text.
    as_bits = lambda rows: [(int(s), int(t), np.float32(w).view(np.uint32).item(), k) for s, t, w, k in rows]  # noqa: E731
    assert as_bits(edge_rows) == as_bits(golden_edges), (
        "edges differ from tests/golden/tiny_edges.csv; if intended, regenerate (see module docstring)"
    )
    header, golden_nodes = _read(NODES_CSV)
    assert tuple(header) == schema.NODE_COLUMNS
    assert node_rows == golden_nodes, "nodes differ from tests/golden/tiny_nodes.csv"


def test_golden_files_are_complete_and_replay():
    """The golden tables have the expected sizes, and the model they describe replays exactly."""
    _, edges = _read(EDGES_CSV)
    _, nodes = _read(NODES_CSV)
    # conv 'same' 2x2 on 4x4: 3x3 positions with 4 members, 3+3 with 2, 1 with 1 -> 49 per (ci, co)
    assert len(edges) == 49 * 2 + 2 * 2 * 2 * 4 + 8 * 2
    assert len(nodes) == 16 + 32 + 8 + 2
    assert [int(n[0]) for n in nodes] == list(range(58))
    model = tiny_model()
    result = verify(model, walk(model), samples=3)
    assert result.ok and result.worst < 1e-5
    kinds = {e[3] for e in edges}
    assert kinds == {"conv", "max_pool", "dense"}
