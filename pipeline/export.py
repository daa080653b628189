"""The export stage: select a subgraph of a model's neuron graph and hand it to a sink.

Sources (:func:`open_source`): a model (a keras.applications name, a ``.keras`` file, a
:class:`~pipeline.model.ModelSpec` or a walked :class:`~pipeline.model.ModelGraph`; edges are made
on the fly by the layer translators), a folder written by ``cnngraph extract`` (read from its
Parquet files), or ``neo4j:NAME`` (a model loaded into Neo4j).

Selections (all optional, combinable):

* ``layers="A:B"``: edges whose *target* neuron is in a layer from A to B (model order, names or
  indexes, inclusive; either side may be empty).
* ``min_abs_weight=T``: edges with ``|weight| >= T``.
* ``top_k_in=K``: per target neuron, its K incoming edges of largest ``|weight|`` (ties: smaller
  source id first), after ``min_abs_weight``.
* ``upstream_of=`` / ``downstream_of="LAYER:INDEX"`` (or a list), with ``depth=K``: the cone of
  these neurons in the graph the filters above define: every edge into (upstream) or out of
  (downstream) a neuron less than K steps from them, i.e. the edges a depth-K breadth-first
  search crosses. ``depth=None``: no limit. INDEX is a position ``h,w,c`` or a flat unit number.
  Both given: the union of the two cones.
* ``cypher="..."`` (Neo4j only): the relationships a query returns; the other filters (not the
  cones) then apply to them.

The exported graph holds the selected edges and their endpoints (plus the cone seeds), with
node attributes ``layer``, ``layer_type``, ``d``, ``h``, ``w``, ``c``, ``bias``, ``activation``
and edge attributes ``weight`` and ``kind``. Sinks: :func:`to_networkx`, :func:`write_graphml`,
:func:`write_parquet`. Each refuses a selection over its size limit (:data:`LIMITS`) with
:class:`ExportTooLarge` unless ``force=True``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import schema, storage
from pipeline.errors import OutputError, UsageError, disk_full_as, is_disk_full
from pipeline.extract import node_table
from pipeline.plan import BYTES_PER_EDGE, BYTES_PER_NODE, human_bytes
from pipeline.progress import NULL, Progress

#: Largest number of edges each sink accepts without ``force=True``.
LIMITS = {"networkx": 20_000_000, "graphml": 200_000_000, "parquet": 2_000_000_000}
#: Edges per chunk read from a source.
CHUNK_EDGES = 2_000_000
NEO4J_PREFIX = "neo4j:"


class ExportTooLarge(UsageError):
    """The selection exceeds a sink's size limit; the message names the knobs that shrink it."""

    def __init__(self, sink: str, edges: int, nodes: int, limit: int, exact: bool):
        self.sink, self.edges, self.nodes, self.limit = sink, edges, nodes, limit
        self.bytes = int(edges * BYTES_PER_EDGE[sink] + nodes * BYTES_PER_NODE[sink])
        what = f"{edges:,} edges and {nodes:,} nodes" if exact else f"more than {limit:,} edges"
        super().__init__(
            f"the selection has {what} (about {human_bytes(self.bytes)} as {sink}), over the {sink} "
            f"limit of {limit:,} edges; shrink it with --layers, --upstream-of/--downstream-of with "
            "--depth, --min-abs-weight, --top-k-in or a smaller --input-shape, or pass --force "
            "to go ahead"
        )


# ---------------------------------------------------------------------------------------------
# Edge batches


#: Edge kinds by code; unknown kinds read from files or Neo4j are appended.
KINDS: list[str] = [v for k, v in vars(schema.Kind).items() if not k.startswith("_")]


_KINDS_LOCK = threading.Lock()


def kind_code(name: str) -> int:
    if name not in KINDS:
        with _KINDS_LOCK:  # Neo4j batches are decoded in fetch threads
            if name not in KINDS:
                KINDS.append(name)
    return KINDS.index(name)


@dataclass
class Edges:
    """A batch of edges as columns; ``kind`` holds codes into :data:`KINDS`; ``extra`` the
    coarse-granularity columns (``schema.EXTRA_EDGE_COLUMNS``: kernel slices, tensor shapes)."""

    source: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    kind: np.ndarray
    extra: dict[str, pa.Array] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.source)

    @classmethod
    def of(cls, source, target, weight, kind: str | np.ndarray) -> Edges:
        s = np.asarray(source, dtype=np.int64)
        codes = np.full(len(s), kind_code(kind), np.uint8) if isinstance(kind, str) else kind
        return cls(s, np.asarray(target, np.int64), np.asarray(weight, np.float32), codes)

    def take(self, idx: np.ndarray | slice) -> Edges:
        if isinstance(idx, slice):
            extra = {k: v[idx] for k, v in self.extra.items()}
        else:
            extra = {k: v.take(pa.array(idx, pa.int64())) for k, v in self.extra.items()}
        return Edges(self.source[idx], self.target[idx], self.weight[idx], self.kind[idx], extra)

    @classmethod
    def concat(cls, parts: list[Edges]) -> Edges:
        parts = [p for p in parts if len(p)] or parts[:1]
        if not parts:
            return cls.of(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32),
                          np.zeros(0, np.uint8))
        extra = {k: pa.concat_arrays([p.extra[k] for p in parts]) for k in parts[0].extra}
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("source", "target", "weight", "kind")),
                   extra)

    def table(self) -> pa.Table:
        """The edges in the extraction schema (with the coarse columns they carry)."""
        kind = pa.DictionaryArray.from_arrays(pa.array(self.kind.astype(np.int32)), pa.array(KINDS))
        cols = {schema.SOURCE: self.source, schema.TARGET: self.target, schema.WEIGHT: self.weight,
                schema.KIND: kind, **self.extra}
        fields = [*schema.EDGE_SCHEMA, *(pa.field(k, v.type) for k, v in self.extra.items())]
        return pa.table(cols, schema=pa.schema(fields))


