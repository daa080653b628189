"""The Neo4j graph model of an extracted network, shared by both loaders.

::

    (:Model {name, source, input_shape, include_top, weights, granularity, nodes, edges,
             status, mode, fingerprint})
    (:Layer {model, name, type, index, output_shape, params, config, activation, nodes, edges})
    (:Layer)-[:FEEDS]->(:Layer)
    (:Neuron:<LayerType> {model, id, layer, d, h, w, c, bias, activation})   e.g. :Neuron:Conv2D
    (:Neuron)-[:CONNECTS {weight, kind}]->(:Neuron)

Position properties absent from a tensor (-1 in the node table) are not stored (null in Cypher).
Several models share one database: every node carries ``model`` and the keys are
``(model, id)`` for neurons and ``(model, name)`` for layers. Names that Cypher cannot take as
parameters (labels) are validated against :data:`NAME_PATTERN` first; every value is a parameter.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any

import neo4j
from neo4j.exceptions import (
    AuthError,
    ServiceUnavailable,
    SessionExpired,
)
from neo4j.exceptions import (
    Neo4jError as DriverError,
)

from pipeline import errors
from pipeline.progress import NULL, Progress

#: Model names and layer-type labels must match this before they reach a query.
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")

#: The statements of ``cypher/schema.cypher``, in order (a test checks they agree).
SCHEMA_STATEMENTS = (
    "CREATE CONSTRAINT model_name IF NOT EXISTS FOR (m:Model) REQUIRE m.name IS UNIQUE",
    "CREATE CONSTRAINT layer_key IF NOT EXISTS FOR (l:Layer) REQUIRE (l.model, l.name) IS UNIQUE",
    "CREATE CONSTRAINT neuron_key IF NOT EXISTS FOR (n:Neuron) REQUIRE (n.model, n.id) IS UNIQUE",
    "CREATE INDEX neuron_layer IF NOT EXISTS FOR (n:Neuron) ON (n.model, n.layer)",
    "CREATE CONSTRAINT load_state IF NOT EXISTS FOR (s:LoadState) REQUIRE s.model IS UNIQUE",
)

#: Rows per transaction when dropping a model.
DROP_BATCH = 20_000


def validate_name(name: str, what: str = "model name") -> str:
    """Return ``name`` if it is safe as a model name or label, else raise ``UsageError``."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise errors.UsageError(
            f"invalid {what} {name!r}: use 1-64 letters, digits or underscores, starting with a "
            "letter"
        )
    return name


def neuron_labels(layer_type: str) -> str:
    """The label expression of a layer's neurons, e.g. ``:Neuron:Conv2D``."""
    validate_name(layer_type, "layer type label")
    if layer_type in ("Neuron", "Layer", "Model", "LoadState"):
        raise errors.UsageError(f"layer type {layer_type!r} clashes with a cnngraph label")
    return f":Neuron:`{layer_type}`"


