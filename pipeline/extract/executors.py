"""Executors: who runs the extract stage's independent tasks (layer x block of rows).

Every executor runs the same :func:`pipeline.extract.tasks.run_task` on the same tasks, and each task
writes one file whose name and bytes depend only on the task; so the output (files, checksums)
is the same whatever runs it and however many workers it has.

- :class:`LocalExecutor`: in this process (1 worker) or a pool of spawned processes that map the
  weights read-only from ``.npy`` files (one copy in the page cache, shared by all workers).
- :class:`DaskExecutor`: the tasks of a Dask distributed cluster; each layer's weights are sent to
  the workers once. Needs ``pip install 'cnngraph[dask]'``; output must be storage every worker
  can reach (a shared folder, or an fsspec URL such as ``s3://bucket/run``).

Other stages (``pipeline.analyze``) run their own task function on the same workers through
:meth:`LocalExecutor.session` / :meth:`DaskExecutor.session`: one pool for many ``map`` calls, each
with a context of numpy arrays that every task reads (memory-mapped files locally, scattered once
per call on Dask).
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pipeline.errors import UsageError
from pipeline.layers.base import Task
from pipeline.spec import ModelGraph
from pipeline.storage import DASK_EXTRA, RemotePath

EXECUTORS = ("local", "dask")


class Executor(Protocol):
    def run(self, graph: ModelGraph, tasks: list[Task], out: Path | RemotePath | None, max_edges: int) -> Iterator[Any]:
        """Run every task; yield each TaskResult as it completes (any order)."""
        ...


#: A task function for :meth:`TaskMap.map`: ``fn(graph, task, context) -> result`` (module level, so
#: that it pickles by name).
TaskFn = Callable[[ModelGraph, Task, dict], Any]


class TaskMap(Protocol):
    def map(self, fn: TaskFn, tasks: list[Task], context: dict) -> Iterator[Any]:
        """Run ``fn(graph, task, context)`` for every task; yield the results as they complete."""
        ...


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class LocalExecutor:
    """Tasks in this process (workers=1) or in a pool of local worker processes."""

    def __init__(self, workers: int | None = None):
        self.workers = default_workers() if workers is None else max(1, int(workers))

    def run(self, graph: ModelGraph, tasks: list[Task], out: Path | RemotePath | None, max_edges: int) -> Iterator[Any]:
        from pipeline.extract.tasks import run_task

        if self.workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                yield run_task(graph, task, out, max_edges)
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        from pipeline.model_store import save_graph, without_weights

        ctx = multiprocessing.get_context("spawn")
        with ExitStack() as stack:
            wdir = graph.weights_dir
            if wdir is None or not Path(wdir).is_dir():  # weights in memory: save them once, map them in workers
                wdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="cnngraph-weights-"))
                save_graph(graph, wdir)
            light = without_weights(graph)
            with ProcessPoolExecutor(
                min(self.workers, len(tasks)), mp_context=ctx, initializer=_init_worker, initargs=(light, wdir)
            ) as pool:
                futures = [pool.submit(_run_in_worker, t, out, max_edges) for t in tasks]
                try:
                    for fut in as_completed(futures):
                        yield fut.result()
                finally:
                    for fut in futures:
                        fut.cancel()


    @contextmanager
    def session(self, graph: ModelGraph) -> Iterator[TaskMap]:
        """One pool of workers (none for workers=1) for many :meth:`TaskMap.map` calls."""
        if self.workers <= 1:
            yield _InProcessMap(graph)
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from pipeline.model_store import save_graph, without_weights

        ctx = multiprocessing.get_context("spawn")
        with ExitStack() as stack:
            wdir = graph.weights_dir
            if wdir is None or not Path(wdir).is_dir():
                wdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="cnngraph-weights-"))
                save_graph(graph, wdir)
            shared = stack.enter_context(tempfile.TemporaryDirectory(prefix="cnngraph-context-"))
            pool = stack.enter_context(ProcessPoolExecutor(
                self.workers, mp_context=ctx, initializer=_init_worker, initargs=(without_weights(graph), wdir)))
            yield _PoolMap(pool, Path(shared))


class _InProcessMap:
    def __init__(self, graph: ModelGraph):
        self.graph = graph

    def map(self, fn: TaskFn, tasks: list[Task], context: dict) -> Iterator[Any]:
        for task in tasks:
            yield fn(self.graph, task, context)


@dataclass(frozen=True)
class _Mapped:
    """A context array saved as a .npy file that workers memory-map (one copy in the page cache)."""

    path: str


class _PoolMap:
    def __init__(self, pool, folder: Path):
        self.pool, self.folder, self.calls = pool, folder, 0

    def map(self, fn: TaskFn, tasks: list[Task], context: dict) -> Iterator[Any]:
        from concurrent.futures import as_completed

        import numpy as np

        self.calls += 1
        files, sent = [], {}
        for name, value in context.items():
            if isinstance(value, np.ndarray) and value.size:
                path = self.folder / f"{self.calls}-{len(files)}.npy"
                np.save(path, value)
                files.append(path)
                sent[name] = _Mapped(str(path))
            else:
                sent[name] = value
        futures = [self.pool.submit(_map_in_worker, fn, t, sent) for t in tasks]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        finally:
            for fut in futures:
                fut.cancel()
            for path in files:  # workers that still map a file keep it until they move on
                path.unlink(missing_ok=True)


_WORKER_GRAPH: ModelGraph | None = None
_WORKER_MAPS: dict[str, Any] = {}


def _map_in_worker(fn: TaskFn, task: Task, context: dict):
    import numpy as np

    paths = {v.path for v in context.values() if isinstance(v, _Mapped)}
    for stale in set(_WORKER_MAPS) - paths:  # an earlier call's arrays
        del _WORKER_MAPS[stale]
    resolved = {}
    for name, value in context.items():
        if isinstance(value, _Mapped):
            if value.path not in _WORKER_MAPS:
                _WORKER_MAPS[value.path] = np.load(value.path, mmap_mode="r")
            value = _WORKER_MAPS[value.path]
        resolved[name] = value
    assert _WORKER_GRAPH is not None
    return fn(_WORKER_GRAPH, task, resolved)


def _init_worker(graph: ModelGraph, weights_dir: str) -> None:
    """Receive the graph without weights; map the weights from .npy files (shared page cache)."""
    global _WORKER_GRAPH
    from pipeline.model_store import load_weights

    _WORKER_GRAPH = load_weights(graph, weights_dir)


def _run_in_worker(task: Task, out: Path | RemotePath | None, max_edges: int):
    from pipeline.extract.tasks import run_task

    assert _WORKER_GRAPH is not None
    return run_task(_WORKER_GRAPH, task, out, max_edges)


class DaskExecutor:
    """Tasks on a Dask distributed cluster (a scheduler address, or a ``distributed.Client``)."""

    def __init__(self, scheduler: Any):
        try:
            import distributed
        except ImportError as err:
            raise UsageError(f"the dask executor needs dask.distributed: {DASK_EXTRA}") from err
        if scheduler is None:
            raise UsageError("the dask executor needs --scheduler ADDRESS (e.g. tcp://10.0.0.5:8786)")
        self._own = not isinstance(scheduler, distributed.Client)
        self.scheduler = scheduler

    def _client(self):
        import distributed

        if not self._own:
            return self.scheduler
        try:
            return distributed.Client(self.scheduler, timeout="30s")
        except (OSError, TimeoutError) as err:
            raise UsageError(f"cannot reach the Dask scheduler at {self.scheduler}: {err}") from err

    def run(self, graph: ModelGraph, tasks: list[Task], out: Path | RemotePath | None, max_edges: int) -> Iterator[Any]:
        import distributed

        from pipeline.extract.tasks import run_task

        if isinstance(out, Path):
            out = out.resolve()  # workers may run elsewhere: an absolute path on shared storage
        client = self._client()
        try:
            per_layer: dict[int, Any] = {}
            futures = []
            for task in tasks:
                if task.layer not in per_layer:  # each layer's weights travel once, to workers that need them
                    per_layer[task.layer] = client.scatter(_one_layer(graph, task.layer), hash=False)
                futures.append(client.submit(run_task, per_layer[task.layer], task, out, max_edges, pure=False))
            try:
                for fut in distributed.as_completed(futures):
                    yield fut.result()
                    fut.release()
            finally:
                client.cancel(futures)
        finally:
            if self._own:
                client.close()


    @contextmanager
    def session(self, graph: ModelGraph) -> Iterator[TaskMap]:
        """The cluster for many :meth:`TaskMap.map` calls (each layer's weights travel once)."""
        client = self._client()
        try:
            yield _DaskMap(client, graph)
        finally:
            if self._own:
                client.close()


class _DaskMap:
    def __init__(self, client, graph: ModelGraph):
        self.client, self.graph, self.per_layer = client, graph, {}

    def map(self, fn: TaskFn, tasks: list[Task], context: dict) -> Iterator[Any]:
        import distributed

        shared = self.client.scatter([context], broadcast=True, hash=False)[0]
        futures = []
        for task in tasks:
            if task.layer not in self.per_layer:
                self.per_layer[task.layer] = self.client.scatter(_one_layer(self.graph, task.layer), hash=False)
            futures.append(self.client.submit(fn, self.per_layer[task.layer], task, shared, pure=False))
        try:
            for fut in distributed.as_completed(futures):
                yield fut.result()
                fut.release()
        finally:
            self.client.cancel(futures)


def _one_layer(graph: ModelGraph, index: int) -> ModelGraph:
    """The graph with only layer index's weights, as plain arrays (memory maps do not travel)."""
    import numpy as np

    from pipeline.model_store import without_weights

    light = without_weights(graph)
    spec = copy.copy(graph.layers[index])
    spec.weights = {k: np.ascontiguousarray(v) for k, v in spec.weights.items()}
    light.layers[index] = spec
    return light


def make_executor(name: str = "local", workers: int | None = None, scheduler: Any = None) -> Executor:
    """An executor by name: ``local`` (workers processes; default: the cores) or ``dask``."""
    if name == "local":
        return LocalExecutor(workers)
    if name == "dask":
        return DaskExecutor(scheduler)
    raise UsageError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
