"""The Neo4j graph model of an extracted network, shared by both loaders (was ``graph.py``).

::

    (:Model {name, source, input_shape, include_top, weights, granularity, nodes, edges,
             status, mode, fingerprint, load_run})
    (:Layer {model, name, type, index, output_shape, params, config, activation, nodes, edges,
             id_start, id_stop})
    (:Layer)-[:FEEDS]->(:Layer)
    (:Neuron:<LayerType> {model, id, layer, d, h, w, c, bias, activation})   e.g. :Neuron:Conv2D
    (:Neuron)-[:CONNECTS {weight, kind}]->(:Neuron)

``Layer.id_start``/``id_stop`` are the layer's output tensor ids ``[id_start, id_stop)`` from the
manifest (an aliasing layer holds its input's range), so a reader needs no scan of the neurons.
Position properties absent from a tensor (-1 in the node table) are not stored (null in Cypher).
Several models share one database: every node carries ``model`` and the keys are
``(model, id)`` for neurons and ``(model, name)`` for layers. Names that Cypher cannot take as
parameters (labels) and model names are validated against :data:`NAME_PATTERN` first (a full
match); every value, layer names included (any text Keras allows), is a parameter.

``Model.status`` is ``loading`` until the counts are verified, then ``complete``; :func:`drop_model`
sets ``dropping`` before it deletes anything, so an interrupted drop is never mistaken for a
complete model (:func:`require_usable`), and a rerun of the drop finishes it.
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

#: Model names and layer-type labels must match this in full (``fullmatch``: ``match`` with ``$``
#: would accept a trailing newline) before they reach a query.
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")

#: ``Model.status`` values.
LOADING, COMPLETE, DROPPING = "loading", "complete", "dropping"

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
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise errors.UsageError(
            f"invalid {what} {name!r}: use 1-64 letters, digits or underscores, starting with a "
            "letter"
        )
    return name


def neuron_labels(layer_type: str) -> str:
    """The label expression of a layer's neurons, e.g. ``:Neuron:Conv2D``."""
    validate_name(layer_type, "layer type label")
    if layer_type in ("Neuron", "Layer", "Model", "LoadState", "LoadWriter"):
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
        first = ((err.message or "").strip().splitlines() or [""])[0]  # the error is one line
        raise errors.Neo4jError(f"Neo4j{where} failed{what}: {err.code}: {first}") from err


def apply_schema(driver: neo4j.Driver) -> None:
    """Create the constraints and indexes (idempotent) and wait until they are online."""
    for statement in SCHEMA_STATEMENTS:
        driver.execute_query(statement)
    driver.execute_query("CALL db.awaitIndexes(600)")


def _shape(shape: Any) -> list[int]:
    return [-1 if v is None else int(v) for v in (shape or [])]


def _id(value: Any) -> int | None:
    # A manifest without the range (none written today) leaves the properties unset (null).
    return None if value is None else int(value)


def model_props(manifest: dict, mode: str, status: str) -> dict[str, Any]:
    """The ``:Model`` node's properties (besides ``name`` and ``load_run``) for an extraction."""
    info = manifest.get("model", {})
    return {
        "source": str(info.get("source", "")),
        "input_shape": _shape(info.get("input_shape")),
        "include_top": bool(info.get("include_top", False)),
        "weights": str(info.get("weights", "")),
        "source_sha256": str(info.get("source_sha256", "")),
        "weights_sha256": str(info.get("weights_sha256", "")),
        "keras_name": str(info.get("name", "")),
        "granularity": manifest.get("granularity", "neuron"),
        "nodes": int(manifest["nodes"]),
        "edges": int(manifest["edges"]),
        "mode": mode,
        "status": status,
        "fingerprint": fingerprint(manifest),
    }


def write_model(driver: neo4j.Driver, manifest: dict, name: str, mode: str, status: str,
                checkpoint: dict | None = None) -> dict | None:
    """Create or update the ``:Model``, its ``:Layer`` nodes and ``FEEDS`` (idempotent).

    ``checkpoint`` (online loads: ``{"batch_size", "run"}``) also creates the model's
    ``:LoadState`` in the same transaction, or keeps the existing one (a resumed load keeps its
    run id, done batches and batch size), and stamps its run id on the model as ``load_run``;
    returns the LoadState's ``{"done", "batch_size", "run"}``. Raises UsageError when the model is
    being dropped.
    """
    props = model_props(manifest, mode, status)
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
            "id_start": _id(la.get("id_start")),
            "id_stop": _id(la.get("id_stop")),
        }
        for la in manifest["layers"]
    ]
    feeds = [
        {"source": src, "target": la["name"]}
        for la in manifest["layers"]
        for src in la.get("inbound", [])
    ]
    with driver.session() as session:
        return session.execute_write(_write_model_tx, name, props, layers, feeds, checkpoint)


