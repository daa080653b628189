"""Graph Data Science on a loaded model: memory check, projection, PageRank, strength, drop.

The queries are the shipped ``cypher/gds_*.cypher`` files (the ones Browser users paste), so the
library and the Browser run the same projection. A projection lives in the server's heap until
dropped: :func:`project` first compares cnngraph's figure of its size (:func:`projection_bytes`)
with the heap GDS reports free and refuses, naming the heap needed, when it will not fit. Weighted
algorithms always run on ``abs_weight`` (|w|): GDS accepts negative weights silently and returns
nonsense. Community GDS runs at most 4 threads.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.errors import Neo4jError, UsageError
from pipeline.neo4j import db, server
from pipeline.neo4j.query import shipped
from pipeline.plan import gds_bytes, human_bytes
from pipeline.progress import NULL, Progress

#: A projection may take this fraction of the free heap (the rest is for the algorithms' arrays).
HEAP_FRACTION = 0.8


def projection_bytes(neurons: int, relationships: int, paths: bool = False) -> int:
    """The heap a weighted projection of this many neurons and relationships takes (the plan's figure)."""
    return gds_bytes(neurons, relationships, paths)


def _run(conn: server.Connection, name: str, params: dict[str, Any], during: str) -> list[dict]:
    with server.driver(conn) as drv, db.translate(conn.uri, during):
        records, _, _ = drv.execute_query(shipped(name), params)
    return [r.data() for r in records]


def memory(conn: server.Connection, model: str) -> dict[str, int]:
    """``neurons``, ``relationships``, ``needed_bytes`` (and ``_with_paths``), the server's
    ``free_heap_bytes`` and ``max_heap_bytes`` (``cypher/gds_memory.cypher``)."""
    db.validate_name(model)
    rows = _run(conn, "gds_memory", {"model": model}, "the GDS memory check")
    if not rows or not rows[0]["neurons"]:
        raise UsageError(f"no model {model!r} in Neo4j at {conn.uri} (load one with cnngraph load)")
    return {k: int(v) for k, v in rows[0].items()}


def project(conn: server.Connection, model: str, graph: str | None = None, *,
            min_abs_weight: float | None = None, paths: bool = False, heap_fraction: float = HEAP_FRACTION,
            progress: Progress = NULL) -> dict:
    """Project ``model`` into GDS as ``graph`` (default: the model's name); returns its
    ``graph``, ``nodes``, ``relationships`` and ``millis``.

    Refuses (:class:`Neo4jError`) when the projection will not fit in the free heap, naming the
    heap it needs, and when a projection of that name exists (drop it first: :func:`drop`).
    ``min_abs_weight`` keeps edges with |w| >= it (the memory check counts all edges, an upper
    bound); ``paths`` adds the ``cost`` property for ``gds_strongest_path`` (``gds_project_paths``); ``heap_fraction``: the
    share of the free heap the projection may take (leave room for algorithms and other users).
    """
    graph = db.validate_name(graph or model, "projection name")
    with server.driver(conn) as drv:
        db.require_usable(drv, model, conn.uri)
        records, _, _ = drv.execute_query("CALL gds.graph.exists($graph) YIELD exists", graph=graph)
    if records[0]["exists"]:
        raise UsageError(f"a GDS projection named {graph!r} exists; drop it first (cnngraph gds drop {graph}) "
                         "or choose another --graph")
    mem = memory(conn, model)
    needed = mem["needed_bytes_with_paths" if paths else "needed_bytes"]
    if needed > heap_fraction * mem["free_heap_bytes"]:
        raise Neo4jError(
            f"projecting {model!r} ({mem['neurons']:,} neurons, {mem['relationships']:,} relationships) needs "
            f"about {human_bytes(needed)} of heap and the server has {human_bytes(mem['free_heap_bytes'])} free "
            f"of {human_bytes(mem['max_heap_bytes'])}; nothing was projected: give it more (for the managed "
            f"server, CNNGRAPH_NEO4J_HEAP={_heap_setting(needed / HEAP_FRACTION)} and restart it), drop other "
            "projections, or select less with --min-abs-weight")
    progress.message(f"projecting {model!r} into GDS as {graph!r}: {mem['relationships']:,} relationships, "
                     f"about {human_bytes(needed)} of heap ...")
    rows = _run(conn, "gds_project_paths" if paths else "gds_project",
                {"model": model, "graph": graph, "min_abs_weight": min_abs_weight}, "the GDS projection")
    return rows[0]


def _heap_setting(nbytes: float) -> str:
    """A heap size setting of at least ``nbytes`` plus the server's own 1 GiB, in whole GiB."""
    return f"{int(np.ceil(nbytes / (1 << 30))) + 1}g"


def drop(conn: server.Connection, graph: str) -> bool:
    """Drop the projection ``graph``; True when there was one."""
    db.validate_name(graph, "projection name")
    return bool(_run(conn, "gds_drop", {"graph": graph}, "dropping the GDS projection"))


def _scores(conn: server.Connection, procedure: str, config: str, params: dict[str, Any],
            during: str) -> tuple[np.ndarray, np.ndarray]:
    """(neuron ids, score) of every node a GDS ``.stream`` procedure yields, in id order."""
    query = (f"CALL {procedure}($graph, {config}) YIELD nodeId, score "
             "RETURN gds.util.asNode(nodeId).id AS id, score")
    with server.driver(conn) as drv, db.translate(conn.uri, during):
        with drv.session() as session:
            rows = session.run(query, params).values()
    ids = np.array([r[0] for r in rows], np.int64)
    scores = np.array([r[1] for r in rows], np.float64)
    order = np.argsort(ids, kind="stable")
    return ids[order], scores[order]


def pagerank(conn: server.Connection, graph: str, *, iterations: int = 100,
             tolerance: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """(neuron ids, PageRank on |w|) of every neuron of a projection, in id order (GDS's
    unnormalised formula, damping 0.85)."""
    db.validate_name(graph, "projection name")
    config = ("{relationshipWeightProperty: 'abs_weight', dampingFactor: 0.85, maxIterations: $iterations, "
              "tolerance: $tolerance}")
    return _scores(conn, "gds.pageRank.stream", config,
                   {"graph": graph, "iterations": iterations, "tolerance": tolerance}, "GDS PageRank")


def strength(conn: server.Connection, graph: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(neuron ids, in-strength, out-strength): sums of |w| into and out of every neuron of a
    projection, in id order (``gds.degree`` weighted by ``abs_weight``)."""
    db.validate_name(graph, "projection name")
    sides = [
        _scores(conn, "gds.degree.stream",
                f"{{relationshipWeightProperty: 'abs_weight', orientation: '{orientation}'}}",
                {"graph": graph}, "GDS weighted degree")
        for orientation in ("REVERSE", "NATURAL")
    ]
    (ids, into), (_, out) = sides
    return ids, into, out