class IdSet:
    """A growable bitmap of neuron ids (ids are dense, so this is at most one byte per neuron)."""

    def __init__(self, size: int = 0):
        self.bits = np.zeros(size, bool)

    def add(self, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        top = int(ids.max()) + 1
        if top > len(self.bits):
            grown = np.zeros(max(top, 2 * len(self.bits)), bool)
            grown[: len(self.bits)] = self.bits
            self.bits = grown
        self.bits[ids] = True

    def contains(self, ids: np.ndarray) -> np.ndarray:
        ok = ids < len(self.bits)
        out = np.zeros(len(ids), bool)
        out[ok] = self.bits[ids[ok]]
        return out

    def ids(self) -> np.ndarray:
        return np.flatnonzero(self.bits).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Sources


@dataclass
class LayerInfo:
    """What the selection engine needs to know of a layer, from any source."""

    index: int
    name: str
    type: str
    offset: int  # first id of the layer's output tensor (an alias: of the tensor it re-indexes)
    shape: tuple[int, ...]
    owns: bool  # the layer makes its own neurons
    edges: int
    inputs: list[tuple[int, int]] = field(default_factory=list)  # id ranges of its input tensors

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def stop(self) -> int:
        return self.offset + self.size


class Source:
    """Where edges and nodes come from. Subclasses narrow the work for ``targets``/``sources``."""

    name: str
    layers: list[LayerInfo]
    #: The extraction's granularity (schema.GRANULARITIES); coarse ones carry extra columns.
    granularity: str = schema.NEURON

    @property
    def extra_edge_columns(self) -> list[pa.Field]:
        """Edge columns beyond the neuron schema that this source's edges carry."""
        return [f for f in schema.edge_schema(self.granularity) if f.name in schema.EXTRA_EDGE_COLUMNS]

    @property
    def extra_node_columns(self) -> list[pa.Field]:
        """Node columns beyond the neuron schema that this source's node tables carry."""
        return [f for f in schema.node_schema(self.granularity) if f.name in schema.EXTRA_NODE_COLUMNS]

    def edges(self, layer: LayerInfo, targets: np.ndarray | None = None,
              sources: np.ndarray | None = None) -> Iterator[Edges]:
        """The edges into ``layer``'s neurons (a superset is fine when targets/sources are given:
        the caller filters exactly)."""
        raise NotImplementedError

    def nodes(self, ids: np.ndarray) -> pa.Table:
        """The node table (schema.NODE_SCHEMA) of sorted unique ``ids``, in id order."""
        raise NotImplementedError

    def cypher(self, query: str) -> Iterator[Edges]:
        raise UsageError("--cypher selects from a model loaded into Neo4j: use SOURCE neo4j:NAME")

    def close(self) -> None:
        pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # shared helpers
    def owner(self, ids: np.ndarray) -> np.ndarray:
        """Index into ``self.owners`` of the layer owning each id."""
        starts = np.array([la.offset for la in self.owners], np.int64)
        return np.searchsorted(starts, ids, side="right") - 1

    @property
    def owners(self) -> list[LayerInfo]:
        cached = getattr(self, "_owners", None)
        if cached is None:
            cached = self._owners = sorted((la for la in self.layers if la.owns), key=lambda la: la.offset)
        return cached


def _concat_nodes(tables: list[pa.Table], granularity: str = schema.NEURON) -> pa.Table:
    if not tables:
        return schema.node_schema(granularity).empty_table()
    table = pa.concat_tables(tables).unify_dictionaries()
    return table.combine_chunks()


def _batch_runs(runs: list[tuple[int, int]], size: int) -> Iterator[tuple[list[int], list[int]]]:
    """[lo, hi) runs as (los, his) lists covering at most ``size`` ids each (long runs split)."""
    los: list[int] = []
    his: list[int] = []
    room = size
    for lo, hi in runs:
        while lo < hi:
            take = min(hi - lo, room)
            los.append(lo)
            his.append(lo + take)
            lo += take
            room -= take
            if room == 0:
                yield los, his
                los, his, room = [], [], size
    if los:
        yield los, his


def _runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """Sorted unique ints as [lo, hi) runs."""
    if len(rows) == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) > 1) + 1
    starts = rows[np.r_[0, breaks]]
    stops = rows[np.r_[breaks - 1, len(rows) - 1]] + 1
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