def _write_model_tx(tx, name, props, layers, feeds, checkpoint) -> dict | None:
    # The write lock on the model first, then its status: a drop that began meanwhile is seen.
    before = tx.run("MERGE (m:Model {name: $name}) SET m._lock = true REMOVE m._lock "
                    "RETURN m.status AS status", name=name).single()["status"]
    if before == DROPPING:
        raise errors.UsageError(dropping_message(name))
    tx.run("MATCH (m:Model {name: $name}) SET m += $props", name=name, props=props).consume()
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
    if checkpoint is None:
        return None
    record = tx.run(
        "MERGE (s:LoadState {model: $name}) "
        "ON CREATE SET s.done = [], s.batch_size = $batch, s.fingerprint = $fp "
        "SET s.run = coalesce(s.run, $run) "
        "WITH s MATCH (m:Model {name: $name}) SET m.load_run = s.run "
        "RETURN s.done AS done, s.batch_size AS batch_size, s.run AS run",
        name=name, batch=checkpoint["batch_size"], fp=props["fingerprint"], run=checkpoint["run"],
    ).single()
    return record.data()


def set_status(driver: neo4j.Driver, name: str, status: str, run: str | None = None) -> bool:
    """Set the model's status; with ``run``, only while the model is that online load's
    (``load_run``). Returns False when no model was updated."""
    records, _, _ = driver.execute_query(
        "MATCH (m:Model {name: $name}) WHERE $run IS NULL OR m.load_run = $run "
        "SET m.status = $status RETURN count(m) AS n", name=name, status=status, run=run)
    return bool(records[0]["n"])


def dropping_message(name: str) -> str:
    """What to say about a model whose drop was interrupted."""
    return f"model {name!r} is being dropped; run `cnngraph drop {name}` to finish"


def model_state(driver: neo4j.Driver, name: str) -> str | None:
    """The model's ``status`` (``loading``, ``complete``, ``dropping``), or None when absent."""
    records, _, _ = driver.execute_query(
        "MATCH (m:Model {name: $name}) RETURN m.status AS status", name=name)
    return records[0]["status"] if records else None


def require_usable(driver: neo4j.Driver, name: str, uri: str = "") -> dict:
    """The properties of model ``name`` if it is completely loaded (what an export may read).

    Raises
    ------
    UsageError : no such model (the message lists the models), or it is being dropped
        (``cnngraph drop NAME`` finishes the drop).
    OutputError : its load has not finished (rerun ``cnngraph load``).
    """
    info = model_info(driver, name)
    where = f" at {uri}" if uri else ""
    if info is None:
        names = [m.get("name") for m in models(driver)]
        raise errors.UsageError(f"no model {name!r} in Neo4j{where}; models: "
                                f"{', '.join(names) or 'none'} (load one with cnngraph load)")
    if info.get("status") == DROPPING:
        raise errors.UsageError(dropping_message(name))
    if info.get("status") != COMPLETE:
        raise errors.OutputError(f"model {name!r} in Neo4j is not completely loaded "
                                 f"(status {info.get('status')!r}); rerun cnngraph load")
    return info


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

    First, in one transaction, the model is marked ``dropping`` and its online checkpoint
    (``:LoadState``) deleted: an interrupted drop leaves a model that export and load refuse, an
    online load still running stops at its next batch, and a rerun of the drop finishes the job.
    Returns the numbers of relationships and nodes deleted. Dropping a missing model is a no-op.
    """
    validate_name(name)
    deleted = {"relationships": 0, "nodes": 0}
    with driver.session() as session:
        deleted["nodes"] += session.execute_write(_mark_dropping_tx, name)
    # Incoming relationships layer by layer, in model order (an interrupted drop stops at the
    # same place every time), a few neurons per transaction (as many as make
    # about DROP_BATCH relationships): matching the relationships themselves makes the planner
    # materialize them all first (Eager), which ran out of transaction memory on 17 M.
    records, _, _ = driver.execute_query(
        "MATCH (l:Layer {model: $name}) WHERE l.edges > 0 "
        "RETURN l.name AS layer, l.nodes AS nodes, l.edges AS edges ORDER BY l.index", name=name)
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


def _mark_dropping_tx(tx, name: str) -> int:
    """Mark the model ``dropping`` and delete its checkpoints (the load's and its parallel writers';
    locks: model, then checkpoint, as in :func:`write_model`). Returns the number of nodes deleted."""
    summary = tx.run(
        "OPTIONAL MATCH (m:Model {name: $name}) SET m.status = $dropping "
        "WITH count(m) AS models OPTIONAL MATCH (s:LoadState {model: $name}) DETACH DELETE s "
        "WITH count(*) AS states OPTIONAL MATCH (w:LoadWriter {model: $name}) DELETE w",
        name=name, dropping=DROPPING,
    ).consume()
    return summary.counters.nodes_deleted
