"""Save a walked :class:`~pipeline.model.ModelGraph` to a folder and map it back without TensorFlow.

Building a Keras model costs TensorFlow's memory: full VGG16 (138 M weights) peaks at ~2.5 GB RSS
before a single edge exists, and that memory never returns to the system. :func:`isolated_graph`
builds and walks the model in a short-lived child process that saves the graph here (weights as
``.npy`` files, the rest pickled); the extracting process maps the weights read-only, so it never
imports TensorFlow and its worker processes share the weights through the page cache.
"""

from __future__ import annotations

import copy
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from pipeline.errors import CnnGraphError, ModelError
from pipeline.model import ModelGraph, ModelSpec

GRAPH_FILE = "graph.pkl"
ERROR_FILE = "error.pkl"


def weight_file(folder: str | Path, index: int, name: str) -> Path:
    """Where the weight ``name`` of layer ``index`` lives in a saved graph's folder."""
    return Path(folder) / f"{index}-{name}.npy"


def save_graph(graph: ModelGraph, folder: str | Path) -> Path:
    """Write graph to folder: one .npy file per weight array and the rest as a pickle."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for spec in graph.layers:
        for name, value in spec.weights.items():
            np.save(weight_file(folder, spec.index, name), np.asarray(value))
    with open(folder / GRAPH_FILE, "wb") as fh:
        pickle.dump(without_weights(graph), fh, protocol=pickle.HIGHEST_PROTOCOL)
    return folder


def without_weights(graph: ModelGraph) -> ModelGraph:
    """A shallow copy of graph whose layers keep their weights' names but not their values."""
    layers = []
    for spec in graph.layers:
        light = copy.copy(spec)
        light.weights = dict.fromkeys(spec.weights)
        layers.append(light)
    return ModelGraph(graph.name, layers, graph.total_neurons, graph.spec)


def load_weights(graph: ModelGraph, folder: str | Path) -> ModelGraph:
    """Fill a skeleton's weights with read-only memory maps of the files in folder (in place)."""
    for spec in graph.layers:
        spec.weights = {name: np.load(weight_file(folder, spec.index, name), mmap_mode="r") for name in spec.weights}
    graph.weights_dir = str(folder)
    return graph


def load_graph(folder: str | Path) -> ModelGraph:
    """The graph saved in folder, its weights memory-mapped (the files must outlive the graph's use)."""
    with open(Path(folder) / GRAPH_FILE, "rb") as fh:
        graph = pickle.load(fh)
    return load_weights(graph, folder)


def build_in_child(spec: ModelSpec, folder: str | Path) -> ModelGraph:
    """Build and walk spec in a child process that saves the graph to folder; map it here.

    Errors the child raises on purpose (unknown model, bad input shape, unsupported layer) are
    raised here unchanged.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "spec.pkl", "wb") as fh:
        pickle.dump(spec, fh)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.graph_store", str(folder)], capture_output=True, text=True
    )
    if (folder / ERROR_FILE).exists():
        with open(folder / ERROR_FILE, "rb") as fh:
            raise pickle.load(fh)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise ModelError(f"building {spec.source} failed in its child process: {' | '.join(tail)}")
    return load_graph(folder)


@contextmanager
def isolated_graph(spec: ModelSpec, folder: str | Path | None = None) -> Iterator[ModelGraph]:
    """A walked graph of spec built in a child process; its files are removed on exit.

    Peak memory of the calling process stays that of the mapped weights actually touched.
    """
    own = folder is None
    path = Path(tempfile.mkdtemp(prefix="cnngraph-graph-")) if own else Path(folder)
    try:
        yield build_in_child(spec, path)
    finally:
        if own:
            shutil.rmtree(path, ignore_errors=True)


def _child_main(folder: str) -> int:
    from pipeline.model import build

    path = Path(folder)
    with open(path / "spec.pkl", "rb") as fh:
        spec = pickle.load(fh)
    try:
        _, graph = build(spec)
        save_graph(graph, path)
    except CnnGraphError as err:
        try:  # errors with structured constructors may not survive pickling: keep their message
            blob = pickle.dumps(err)
            pickle.loads(blob)
        except Exception:
            blob = pickle.dumps(ModelError(str(err)))
        (path / ERROR_FILE).write_bytes(blob)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