def fingerprint(manifest: dict) -> str:
    """A short hash that identifies one extraction's content."""
    key = {
        "model": manifest.get("model"),
        "nodes": manifest.get("nodes"),
        "edges": manifest.get("edges"),
        "checksums": manifest.get("checksums"),
        "layers": [
            (la["name"], la["nodes"], la["edges"], la.get("node_checksum"), la.get("edge_checksum"))
            for la in manifest["layers"]
        ],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextlib.contextmanager
def translate(uri: str = "", during: str = "") -> Iterator[None]:
    """Turn driver exceptions into cnngraph errors that say what to do next."""
    where = f" at {uri}" if uri else ""
    what = f" during {during}" if during else ""
    try:
        yield
    except AuthError as err:
        raise errors.Neo4jError(
            f"Neo4j{where} refused the credentials{what}: {err.message}; set NEO4J_USERNAME and "
            "NEO4J_PASSWORD"
        ) from err
    except (ServiceUnavailable, SessionExpired, OSError) as err:
        raise errors.Neo4jUnavailable(
            f"Neo4j{where} is unavailable{what} ({err}); start it (cnngraph neo4j start) and rerun"
        ) from err
    except DriverError as err:
        raise errors.Neo4jError(f"Neo4j{where} failed{what}: {err.code}: {err.message}") from err


def apply_schema(driver: neo4j.Driver) -> None:
    """Create the constraints and indexes (idempotent) and wait until they are online."""
    for statement in SCHEMA_STATEMENTS:
        driver.execute_query(statement)
    driver.execute_query("CALL db.awaitIndexes(600)")


def _shape(shape: Any) -> list[int]:
    return [-1 if v is None else int(v) for v in (shape or [])]


def write_model(driver: neo4j.Driver, manifest: dict, name: str, mode: str, status: str) -> None:
    """Create or update the ``:Model``, its ``:Layer`` nodes and ``FEEDS`` (idempotent)."""
    info = manifest.get("model", {})
    props = {
        "source": str(info.get("source", "")),
        "input_shape": _shape(info.get("input_shape")),
        "include_top": bool(info.get("include_top", False)),
        "weights": str(info.get("weights", "")),
        "keras_name": str(info.get("name", "")),
        "granularity": manifest.get("granularity", "neuron"),
        "nodes": int(manifest["nodes"]),
        "edges": int(manifest["edges"]),
        "mode": mode,
        "status": status,
        "fingerprint": fingerprint(manifest),
    }
    layers = [
        {
            "name": la["name"],
            "type": la["type"],
            "index": int(la["index"]),
            "output_shape": _shape(la.get("output_shape")),
            "params": int(la.get("params", 0)),
            "config": json.dumps(la.get("config", {}), sort_keys=True, default=str),
            "activation": str(la.get("activation") or ""),
            "nodes": int(la["nodes"]),
            "edges": int(la["edges"]),
        }
        for la in manifest["layers"]
    ]
    feeds = [
        {"source": src, "target": la["name"]}
        for la in manifest["layers"]
        for src in la.get("inbound", [])
    ]
    with driver.session() as session:
        session.execute_write(_write_model_tx, name, props, layers, feeds)


def _write_model_tx(tx, name, props, layers, feeds) -> None:
    tx.run("MERGE (m:Model {name: $name}) SET m += $props", name=name, props=props).consume()
    tx.run(
        "UNWIND $layers AS la MERGE (l:Layer {model: $name, name: la.name}) SET l += la",
        name=name, layers=layers,
    ).consume()
    tx.run(
        "UNWIND $feeds AS f "
        "MATCH (a:Layer {model: $name, name: f.source}), (b:Layer {model: $name, name: f.target}) "
        "MERGE (a)-[:FEEDS]->(b)",
        name=name, feeds=feeds,
    ).consume()


def set_status(driver: neo4j.Driver, name: str, status: str) -> None:
    driver.execute_query("MATCH (m:Model {name: $name}) SET m.status = $status",
                         name=name, status=status)


def model_info(driver: neo4j.Driver, name: str) -> dict | None:
    """The ``:Model`` node's properties, or None."""
    records, _, _ = driver.execute_query(
        "MATCH (m:Model {name: $name}) RETURN properties(m) AS p", name=name
    )
    return dict(records[0]["p"]) if records else None


def database_summary(driver: neo4j.Driver) -> tuple[int, list[str]]:
    """(number of nodes in the database, model names)."""
    records, _, _ = driver.execute_query(
        "CALL () { MATCH (n) RETURN count(n) AS nodes } "
        "CALL () { MATCH (m:Model) RETURN collect(m.name) AS models } RETURN nodes, models"
    )
    return int(records[0]["nodes"]), list(records[0]["models"])


def layer_counts(driver: neo4j.Driver, name: str) -> dict[str, tuple[int, int]]:
    """Per layer of model ``name``: (neurons, incoming CONNECTS) as stored in the database."""
    records, _, _ = driver.execute_query(
        "MATCH (n:Neuron {model: $name}) "
        "RETURN n.layer AS layer, count(n) AS nodes, sum(COUNT { (n)<-[:CONNECTS]-() }) AS edges",
        name=name,
    )
    return {r["layer"]: (int(r["nodes"]), int(r["edges"])) for r in records}


def verify_counts(driver: neo4j.Driver, manifest: dict, name: str) -> dict[str, tuple[int, int]]:
    """Compare per-layer counts in the database with the manifest; ``LoadMismatch`` if not equal."""
    got = layer_counts(driver, name)
    want = {
        la["name"]: (int(la["nodes"]), int(la["edges"]))
        for la in manifest["layers"]
        if la["nodes"] or la["edges"]
    }
    bad = [
        f"{layer}: manifest {want.get(layer, (0, 0))} database {got.get(layer, (0, 0))}"
        for layer in sorted(set(got) | set(want))
        if got.get(layer, (0, 0)) != want.get(layer, (0, 0))
    ]
    records, _, _ = driver.execute_query(
        "MATCH (:Layer {model: $name}) RETURN count(*) AS n", name=name
    )
    if int(records[0]["n"]) != len(manifest["layers"]):
        bad.append(f"layers: manifest {len(manifest['layers'])} database {records[0]['n']}")
    if bad:
        err = errors.LoadMismatch(
            f"model {name!r} in Neo4j differs from the extraction (nodes, edges): "
            + "; ".join(bad[:10]) + ("; ..." if len(bad) > 10 else "")
            + "; reload it with --replace"
        )
        err.model, err.differences = name, bad
        raise err
    return got


def models(driver: neo4j.Driver) -> list[dict]:
    """Every ``:Model`` in the database with its properties."""
    records, _, _ = driver.execute_query(
        "MATCH (m:Model) RETURN properties(m) AS p ORDER BY m.name"
    )
    return [dict(r["p"]) for r in records]


def drop_model(driver: neo4j.Driver, name: str, progress: Progress = NULL) -> dict[str, int]:
    """Delete model ``name`` in batches of :data:`DROP_BATCH` (bounded transaction memory).

    Returns the numbers of relationships and nodes deleted. Dropping a missing model is a no-op.
    """
    validate_name(name)
    deleted = {"relationships": 0, "nodes": 0}
    # Incoming relationships layer by layer, a few neurons per transaction (as many as make
    # about DROP_BATCH relationships): matching the relationships themselves makes the planner
    # materialize them all first (Eager), which ran out of transaction memory on 17 M.
    records, _, _ = driver.execute_query(
        "MATCH (l:Layer {model: $name}) WHERE l.edges > 0 "
        "RETURN l.name AS layer, l.nodes AS nodes, l.edges AS edges", name=name)
    steps = [
        ("relationships", "MATCH (n:Neuron {model: $name, layer: $layer}) "
         "CALL (n) { MATCH (n)<-[r]-() DELETE r } IN TRANSACTIONS OF $batch ROWS",
         {"layer": r["layer"], "batch": max(1, DROP_BATCH * max(r["nodes"], 1) // r["edges"])})
        for r in records
    ]
    steps += [
        ("relationships", "MATCH (:Neuron {model: $name})-[r]->() "
         "CALL (r) { DELETE r } IN TRANSACTIONS OF $batch ROWS", {}),
        ("nodes", "MATCH (n:Neuron {model: $name}) "
         "CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF $batch ROWS", {}),
        ("nodes", "MATCH (n:Layer {model: $name}) "
         "CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF $batch ROWS", {}),
        ("nodes", "MATCH (n:LoadState {model: $name}) DETACH DELETE n", {}),
        ("nodes", "MATCH (n:Model {name: $name}) DETACH DELETE n", {}),
    ]
    progress.start(len(steps), "step", f"drop {name}")
    with driver.session() as session:
        for what, query, params in steps:
            # CALL { } IN TRANSACTIONS needs an auto-commit transaction: session.run.
            summary = session.run(query, {"name": name, "batch": DROP_BATCH, **params}).consume()
            c = summary.counters
            deleted[what] += c.relationships_deleted if what == "relationships" else c.nodes_deleted
            if what == "nodes":
                deleted["relationships"] += c.relationships_deleted
            progress.advance(1)
    progress.finish()
    return deleted