class ModelSource(Source):
    """Edges generated on the fly from a walked model (no database, no files)."""

    def __init__(self, graph):
        from pipeline.layers import registry

        self.graph = graph
        self.name = graph.name
        self._registry = registry
        self.layers = [
            LayerInfo(s.index, s.name, s.type, s.output.offset, tuple(s.output.shape), s.makes_neurons,
                      registry.get(s.type, s.name).count_edges(s),
                      [(t.offset, t.offset + t.size) for t in s.inputs])
            for s in graph.layers
        ]

    def _row_ranges(self, spec, tr, targets, sources) -> list[tuple[int, int]]:
        from pipeline.layers.activation import Activation
        from pipeline.layers.conv import Windowed
        from pipeline.layers.dense import Dense

        rows = tr.rows(spec)
        output_rows = isinstance(tr, (Windowed, Activation))  # rows are output rows
        if targets is not None and output_rows:
            per_row = math.prod(spec.output.shape[1:])
            return _runs(np.unique((targets - spec.output.offset) // per_row))
        if sources is not None and len(spec.inputs) == 1:
            src_t = spec.inputs[0]
            flat = sources - src_t.offset
            if isinstance(tr, Dense):  # rows are input units
                return _runs(np.unique(flat % src_t.shape[-1]))
            in_rows = np.unique(flat // math.prod(src_t.shape[1:]))
            if isinstance(tr, Activation):
                return _runs(in_rows)
            if isinstance(tr, Windowed):
                window = tr.window(spec)
                out = [o[np.isin(i, in_rows)] for k in range(window.kernel[0])
                       for o, i in [window.axis_valid(0, k)]]
                return _runs(np.unique(np.concatenate(out)))
        return [(0, rows)]

    def edges(self, layer, targets=None, sources=None):
        spec = self.graph.layers[layer.index]
        tr = self._registry.get(spec.type, spec.name)
        for lo, hi in self._row_ranges(spec, tr, targets, sources):
            for chunk in tr.edges(spec, lo, hi, CHUNK_EDGES):
                yield Edges.of(chunk.source, chunk.target, chunk.weight, chunk.kind)

    def nodes(self, ids):
        tables = []
        owner = self.owner(ids)
        for k in np.unique(owner):
            la = self.owners[k]
            tables.append(node_table(self.graph.layers[la.index], ids[owner == k] - la.offset))
        return _concat_nodes(tables)


class FolderSource(Source):
    """An extraction folder: edges and nodes read from its Parquet files, row groups skipped by
    their statistics when only some targets or sources are wanted."""

    def __init__(self, folder: str | Path, check: bool = True):
        from pipeline.dataset import check_files
        from pipeline.extract import read_manifest

        self.folder = Path(folder)
        self.manifest = read_manifest(folder)
        if check:  # a missing or changed part file is named here, not met as a pyarrow error later
            check_files(self.folder, self.manifest)
        self.name = self.manifest["model"].get("name", self.folder.name)
        self.granularity = self.manifest.get("granularity", schema.NEURON)
        entries = sorted(self.manifest["layers"], key=lambda e: e["index"])
        by_name = {e["name"]: e for e in entries}
        self.entries = {e["index"]: e for e in entries}
        self.layers = [
            LayerInfo(e["index"], e["name"], e["type"], e["id_start"], tuple(e["output_shape"]),
                      e["nodes"] > 0, 0 if e.get("boundary") else e["edges"],
                      [(by_name[n]["id_start"], by_name[n]["id_stop"]) for n in e.get("inbound", []) if n in by_name])
            for e in entries
        ]

    def _batches(self, files: list[str], column: str, wanted: np.ndarray | None):
        import pyarrow.parquet as pq

        for rel in files:
            pf = pq.ParquetFile(self.folder / rel)
            names = pf.schema_arrow.names
            for g in range(pf.num_row_groups):
                if wanted is not None:
                    stats = pf.metadata.row_group(g).column(names.index(column)).statistics
                    if stats is not None and stats.has_min_max:
                        lo, hi = np.searchsorted(wanted, [stats.min, stats.max + 1])
                        if lo == hi:
                            continue
                yield from pf.iter_batches(CHUNK_EDGES, row_groups=[g])

    def edges(self, layer, targets=None, sources=None):
        entry = self.entries[layer.index]
        column, wanted = (schema.TARGET, targets) if targets is not None else (schema.SOURCE, sources)
        for batch in self._batches(entry.get("edge_files", []), column, wanted):
            kind = batch.column(schema.KIND)
            lut = np.array([kind_code(k) for k in kind.dictionary.to_pylist()], np.uint8)
            yield Edges(batch.column(schema.SOURCE).to_numpy(), batch.column(schema.TARGET).to_numpy(),
                        batch.column(schema.WEIGHT).to_numpy(), lut[kind.indices.to_numpy()],
                        {f.name: batch.column(f.name) for f in self.extra_edge_columns})

    def nodes(self, ids):
        owner = self.owner(ids)
        tables = []
        for k in np.unique(owner):
            la = self.owners[k]
            mine = ids[owner == k]
            for batch in self._batches(self.entries[la.index].get("node_files", []), schema.ID, mine):
                table = pa.Table.from_batches([batch])
                got = batch.column(schema.ID).to_numpy()
                keep = np.isin(got, mine, assume_unique=True)
                if keep.any():
                    tables.append(table.filter(pa.array(keep)))
        table = _concat_nodes(tables, self.granularity)
        return table.take(np.argsort(table.column(schema.ID).to_numpy(), kind="stable"))


class Neo4jSource(Source):
    """A model loaded into Neo4j, read with batched list-valued queries: one record per batch
    holding a column per field (``collect(...)``), never a record per edge."""

    #: Edges fetched per query.
    BATCH_EDGES = 250_000
    #: Edge queries running at once (the server works on the next batches while this process
    #: decodes and builds the previous ones).
    PARALLEL = 2
    #: Nodes fetched per query.
    BATCH_NODES = 200_000

    def __init__(self, model: str, conn=None, progress: Progress = NULL):
        from pipeline.neo4j import graph as g
        from pipeline.neo4j import server

        self.model = g.validate_name(model)
        self.name = model
        self.conn = conn or server.connection(progress=progress)
        self._translate = g.translate
        self.driver = server.driver(self.conn)
        # internal node id -> neuron id, sorted by internal id (see _neuron_ids)
        self._ids_lock = threading.Lock()
        self._internal = self._neuron = np.zeros(0, np.int64)
        try:
            with self._translate(self.conn.uri, f"export of {model!r}"):
                self._read_layers()
        except BaseException:
            self.driver.close()
            raise

    def _query(self, query: str, **params) -> list:
        with self._translate(self.conn.uri, f"export of {self.model!r}"):
            records, _, _ = self.driver.execute_query(query, params, routing_="r")
        return records

    def _read_layers(self) -> None:
        from pipeline.neo4j import graph as g

        props = g.require_usable(self.driver, self.model, self.conn.uri)
        self.granularity = props.get("granularity") or schema.NEURON
        rows = self._query(
            "MATCH (l:Layer {model: $m}) OPTIONAL MATCH (p:Layer)-[:FEEDS]->(l) "
            "WITH l, collect(p.name) AS inbound RETURN l.name AS name, l.type AS type, l.index AS index, "
            "l.output_shape AS shape, l.nodes AS nodes, l.edges AS edges, inbound ORDER BY index", m=self.model)
        starts = {r["layer"]: r["lo"] for r in self._query(
            "MATCH (n:Neuron {model: $m}) RETURN n.layer AS layer, min(n.id) AS lo", m=self.model)}
        offset: dict[str, int] = {}
        for r in rows:  # aliases (no neurons) take the ids of the tensor they re-index
            offset[r["name"]] = starts.get(r["name"], offset.get((r["inbound"] or [""])[0], 0))
        self.layers = [
            LayerInfo(r["index"], r["name"], r["type"], offset[r["name"]], tuple(r["shape"]), r["nodes"] > 0,
                      r["edges"], [(offset[p], offset[p] + math.prod(next(x["shape"] for x in rows if x["name"] == p)))
                                   for p in r["inbound"] if p in offset])
            for r in rows
        ]

    # id(a), not a.id: a property read per edge costs the server about a third of the query;
    # the neuron ids of sources are looked up once per node (_neuron_ids). b.id is free: the
    # match on it caches it.
    _RETURN = ("RETURN collect(id(a)) AS s, collect(b.id) AS t, collect(r.weight) AS w, "
               "collect(DISTINCT r.kind) AS ks")

    def _batch(self, match: str, params: dict) -> Edges:
        """One batch of edges; runs in a fetch thread. Kinds come back as one distinct list; only
        a batch that mixes kinds is read again with a kind per edge."""
        extra = self.extra_edge_columns
        query = match + self._RETURN + "".join(f", collect(r.{f.name}) AS {f.name}" for f in extra)
        rec = self._query(query, m=self.model, **params)[0]
        if len(rec["ks"]) > 1:
            rec = self._query(query.replace("collect(DISTINCT r.kind) AS ks", "collect(r.kind) AS k"),
                              m=self.model, **params)[0]
            codes = np.array([kind_code(k) for k in rec["k"]], np.uint8)
        else:
            codes = np.full(len(rec["s"]), kind_code(rec["ks"][0]) if rec["ks"] else 0, np.uint8)
        return Edges(self._neuron_ids(np.array(rec["s"], np.int64)), np.array(rec["t"], np.int64),
                     np.array(rec["w"], np.float64).astype(np.float32), codes,
                     {f.name: pa.array(rec[f.name], f.type) for f in extra})

    def _neuron_ids(self, internal: np.ndarray) -> np.ndarray:
        """The neuron ids of internal node ids; unknown ones are read (one query per batch of
        them, a direct record lookup each) and kept for the rest of the export."""

        def lookup():
            with self._ids_lock:
                known, values = self._internal, self._neuron
            pos = np.minimum(np.searchsorted(known, internal), max(len(known) - 1, 0))
            hit = known[pos] == internal if len(known) else np.zeros(len(internal), bool)
            return values, pos, hit

        values, pos, hit = lookup()
        if hit.all():
            return values[pos]
        miss = np.unique(internal[~hit])
        got_i, got_n = [], []
        for lo in range(0, len(miss), self.BATCH_NODES):
            rec = self._query("UNWIND $x AS i MATCH (n) WHERE id(n) = i RETURN collect(i) AS i, collect(n.id) AS n",
                              x=miss[lo : lo + self.BATCH_NODES].tolist())[0]
            got_i.append(np.array(rec["i"], np.int64))
            got_n.append(np.array(rec["n"], np.int64))
        if sum(map(len, got_i)) != len(miss):
            raise OutputError(f"neurons of model {self.model!r} disappeared from Neo4j during the export; "
                              "rerun it once loads and drops are done")
        with self._ids_lock:
            both = np.concatenate([self._internal, *got_i])
            uniq, first = np.unique(both, return_index=True)
            self._internal, self._neuron = uniq, np.concatenate([self._neuron, *got_n])[first]
        values, pos, hit = lookup()
        return values[pos]

    def _fetch(self, batches: list[tuple[str, dict]]) -> Iterator[Edges]:
        """The edges of each (match, params) batch, in order, with up to :attr:`PARALLEL` queries
        running ahead in threads: the server reads the next batches while the caller works."""
        from collections import deque

        if len(batches) <= 1:
            for match, params in batches:
                yield self._batch(match, params)
            return
        pool = ThreadPoolExecutor(self.PARALLEL, thread_name_prefix="cnngraph-export")
        todo = iter(batches)
        running: deque = deque()
        try:
            for match, params in todo:
                running.append(pool.submit(self._batch, match, params))
                if len(running) == self.PARALLEL:
                    break
            while running:
                edges = running.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    running.append(pool.submit(self._batch, *nxt))
                yield edges
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def edges(self, layer, targets=None, sources=None):
        fan_in = max(1, -(-layer.edges // max(layer.size, 1))) if layer.owns else 1
        batches: list[tuple[str, dict]] = []
        if targets is not None:
            step = max(1, self.BATCH_EDGES // fan_in)
            batches = [("UNWIND $ids AS i MATCH (b:Neuron {model: $m, id: i}) MATCH (a)-[r:CONNECTS]->(b) ",
                        {"ids": targets[lo:lo + step].tolist()}) for lo in range(0, len(targets), step)]
        elif sources is not None:
            fan_out = max(1, -(-layer.edges // max(1, sum(hi - lo for lo, hi in layer.inputs))))
            step = max(1, self.BATCH_EDGES // fan_out)
            batches = [("UNWIND $ids AS i MATCH (a:Neuron {model: $m, id: i}) "
                        "MATCH (a)-[r:CONNECTS]->(b) WHERE b.id >= $lo AND b.id < $hi ",
                        {"ids": sources[lo:lo + step].tolist(), "lo": layer.offset, "hi": layer.stop})
                       for lo in range(0, len(sources), step)]
        elif layer.owns:
            step = max(1, self.BATCH_EDGES // fan_in)
            batches = [("MATCH (b:Neuron {model: $m}) WHERE b.id >= $lo AND b.id < $hi "
                        "MATCH (a)-[r:CONNECTS]->(b) ", {"lo": lo, "hi": min(lo + step, layer.stop)})
                       for lo in range(layer.offset, layer.stop, step)]
        yield from self._fetch(batches)

    def nodes(self, ids):
        """Runs of consecutive ids are read with one index range seek each (a layer or a slice of
        one is a single run), not one seek per id."""
        tables = []
        types = {la.name: la.type for la in self.layers}
        for lo, hi in _batch_runs(_runs(ids), self.BATCH_NODES):
            rec = self._query(
                "UNWIND range(0, size($lo) - 1) AS k MATCH (n:Neuron {model: $m}) WHERE n.id >= $lo[k] AND n.id < $hi[k] "
                "RETURN collect(n.id) AS id, collect(n.layer) AS layer, "
                + ", ".join(f"collect(coalesce(n.{p}, -1)) AS {p}" for p in schema.POSITION)
                + ", collect(n.bias) AS bias, collect(n.activation) AS act"
                + "".join(f", collect(n.{f.name}) AS {f.name}" for f in self.extra_node_columns),
                m=self.model, lo=lo, hi=hi)[0]
            layer = pa.array(rec["layer"], pa.string()).dictionary_encode()
            ltype = pa.array([types.get(v, "") for v in layer.dictionary.to_pylist()], pa.string())
            tables.append(pa.table({
                schema.ID: np.array(rec["id"], np.int64),
                schema.LAYER: layer,
                schema.LAYER_TYPE: pa.DictionaryArray.from_arrays(layer.indices, ltype),
                **{p: np.array(rec[p], np.int32) for p in schema.POSITION},
                schema.BIAS: np.array(rec["bias"], np.float64).astype(np.float32),
                schema.ACTIVATION: pa.array(rec["act"], pa.string()).dictionary_encode(),
                **{f.name: pa.array(rec[f.name], f.type) for f in self.extra_node_columns},
            }, schema=schema.node_schema(self.granularity)))
        table = _concat_nodes(tables, self.granularity)
        got = table.column(schema.ID).to_numpy()
        if len(got) != len(ids):
            missing = np.setdiff1d(ids, got)[:5].tolist()
            raise OutputError(f"neurons {missing} of model {self.model!r} are missing in Neo4j; reload it")
        return table.take(np.argsort(got, kind="stable"))

    def cypher(self, query: str):
        """Relationships returned by any query (values, lists or paths), as edges."""
        import neo4j.graph as ng

        rels: dict[str, Any] = {}

        def visit(value):
            if isinstance(value, ng.Relationship):
                rels[value.element_id] = value
            elif isinstance(value, ng.Path):
                for r in value.relationships:
                    rels[r.element_id] = r
            elif isinstance(value, list):
                for v in value:
                    visit(v)

        with self._translate(self.conn.uri, "the --cypher query"), self.driver.session() as session:
            for record in session.run(query):
                for value in record.values():
                    visit(value)
        if not rels:
            return
        rs = [r for r in rels.values() if r.type == "CONNECTS"]
        eids = sorted({n.element_id for r in rs for n in (r.start_node, r.end_node)})
        rec = self._query("UNWIND $e AS e MATCH (n) WHERE elementId(n) = e RETURN collect(e) AS e, "
                          "collect(n.id) AS id", e=eids)[0]
        nid = dict(zip(rec["e"], rec["id"], strict=True))
        yield Edges(np.array([nid[r.start_node.element_id] for r in rs], np.int64),
                    np.array([nid[r.end_node.element_id] for r in rs], np.int64),
                    np.array([r["weight"] for r in rs], np.float64).astype(np.float32),
                    np.array([kind_code(r["kind"]) for r in rs], np.uint8))

    def close(self) -> None:
        self.driver.close()


def open_source(source, conn=None, check: bool = True) -> Source:
    """A :class:`Source` for a model name or file, a ModelSpec, a ModelGraph, an extraction
    folder or ``neo4j:NAME`` (``conn``: a ``pipeline.neo4j.server.Connection``); ``check``:
    verify a folder's files against its manifest's sha256 first."""
    from pipeline.model import ModelGraph, ModelSpec, build

    if isinstance(source, Source):
        return source
    if isinstance(source, ModelGraph):
        return ModelSource(source)
    if isinstance(source, ModelSpec):
        return ModelSource(build(source)[1])
    text = str(source)
    if text.startswith(NEO4J_PREFIX):
        return Neo4jSource(text[len(NEO4J_PREFIX):], conn)
    path = Path(text)
    if path.is_dir():
        return FolderSource(path, check)
    return ModelSource(build(ModelSpec(text))[1])


# ---------------------------------------------------------------------------------------------
# Selection


@dataclass
class Selection:
    layers: str | None = None
    upstream_of: list[str] = field(default_factory=list)
    downstream_of: list[str] = field(default_factory=list)
    depth: int | None = None
    min_abs_weight: float | None = None
    top_k_in: int | None = None
    cypher: str | None = None

    @classmethod
    def make(cls, layers=None, upstream_of=None, downstream_of=None, depth=None, min_abs_weight=None,
             top_k_in=None, cypher=None) -> Selection:
        def listify(v):
            return [] if v is None else [v] if isinstance(v, str | tuple) else list(v)

        sel = cls(layers, listify(upstream_of), listify(downstream_of), depth, min_abs_weight, top_k_in, cypher)
        if depth is not None and depth < 0:
            raise UsageError(f"bad depth {depth}: give 0 or more")
        if top_k_in is not None and top_k_in < 1:
            raise UsageError(f"bad top-k-in {top_k_in}: give 1 or more")
        if min_abs_weight is not None and not min_abs_weight >= 0:
            raise UsageError(f"bad min-abs-weight {min_abs_weight}: give 0 or more")
        if depth is not None and not (sel.upstream_of or sel.downstream_of):
            raise UsageError("--depth applies to --upstream-of/--downstream-of; give one of them")
        if cypher and (sel.upstream_of or sel.downstream_of):
            raise UsageError("--cypher cannot be combined with --upstream-of/--downstream-of")
        return sel

    @property
    def cones(self) -> bool:
        return bool(self.upstream_of or self.downstream_of)


def layer_range(src: Source, text: str | None) -> list[LayerInfo]:
    """Layers in ``FIRST:LAST`` (names or indexes, inclusive; either side may be empty)."""
    layers = src.layers
    if not text:
        return list(layers)
    if ":" not in text:
        raise UsageError(f"bad layer range {text!r}: expected FIRST:LAST, e.g. block1_conv1:block2_pool")

    def position(token: str) -> int:
        if re.fullmatch(r"-?\d+", token):
            i = int(token)
            if not -len(layers) <= i < len(layers):
                raise UsageError(f"layer index {i} out of range 0..{len(layers) - 1}")
            return i % len(layers)
        for k, la in enumerate(layers):
            if la.name == token:
                return k
        raise UsageError(f"no layer named {token!r}; layers: {', '.join(la.name for la in layers)}")

    first, last = text.split(":", 1)
    lo = position(first) if first else 0
    hi = position(last) if last else len(layers) - 1
    if lo > hi:
        raise UsageError(f"bad layer range {text!r}: {first} comes after {last}")
    return layers[lo : hi + 1]


def neuron_id(src: Source, text: str | tuple) -> int:
    """The id of ``LAYER:INDEX`` (INDEX: ``h,w,c`` position or flat unit number)."""
    if isinstance(text, tuple):
        layer_name, index = text[0], text[1]
    else:
        if ":" not in text:
            raise UsageError(f"bad neuron {text!r}: expected LAYER:INDEX, e.g. block5_conv3:0,0,7 or predictions:281")
        layer_name, index = text.rsplit(":", 1)
    layer = next((la for la in src.layers if la.name == layer_name), None)
    if layer is None:
        raise UsageError(f"no layer named {layer_name!r}; layers: {', '.join(la.name for la in src.layers)}")
    try:
        pos = tuple(int(p) for p in str(index).split(",")) if isinstance(index, str) else (
            tuple(index) if isinstance(index, (tuple, list)) else (int(index),))
    except ValueError:
        raise UsageError(f"bad neuron index {index!r}: give a unit number or a position like 3,4,7") from None
    if len(pos) == 1:
        flat = pos[0]
        if not 0 <= flat < layer.size:
            raise UsageError(f"unit {flat} is out of range 0..{layer.size - 1} of layer {layer.name}")
    else:
        if len(pos) != len(layer.shape):
            axes = ",".join("hwc"[-len(layer.shape):]) if len(layer.shape) <= 3 else f"{len(layer.shape)} numbers"
            raise UsageError(f"position {index} has {len(pos)} coordinates but layer {layer.name} of shape "
                             f"{layer.shape} has {len(layer.shape)} axes; give {axes} or one unit number")
        if any(not 0 <= p < s for p, s in zip(pos, layer.shape, strict=True)):
            raise UsageError(f"position {index} is outside layer {layer.name} of shape {layer.shape}")
        flat = int(np.ravel_multi_index(pos, layer.shape))
    return layer.offset + flat


def _top_k(e: Edges, k: int) -> Edges:
    """Per target, the k edges of largest |weight| (ties: smaller source first)."""
    if len(e) == 0:
        return e
    order = np.lexsort((e.source, -np.abs(e.weight), e.target))
    t = e.target[order]
    start = np.r_[0, np.flatnonzero(np.diff(t)) + 1]
    rank = np.arange(len(t)) - np.repeat(start, np.diff(np.r_[start, len(t)]))
    return e.take(order[rank < k])


class Engine:
    """Streams the selected edges of a source; counts them and remembers their endpoints."""

    def __init__(self, src: Source, sel: Selection, limit: int | None, sink: str, progress: Progress = NULL):
        self.src, self.sel, self.limit, self.sink, self.progress = src, sel, limit, sink, progress
        self.chosen = layer_range(src, sel.layers)
        self.in_range = {la.index for la in self.chosen}
        self.nodes = IdSet()
        self.count = 0
        self.sized: int | None = None  # edges counted by check_size, when it had to count
        self.seeds = np.zeros(0, np.int64)

    # -- size
    def estimate(self) -> tuple[int, bool]:
        """(edges, exact) before any work: exact without weight filters, cones or Cypher."""
        total = 0
        for la in self.chosen:
            e = la.edges
            if self.sel.top_k_in is not None and la.owns:
                e = min(e, self.sel.top_k_in * la.size)
            total += e
        exact = not (self.sel.cones or self.sel.cypher or self.sel.min_abs_weight)
        return total, exact and self.sel.top_k_in is None

    def check_size(self, force: bool) -> None:
        """Refuse a selection over the limit before anything is written.

        Exact selections are refused from the layer counts. A selection whose size is only bounded
        (cones, weight filters) and whose bound exceeds the limit is counted first, without writing
        or keeping anything, stopping as soon as it passes the limit.
        """
        edges, exact = self.estimate()
        if force or self.limit is None or self.sel.cypher or edges <= self.limit:
            return
        if exact:
            nodes = sum(la.size for la in self.chosen if la.owns)
            raise ExportTooLarge(self.sink, edges, nodes, self.limit, True)
        self.progress.start(edges, "edges", f"size {self.sink} (at most)")
        counted = 0
        try:
            for e in self._stream():
                counted += len(e)
                self.progress.advance(len(e))
                if counted > self.limit:
                    raise ExportTooLarge(self.sink, counted, 0, self.limit, False)
        finally:
            self.progress.finish()
        self.sized = counted

    def describe(self) -> str:
        """The selection's size in words, before the work: exact, counted, or an upper bound."""
        edges, exact = self.estimate()
        if self.sized is not None:
            edges, exact = self.sized, True
        if self.sel.cypher:
            return "the edges the Cypher query returns (size known only afterwards)"
        size = human_bytes(edges * BYTES_PER_EDGE[self.sink])
        return f"{'' if exact else 'at most '}{edges:,} edges (about {size} as {self.sink})"

    def _account(self, e: Edges, force: bool) -> None:
        self.count += len(e)
        if not force and self.limit is not None and self.count > self.limit:
            raise ExportTooLarge(self.sink, self.count, 0, self.limit, False)
        self.nodes.add(e.source)
        self.nodes.add(e.target)
        self.progress.advance(len(e))

    # -- filters
    def _filter(self, e: Edges, targets=None, sources=None) -> Edges:
        keep = np.ones(len(e), bool)
        if targets is not None:
            keep &= _member(e.target, targets)
        if sources is not None:
            keep &= _member(e.source, sources)
        if self.sel.min_abs_weight:
            keep &= np.abs(e.weight) >= np.float32(self.sel.min_abs_weight)
        return e if keep.all() else e.take(np.flatnonzero(keep))

    def layer_edges(self, la: LayerInfo, targets=None, sources=None) -> Iterator[Edges]:
        """Edges of G' (range and weight filters) into layer la, restricted to targets/sources."""
        k = self.sel.top_k_in
        if k is not None and sources is not None:  # top-k needs every edge into the targets
            hit = [self._filter(e, sources=sources).target for e in self.src.edges(la, sources=sources)]
            t = np.unique(np.concatenate(hit)) if hit else np.zeros(0, np.int64)
            if targets is not None:
                t = t[_member(t, targets)]
            if len(t):
                for e in self.layer_edges(la, targets=t):
                    e = self._filter(e, sources=sources)
                    if len(e):
                        yield e
            return
        if k is None:
            for e in self.src.edges(la, targets, sources):
                e = self._filter(e, targets, sources)
                if len(e):
                    yield e
            return
        kept = Edges.concat([])
        for e in self.src.edges(la, targets, sources):
            kept = _top_k(Edges.concat([kept, self._filter(e, targets)]), k)
        if len(kept):
            yield kept

    # -- traversal
    def _stream(self) -> Iterator[Edges]:
        sel = self.sel
        if sel.cypher:
            return self._cypher()
        if sel.cones:
            return self._cones()
        return (e for la in self.chosen if la.edges for e in self.layer_edges(la))

    def run(self, force: bool = False) -> Iterator[Edges]:
        for e in self._stream():
            self._account(e, force)
            yield e
        self.nodes.add(self.seeds)

    def _cypher(self) -> Iterator[Edges]:
        got = Edges.concat(list(self.src.cypher(self.sel.cypher)))
        if self.sel.layers:
            owner = self.src.owner(got.target)
            ok = np.array([self.src.owners[o].index in self.in_range for o in owner], bool) if len(owner) else owner >= 0
            got = got.take(np.flatnonzero(ok))
        got = self._filter(got)
        if self.sel.top_k_in is not None:
            got = _top_k(got, self.sel.top_k_in)
        if len(got):
            yield got

    def _cones(self) -> Iterator[Edges]:
        up = np.unique(np.array([neuron_id(self.src, s) for s in self.sel.upstream_of], np.int64))
        down = np.unique(np.array([neuron_id(self.src, s) for s in self.sel.downstream_of], np.int64))
        self.seeds = np.union1d(up, down)
        if len(up):
            yield from self._bfs(up, upstream=True)
        if len(down):
            yield from self._bfs(down, upstream=False)

    def _bfs(self, frontier: np.ndarray, upstream: bool) -> Iterator[Edges]:
        seen = IdSet()
        seen.add(frontier)
        depth = 0
        while len(frontier) and (self.sel.depth is None or depth < self.sel.depth):
            found = []
            if upstream:
                owner = self.src.owner(frontier)
                for k in np.unique(owner):
                    la = self.src.owners[k]
                    if la.index not in self.in_range:
                        continue
                    for e in self.layer_edges(la, targets=frontier[owner == k]):
                        found.append(e.source)
                        yield e
            else:
                for la in self.chosen:
                    mine = frontier[np.zeros(len(frontier), bool) | _in_ranges(frontier, la.inputs)]
                    if not len(mine) or not la.edges:
                        continue
                    for e in self.layer_edges(la, sources=mine):
                        found.append(e.target)
                        yield e
            nxt = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
            frontier = nxt[~seen.contains(nxt)]
            seen.add(frontier)
            depth += 1


def _member(values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """values in wanted (sorted unique), via a bitmap over wanted's span."""
    if len(wanted) == 0:
        return np.zeros(len(values), bool)
    lo, hi = int(wanted[0]), int(wanted[-1])
    if hi - lo > 64 * max(len(values), len(wanted)):
        return np.isin(values, wanted)
    bits = np.zeros(hi - lo + 1, bool)
    bits[wanted - lo] = True
    ok = (values >= lo) & (values <= hi)
    out = np.zeros(len(values), bool)
    out[ok] = bits[values[ok] - lo]
    return out


def _in_ranges(ids: np.ndarray, ranges: list[tuple[int, int]]) -> np.ndarray:
    out = np.zeros(len(ids), bool)
    for lo, hi in ranges:
        out |= (ids >= lo) & (ids < hi)
    return out


# ---------------------------------------------------------------------------------------------
# Sinks: the public API


@dataclass
class ExportResult:
    """What an export wrote."""

    path: Path | None
    format: str
    nodes: int
    edges: int
    seconds: float
    bytes: int = 0


def _session(source, selection: dict, sink: str, limit, force, progress, conn, check):
    sel = Selection.make(**selection)
    src = open_source(source, conn, check)
    engine = Engine(src, sel, LIMITS[sink] if limit is None else limit, sink, progress)
    try:
        engine.check_size(force)
    except BaseException:
        if src is not source:
            src.close()
        raise
    edges, _ = engine.estimate()
    progress.message(f"exporting {engine.describe()}")
    progress.start(engine.sized if engine.sized is not None else edges, "edges", f"export {sink}")
    return src, engine


def _source_paths(source) -> list[Path]:
    """The files and folders a source reads (a model file, a weights file, an extraction folder)."""
    from pipeline.model import ModelSpec

    if isinstance(source, ModelSpec):
        paths = [source.source, source.weights]
    elif isinstance(source, FolderSource):
        paths = [source.folder]
    elif isinstance(source, (str, os.PathLike)) and not str(source).startswith(NEO4J_PREFIX):
        paths = [source]
    else:
        paths = []
    return [Path(p).resolve() for p in paths if isinstance(p, (str, os.PathLike)) and Path(p).exists()]


def check_out(source, out: Path) -> None:
    """Refuse an output that is, holds, or lies inside what the source reads."""
    target = out.resolve()
    for path in _source_paths(source):
        if target == path or path in target.parents or target in path.parents:
            raise OutputError(f"{out} would write over the source {path}; nothing was written; choose "
                              "another --out")


def _node_tables(src: Source, ids: np.ndarray, chunk: int = 1_000_000) -> Iterator[pa.Table]:
    for lo in range(0, len(ids), chunk):
        yield src.nodes(ids[lo : lo + chunk])


def to_networkx(source, *, force: bool = False, limit: int | None = None, progress: Progress = NULL,
                conn=None, check: bool = True, **selection):
    """The selected subgraph as a ``networkx.DiGraph``.

    Parameters
    ----------
    source : model name or file, ModelSpec, ModelGraph, extraction folder, or ``"neo4j:NAME"``.
    force : build it even when it exceeds ``limit`` (default ``LIMITS["networkx"]`` edges).
    check : for a folder, verify its files against the manifest's sha256 first.
    **selection : ``layers``, ``upstream_of``, ``downstream_of``, ``depth``, ``min_abs_weight``,
        ``top_k_in``, ``cypher`` (see the module docstring).

    Returns
    -------
    networkx.DiGraph with int node keys (neuron ids), node attributes ``layer``, ``layer_type``,
    ``d``, ``h``, ``w``, ``c``, ``bias``, ``activation`` and edge attributes ``weight``, ``kind``
    (plus the coarse columns of a channel- or layer-level source, as lists).

    Raises
    ------
    ExportTooLarge, UsageError (bad selection), ModelError, OutputError, Neo4jError.

    Examples
    --------
    >>> from pipeline.model import ModelSpec
    >>> G = to_networkx(ModelSpec("vgg16", (32, 32, 3), include_top=False), layers="block1_conv1:block1_conv1")
    >>> G.number_of_edges()
    1769472
    """
    import networkx as nx

    from pipeline.sinks import networkx as nx_sink

    src, engine = _session(source, selection, "networkx", limit, force, progress, conn, check)
    try:
        parts, data = [], []
        for e in engine.run(force):  # attribute dicts made while a Neo4j source reads ahead
            parts.append(e)
            data.append(nx_sink.edge_data(e.weight, e.kind, KINDS, e.extra))
        edges = Edges.concat(parts)
        del parts
        data = list(chain.from_iterable(data))
        ids = engine.nodes.ids()
        keys = np.empty(len(ids), dtype=object)
        keys[:] = ids.tolist()
        G = nx.DiGraph(name=src.name)
        G.add_nodes_from(keys.tolist())  # id order; attributes come below
        with ThreadPoolExecutor(1, thread_name_prefix="cnngraph-export") as pool:
            tables = pool.submit(lambda: list(_node_tables(src, ids)))  # read while edges go in
            for lo in range(0, len(edges), CHUNK_EDGES):
                e = edges.take(slice(lo, lo + CHUNK_EDGES))
                nx_sink.add_edges(G, ids, keys, e.source, e.target, data[lo : lo + CHUNK_EDGES])
            del data
            for t in tables.result():
                nx_sink.add_nodes(G, t)
    finally:
        progress.finish()
        if src is not source:
            src.close()
    return G


def write_graphml(source, path: str | Path, *, force: bool = False, overwrite: bool = False,
                  limit: int | None = None, progress: Progress = NULL, conn=None, check: bool = True,
                  **selection) -> ExportResult:
    """Write the selected subgraph as a directed GraphML file (streaming, bounded memory).

    Same source and selection as :func:`to_networkx`; readable by ``networkx.read_graphml``
    (``node_type=int`` gives int keys) and ``igraph.Graph.Read_GraphML``. Weights are written so
    they read back to the same float32. The file appears only when complete; an existing file is
    replaced only with ``overwrite=True``, and never the source itself.
    """
    from pipeline.sinks.graphml import (
        GraphMLWriter,
        check_target,
        graphml_value,
        graphml_value_type,
        graphml_values,
    )

    t0 = time.perf_counter()
    path = Path(path)
    check_out(source, path)
    check_target(path, overwrite)
    src, engine = _session(source, selection, "graphml", limit, force, progress, conn, check)
    try:
        # Coarse columns: lists become JSON text ("[0.25, -1.5]"), GraphML has no list type.
        node_attrs = [(f.name, graphml_value_type(f.type)) for f in schema.node_schema(src.granularity)
                      if f.name != schema.ID]
        edge_attrs = [(schema.WEIGHT, pa.float32()), (schema.KIND, pa.string()),
                      *((f.name, graphml_value_type(f.type)) for f in src.extra_edge_columns)]
        with disk_full_as(Path(path).parent, "the GraphML export", f"no file was left at {path}; free "
                          "some space or choose another --out"), GraphMLWriter(path, node_attrs, edge_attrs, overwrite) as writer:
            for e in engine.run(force):
                writer.edges(e.source, e.target, {schema.WEIGHT: e.weight, schema.KIND: _kinds(e.kind),
                                                  **{k: graphml_value(v) for k, v in e.extra.items()}})
            ids = engine.nodes.ids()
            writer.close(graphml_values(t) for t in _node_tables(src, ids))
    finally:
        progress.finish()
        if src is not source:
            src.close()
    return ExportResult(Path(path), "graphml", len(ids), engine.count, time.perf_counter() - t0, writer.bytes)


def _kinds(codes: np.ndarray) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(KINDS))


#: Kind of folder a Parquet export is (pipeline.storage ownership marker).
EXPORT_KIND = "export"
EXPORT_FORMAT = "cnngraph-export/1"


def _is_legacy_export(folder: Path) -> bool:
    """An export folder of a cnngraph older than the ownership marker: our selection.json."""
    try:
        return json.loads((folder / "selection.json").read_text()).get("format") == EXPORT_FORMAT
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return False


def write_parquet(source, folder: str | Path, *, force: bool = False, limit: int | None = None,
                  progress: Progress = NULL, conn=None, check: bool = True, **selection) -> ExportResult:
    """Write the selected subgraph as Parquet in the extraction schema: ``FOLDER/edges/*.parquet``,
    ``FOLDER/nodes/*.parquet`` and ``FOLDER/selection.json``.

    Built in a fresh temporary folder beside FOLDER and renamed when complete; an existing FOLDER
    is replaced only when it is provably an earlier export of ours (ownership marker), never the
    source.
    """
    import pyarrow.parquet as pq

    from pipeline.extract import parquet_options

    t0 = time.perf_counter()
    out = Path(folder)
    check_out(source, out)
    _check_export_folder(out)
    src, engine = _session(source, selection, "parquet", limit, force, progress, conn, check)
    with disk_full_as(out.parent, "the Parquet export", f"nothing new was written to {out}; free some space "
                      "or choose another --out"):
        tmp = None
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
            (tmp / schema.EDGES_DIR).mkdir()
            (tmp / schema.NODES_DIR).mkdir()
            edge_schema, node_schema = schema.edge_schema(src.granularity), schema.node_schema(src.granularity)
            writer = pq.ParquetWriter(tmp / schema.EDGES_DIR / "part-00000.parquet", edge_schema,
                                      **parquet_options(edge_schema))
            try:
                for e in engine.run(force):
                    writer.write_table(e.table().cast(edge_schema))
            finally:
                writer.close()
            ids = engine.nodes.ids()
            nodes_writer = pq.ParquetWriter(tmp / schema.NODES_DIR / "part-00000.parquet", node_schema,
                                            **parquet_options(node_schema))
            try:
                for t in _node_tables(src, ids):
                    nodes_writer.write_table(t.cast(node_schema))
            finally:
                nodes_writer.close()
            info = {"format": EXPORT_FORMAT, "model": src.name, "selection": selection,
                    "nodes": int(len(ids)), "edges": int(engine.count)}
            (tmp / "selection.json").write_text(json.dumps(info, indent=1, default=str))
            tmp.chmod(0o777 & ~storage.umask())  # mkdtemp makes 0700; the result is an ordinary folder
            storage.write_owner(tmp, EXPORT_KIND)
            _replace_export(tmp, out)
            tmp = None
        except OSError as err:
            if is_disk_full(err):
                raise
            raise OutputError(f"cannot write {out}: {err.strerror or err}; nothing new was written; "
                              "choose another --out") from err
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)  # our own fresh temporary folder
            progress.finish()
            if src is not source:
                src.close()
    return ExportResult(out, "parquet", len(ids), engine.count, time.perf_counter() - t0)


def _check_export_folder(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputError(f"{out} exists and is not a folder; nothing was changed; choose another --out")
    if out.exists() and any(out.iterdir()) and not storage.owns(out, EXPORT_KIND, _is_legacy_export):
        raise OutputError(f"{out} is not empty and is not a cnngraph export folder (it has no "
                          f"{storage.OWNER_FILE} of ours); nothing in it was changed; choose another --out")


def _replace_export(tmp: Path, out: Path) -> None:
    """Move the finished export in; an earlier export of ours is moved aside first, then removed."""
    if not out.exists():
        os.rename(tmp, out)
        return
    _check_export_folder(out)  # again: it may have changed while the export ran
    old = storage.temp_sibling(out)
    os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old)


def export(source, out: str | Path, format: str = "graphml", **kwargs: Any) -> ExportResult:
    """Write the selection to ``out`` in ``format`` (``graphml`` or ``parquet``)."""
    if format == "graphml":
        return write_graphml(source, out, **kwargs)
    if format == "parquet":
        return write_parquet(source, out, **kwargs)
    raise UsageError(f"unknown export format {format!r}; use graphml or parquet")
