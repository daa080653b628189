"""The layer graph and the plan's size table of a report, from any source.

A walked model gives :func:`pipeline.plan.plan` itself; an extraction folder (its manifest) and a
model loaded into Neo4j (its ``:Layer`` nodes and ``FEEDS``) give the counts they recorded, which
extraction checked against that plan. The bytes per sink follow :func:`pipeline.plan.plan`'s
formula, so the three sources give one table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.plan import sink_bytes as plan_sink_bytes

#: Layer types drawn as merges (several inputs combined into one tensor).
MERGES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Dot")


@dataclass
class LayerRow:
    """One layer as the report draws and counts it."""

    index: int
    name: str
    type: str
    output_shape: list[int]
    nodes: int
    edges: int
    params: int = 0
    activation: str = ""
    inbound: list[str] = field(default_factory=list)  # the layers feeding it, once each, in model order
    boundary: bool = False
    id_start: int = 0

    @property
    def shape_text(self) -> str:
        return "x".join(map(str, self.output_shape))


@dataclass
class LayerTable:
    """The model's layers in model order, with the plan's totals and bytes per sink."""

    model: str
    layers: list[LayerRow]
    nodes: int = 0
    edges: int = 0
    bytes: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def inputs(self) -> list[LayerRow]:
        """Layers that own neurons and read none: the model's inputs."""
        return [r for r in self.layers if r.nodes and not r.inbound]


def sink_bytes(rows: list[LayerRow]) -> dict[str, int]:
    """Estimated bytes of each sink, as :func:`pipeline.plan.plan` computes them."""
    nodes, edges = sum(r.nodes for r in rows), sum(r.edges for r in rows)
    return plan_sink_bytes(nodes, edges, [(r.edges, 0 if r.boundary else r.params) for r in rows])


def table(name: str, rows: list[LayerRow]) -> LayerTable:
    """The rows in model order, each layer's inputs listed once in model order (FEEDS in Neo4j
    keeps no order), with the totals and the bytes per sink."""
    rows = sorted(rows, key=lambda r: r.index)
    index = {r.name: r.index for r in rows}
    for r in rows:
        r.inbound = sorted(set(r.inbound), key=lambda n: index.get(n, -1))
    return LayerTable(name, rows, sum(r.nodes for r in rows), sum(r.edges for r in rows), sink_bytes(rows))


def from_graph(graph: Any) -> LayerTable:
    """The plan of a walked model (:class:`pipeline.spec.ModelGraph`)."""
    from pipeline.plan import plan

    p = plan(graph)
    specs = {s.name: s for s in graph.layers}
    rows = [LayerRow(lp.index, lp.name, lp.type, list(lp.output_shape), lp.nodes, lp.edges, specs[lp.name].params,
                     lp.activation, list(specs[lp.name].inbound), lp.boundary, specs[lp.name].output.offset)
            for lp in p.layers]
    out = table(graph.name, rows)
    out.bytes = dict(p.bytes)
    return out


def from_manifest(manifest: dict) -> LayerTable:
    """The counts an extraction folder's manifest recorded."""
    rows = [LayerRow(int(e["index"]), e["name"], e["type"], list(e["output_shape"]), int(e["nodes"]),
                     0 if e.get("boundary") else int(e["edges"]), int(e.get("params", 0)), e.get("activation") or "",
                     list(e.get("inbound", [])), bool(e.get("boundary")), int(e.get("id_start", 0)))
            for e in manifest["layers"]]
    return table(manifest["model"].get("name") or manifest["model"].get("source", "model"), rows)


#: The ``:Layer`` nodes of a loaded model and the layers that feed each.
LAYERS_QUERY = (
    "MATCH (l:Layer {model: $m}) OPTIONAL MATCH (p:Layer {model: $m})-[:FEEDS]->(l) "
    "WITH l, collect(p.name) AS inbound RETURN l.index AS index, l.name AS name, l.type AS type, "
    "l.output_shape AS shape, l.nodes AS nodes, l.edges AS edges, l.params AS params, "
    "l.activation AS activation, inbound, l.id_start AS id_start ORDER BY index"
)


def from_neo4j(model: str, conn: Any) -> LayerTable:
    """The counts a model loaded into Neo4j recorded on its ``:Layer`` nodes."""
    from pipeline.errors import UsageError
    from pipeline.neo4j import db
    from pipeline.neo4j.query import run_query

    db.validate_name(model)
    keys, values = run_query(LAYERS_QUERY, {"m": model}, conn=conn)
    if not values:
        raise UsageError(f"no model {model!r} in Neo4j (load one with cnngraph load, or list them with "
                         "cnngraph neo4j status)")
    rows = []
    for v in values:
        r = dict(zip(keys, v, strict=True))
        rows.append(LayerRow(int(r["index"]), r["name"], r["type"], list(r["shape"] or []), int(r["nodes"] or 0),
                             int(r["edges"] or 0), int(r["params"] or 0), r["activation"] or "",
                             list(r["inbound"]), False, int(r["id_start"] or 0)))
    return table(model, rows)
