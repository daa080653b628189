"""Shared test helpers: tiny seeded Keras models, the replay check, and edge tables as sets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipeline.extract import extract, stream_edges
from pipeline.model import ModelGraph, randomize_biases, walk
from pipeline.model_files import quiet_tensorflow
from pipeline.plan import plan
from pipeline.replay import verify

#: Replay tolerance the tests hold the engine to (relative to the layer's largest output).
TOL = 1e-4


def keras():
    """The keras module, imported with TensorFlow's start-up chatter silenced."""
    quiet_tensorflow()
    import keras as k

    return k


def sequential(input_shape: Sequence[int], layers: Sequence[Any], seed: int = 0):
    """A seeded ``keras.Sequential([keras.Input(input_shape), *layers])`` with random biases."""
    k = keras()
    k.utils.set_random_seed(seed)
    model = k.Sequential([k.Input(tuple(input_shape)), *layers])
    randomize_biases(model, seed)
    return model


def tiny_cnn(after_pool: Sequence[Any] = (), seed: int = 0):
    """The suite's tiny CNN: 6x5x2 -> Conv2D(3, 3, same, relu) 'conv' -> MaxPooling2D(2) 'pool'
    [-> ``after_pool``] -> Flatten 'flat' -> Dense(4) 'fc' (seeded, random biases)."""
    L = keras().layers
    return sequential((6, 5, 2), [
        L.Conv2D(3, 3, padding="same", activation="relu", name="conv"),
        L.MaxPooling2D(2, name="pool"),
        *after_pool,
        L.Flatten(name="flat"),
        L.Dense(4, name="fc"),
    ], seed)


def functional(input_shape: Sequence[int], body: Callable[[Any], Any], seed: int = 0):
    """A seeded functional model ``keras.Model(inp, body(inp))`` with random biases."""
    k = keras()
    k.utils.set_random_seed(seed)
    inp = k.Input(tuple(input_shape))
    model = k.Model(inp, body(inp))
    randomize_biases(model, seed)
    return model


def check_model(model, samples: int = 2, seed: int = 0) -> tuple[ModelGraph, Any]:
    """Assert replay equals Keras and plan counts equal generated counts; return (graph, verify result).

    Counts are checked per layer against the analytic plan by ``extract(graph, None)`` (count
    only). Replay generates every edge once more (chunks whose arrays disagree in length would fail
    there), so the edges are generated twice, not three times.
    """
    graph = walk(model)
    result = verify(model, graph, samples=samples, seed=seed)
    assert result.errors, "verify compared no layer"
    assert result.ok and result.worst < TOL, f"replay differs from Keras: {result.errors}"
    the_plan = plan(graph)
    counted = extract(graph, None)
    assert counted.edges == the_plan.edges and counted.nodes == the_plan.nodes
    by_name = {e["name"]: e for e in counted.manifest["layers"]}
    for lp in the_plan.layers:
        assert by_name[lp.name]["edges"] == lp.edges, lp.name
        assert by_name[lp.name]["nodes"] == lp.nodes, lp.name
    assert the_plan.nodes == graph.total_neurons
    return graph, result


def layer_edges(graph: ModelGraph, name: str, max_edges: int = 1_000_000) -> set[tuple[int, int, int, str]]:
    """The edges of one layer as a set of (source, target, float32 weight bits, kind).

    Asserts that no edge appears twice (a set would hide that).
    """
    spec = graph.layer(name)
    rows: list[tuple[int, int, int, str]] = []
    for _, chunk in stream_edges(graph, [spec], max_edges):
        bits = np.asarray(chunk.weight, dtype=np.float32).view(np.uint32)
        rows.extend(zip(chunk.source.tolist(), chunk.target.tolist(), bits.tolist(), [chunk.kind] * len(chunk), strict=True))
    edges = set(rows)
    assert len(edges) == len(rows), f"layer {name} emits duplicate edges"
    return edges


def f32_bits(value: float) -> int:
    """The bit pattern of a value rounded to float32."""
    return int(np.array([value], dtype=np.float32).view(np.uint32)[0])
