"""The ``neo4j:NAME`` export source: a model loaded into Neo4j, read with batched list-valued
queries, with up to :attr:`Neo4jSource.PARALLEL` edge queries running ahead in threads and the
neuron ids of internal node ids cached for the rest of the export.

Each layer's id range comes from its ``:Layer {id_start, id_stop}`` properties (stored by both
loaders from the manifest). A model loaded by an older cnngraph lacks them; its ranges are then
recomputed from the neurons (one scan of the model's ``:Neuron`` nodes), aliasing layers taking the
ids of the tensor they re-index.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from pipeline import schema
from pipeline.errors import OutputError
from pipeline.export.base import LayerInfo, Source, concat_nodes
from pipeline.export.edges import Edges, batch_runs, kind_code, runs
from pipeline.progress import NULL, Progress

if TYPE_CHECKING:
    from pipeline.neo4j.server import Connection

#: The query that recomputes layer id ranges for models loaded without ``:Layer`` id ranges.
NEURON_SCAN = "MATCH (n:Neuron {model: $m}) RETURN n.layer AS layer, min(n.id) AS lo"


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

    def __init__(self, model: str, conn: Connection | None = None, progress: Progress = NULL):
        from pipeline.neo4j import db, server

        self.model = db.validate_name(model)
        self.name = model
        self.conn = conn or server.connection(progress=progress)
        self._translate = db.translate
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
        from pipeline.neo4j import db

        props = db.require_usable(self.driver, self.model, self.conn.uri)
        self.granularity = props.get("granularity") or schema.NEURON
        rows = self._query(
            "MATCH (l:Layer {model: $m}) OPTIONAL MATCH (p:Layer)-[:FEEDS]->(l) "
            "WITH l, collect(p.name) AS inbound RETURN l.name AS name, l.type AS type, l.index AS index, "
            "l.output_shape AS shape, l.nodes AS nodes, l.edges AS edges, l.id_start AS id_start, "
            "l.id_stop AS id_stop, inbound ORDER BY index", m=self.model)
        if rows and all(r["id_start"] is not None and r["id_stop"] is not None for r in rows):
            span = {r["name"]: (r["id_start"], r["id_stop"]) for r in rows}
        else:  # loaded by a cnngraph that did not store the ranges
            span = self._scanned_spans(rows)
        self.layers = [
            LayerInfo(r["index"], r["name"], r["type"], span[r["name"]][0], tuple(r["shape"]), r["nodes"] > 0,
                      r["edges"], [span[p] for p in r["inbound"] if p in span])
            for r in rows
        ]

    def _scanned_spans(self, rows: list) -> dict[str, tuple[int, int]]:
        """Layer id ranges recomputed from the neurons: each owning layer starts at its smallest
        neuron id; an alias (no neurons) takes the ids of the tensor it re-indexes."""
        starts = {r["layer"]: r["lo"] for r in self._query(NEURON_SCAN, m=self.model)}
        offset: dict[str, int] = {}
        for r in rows:
            offset[r["name"]] = starts.get(r["name"], offset.get((r["inbound"] or [""])[0], 0))
        return {r["name"]: (offset[r["name"]], offset[r["name"]] + math.prod(r["shape"])) for r in rows}

    # id(a), not a.id: a property read per edge costs the server about a third of the query;
    # the neuron ids of sources are looked up once per node (_neuron_ids). b.id is free: the
    # match on it caches it. Kinds: min and max per batch cost the server a few percent, where
    # collect(DISTINCT r.kind) (a hash set per edge) cost a third; a batch whose min and max
    # differ (a layer mixing kinds: none of the shipped layer types) is read again with a kind
    # per edge.
    _RETURN = ("RETURN collect(id(a)) AS s, collect(b.id) AS t, collect(r.weight) AS w, "
               "min(r.kind) AS k0, max(r.kind) AS k1")

    def _batch(self, match: str, params: dict) -> Edges:
        """One batch of edges; runs in a fetch thread."""
        extra = self.extra_edge_columns
        query = match + self._RETURN + "".join(f", collect(r.{f.name}) AS {f.name}" for f in extra)
        rec = self._query(query, m=self.model, **params)[0]
        if rec["k0"] != rec["k1"]:
            rec = self._query(query.replace("min(r.kind) AS k0, max(r.kind) AS k1", "collect(r.kind) AS k"),
                              m=self.model, **params)[0]
            names = {name: kind_code(name) for name in set(rec["k"])}
            codes = np.array([names[k] for k in rec["k"]], np.uint8)
        else:
            codes = np.full(len(rec["s"]), kind_code(rec["k0"]) if rec["k0"] is not None else 0, np.uint8)
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

    def edges(self, layer: LayerInfo, targets: np.ndarray | None = None,
              sources: np.ndarray | None = None) -> Iterator[Edges]:
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

    def nodes(self, ids: np.ndarray) -> pa.Table:
        """Runs of consecutive ids are read with one index range seek each (a layer or a slice of
        one is a single run), not one seek per id."""
        tables = []
        types = {la.name: la.type for la in self.layers}
        for lo, hi in batch_runs(runs(ids), self.BATCH_NODES):
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
                schema.LAYER_TYPE: ltype.take(layer.indices).dictionary_encode(),  # one entry per type
                **{p: np.array(rec[p], np.int32) for p in schema.POSITION},
                schema.BIAS: np.array(rec["bias"], np.float64).astype(np.float32),
                schema.ACTIVATION: pa.array(rec["act"], pa.string()).dictionary_encode(),
                **{f.name: pa.array(rec[f.name], f.type) for f in self.extra_node_columns},
            }, schema=schema.node_schema(self.granularity)))
        table = concat_nodes(tables, self.granularity)
        got = table.column(schema.ID).to_numpy()
        if len(got) != len(ids):
            missing = np.setdiff1d(ids, got)[:5].tolist()
            raise OutputError(f"neurons {missing} of model {self.model!r} are missing in Neo4j; reload it")
        return table.take(np.argsort(got, kind="stable"))

    def cypher(self, query: str) -> Iterator[Edges]:
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
