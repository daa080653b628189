"""Save a walked :class:`~pipeline.spec.ModelGraph` to a folder and map it back without TensorFlow.

Building a Keras model costs TensorFlow's memory (full VGG16, 138 M weights: 1.6 GB in the child
after the measures below, 2.56 GB before), and that memory never returns to the system.
:func:`isolated_graph` builds and walks the model in a short-lived child process that saves the
graph here (weights as ``.npy`` files, the rest pickled); the extracting process maps the weights
read-only, so it never imports TensorFlow and its worker processes share the weights through
the page cache.
"""

from __future__ import annotations

import copy
import math
import os
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
from pipeline.spec import ModelGraph, ModelSpec

GRAPH_FILE = "graph.pkl"
ERROR_FILE = "error.pkl"


def weight_file(folder: str | Path, index: int, name: str) -> Path:
    """Where the weight ``name`` of layer ``index`` lives in a saved graph's folder."""
    return Path(folder) / f"{index}-{name}.npy"


class WeightSpool:
    """A :func:`~pipeline.model.walk` reader that writes each variable to a file and maps it back.

    The walk then holds no copy of the weights beside TensorFlow's own; :func:`save_graph` links
    the spooled files to their final names instead of writing them again.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.files: dict[int, tuple[np.ndarray, Path]] = {}  # id(array) -> (array, file)

    def __call__(self, var) -> np.ndarray:
        value = np.asarray(var.numpy())
        if value.size == 0:  # an empty file cannot be mapped
            return value
        path = self.folder / f"spool-{len(self.files)}.npy"
        np.save(path, value)
        del value
        mapped = np.load(path, mmap_mode="r")
        self.files[id(mapped)] = (mapped, path)
        return mapped

    def remove(self) -> None:
        """Delete the spool files (arrays linked or mapped elsewhere stay valid)."""
        for _, path in self.files.values():
            path.unlink(missing_ok=True)
        self.files.clear()


def save_graph(graph: ModelGraph, folder: str | Path, spool: WeightSpool | None = None) -> Path:
    """Write graph to folder: one .npy file per weight array and the rest as a pickle.

    Arrays that ``spool`` wrote are hard-linked (or copied, where links fail) to their names.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spooled = spool.files if spool is not None else {}
    for spec in graph.layers:
        for name, value in spec.weights.items():
            target = weight_file(folder, spec.index, name)
            entry = spooled.get(id(value))
            if entry is not None and entry[0] is value:
                try:
                    os.link(entry[1], target)
                    continue
                except OSError:  # another filesystem, or no hard links: write it
                    pass
            np.save(target, np.asarray(value))
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
    return ModelGraph(graph.name, layers, graph.total_neurons, graph.spec, provenance=graph.provenance)


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
    env = dict(os.environ)
    # oneDNN keeps its scratch memory (2x the largest initialiser's output: 0.8 GB for VGG16's fc1)
    # for the life of the process; the child runs no convolutions, and the weights are the same.
    env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    # Keras shows the progress of an ImageNet download on stderr (pipeline.model_files.build_imagenet): let the
    # user see it; other builds keep stderr for the message of a crash.
    shown = spec.weights == "imagenet"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.model_store", str(folder)], stdout=subprocess.PIPE,
        stderr=None if shown else subprocess.PIPE, text=True, env=env,
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


#: Random draws of at least this many values run as a tf.function in the child (see _lean_random).
LEAN_RANDOM_MIN_SIZE = 1 << 20


@contextmanager
def _lean_random(min_size: int = LEAN_RANDOM_MIN_SIZE) -> Iterator[None]:
    """Run Keras's large seeded random draws as tf.functions while a model is built.

    Eagerly, ``uniform`` holds three full-size buffers at once (the raw draw, its scaled copy and
    the result: 1.2 GB for VGG16's fc1); in a graph TensorFlow reuses the dying buffer, one fewer.
    The ops, seeds and therefore the values are the same (tested). Keras versions without this
    module layout are left untouched.
    """
    from pipeline.model_files import quiet_tensorflow

    quiet_tensorflow()
    try:
        import tensorflow as tf
        from keras.src import backend
    except ImportError:
        yield
        return
    module = getattr(backend, "random", None)
    names = [n for n in ("uniform", "normal", "truncated_normal") if hasattr(module, n)]
    if backend.backend() != "tensorflow" or not names:
        yield
        return
    originals = {name: getattr(module, name) for name in names}

    def lean(draw):
        def call(shape, *args, seed=None, **kwargs):
            if isinstance(seed, int) and math.prod(shape) >= min_size:
                return tf.function(lambda: draw(shape, *args, seed=seed, **kwargs), autograph=False)()
            return draw(shape, *args, seed=seed, **kwargs)

        return call

    for name, draw in originals.items():
        setattr(module, name, lean(draw))
    try:
        yield
    finally:
        for name, draw in originals.items():
            setattr(module, name, draw)


def _child_main(folder: str) -> int:
    import logging

    from pipeline.model import build

    # _lean_random's one-off tf.functions make TensorFlow warn about retracing: noise on the user's
    # stderr, which an ImageNet download shares (build_in_child)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    path = Path(folder)
    with open(path / "spec.pkl", "rb") as fh:
        spec = pickle.load(fh)
    spool = WeightSpool(path)
    try:
        with _lean_random():
            _, graph = build(spec, spool)
        save_graph(graph, path, spool)
    except CnnGraphError as err:
        try:  # errors with structured constructors may not survive pickling: keep their message
            blob = pickle.dumps(err)
            pickle.loads(blob)
        except Exception:
            blob = pickle.dumps(ModelError(str(err)))
        (path / ERROR_FILE).write_bytes(blob)
        return 3
    finally:
        spool.remove()
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
