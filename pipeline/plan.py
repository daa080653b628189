"""Exact node and edge counts per layer, computed analytically, and size estimates per sink.

Nothing is generated: counts come from shapes and window geometry, so planning full VGG16
(15 G edges) takes milliseconds. Extraction checks its own counts against this plan.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pipeline import schema
from pipeline.errors import UsageError
from pipeline.layers import registry
from pipeline.layers.base import channels_of
from pipeline.layers.channels import ChannelGraph
from pipeline.spec import LayerSpec, ModelGraph

#: Bytes per edge and per node of each sink. Parquet: an upper bound of this project's writer
#: (the plan itself uses parquet_bytes); Neo4j: the store after a bulk load, 80.4 B per
#: relationship with nodes and indexes (benchmarks/load.py); NetworkX: a DiGraph with weight/kind
#: attributes (benchmarks/export.py measured ~344); GraphML: the streaming writer, ~111 per edge line;
#: pandas: ``to_pandas``'s frames (int64 ids, float32 weight, int8 kind: measured peak 24-30 B per
#: edge; a node row is 31 B plus the Arrow table it comes from).
BYTES_PER_EDGE = {"parquet": 1.0, "neo4j": 80.0, "networkx": 500.0, "graphml": 111.0, "pandas": 32.0}
BYTES_PER_NODE = {"parquet": 3.0, "neo4j": 120.0, "networkx": 700.0, "graphml": 260.0, "pandas": 40.0}
#: Parquet edge bytes = PARQUET_EDGE * edges + PARQUET_WEIGHT * (distinct weights, at most one per
#: edge): ids delta-pack to ~0.3 B per edge, and each distinct float32 weight costs its 4 bytes
#: about once. Fitted on VGG16, ResNet50 and MobileNetV2 extractions (per layer within ~35%; the
#: full VGG16 estimate is 5.0 GB, 4.7 GB measured); dense layers (no repeats) measure 4.03 B/edge.
PARQUET_EDGE = 0.3
PARQUET_WEIGHT = 4.0
PARQUET_NODE = 1.0
#: Relationships per second of a bulk load end to end (writing the import files while the
#: server stops, neo4j-admin import, server start, schema, count check), benchmarks/load.py's
#: 17.4 M-relationship VGG16 slice on a 2-core machine: 173 k rels/s measured (load average ~3;
#: neo4j-admin's own import 347 k). Used to state the expected bulk import time; it scales with
#: cores and disks.
IMPORT_RELS_PER_SECOND = 175_000
#: Relationships per second of an online load (``--mode online``, nodes included, the default
#: writers: 60.4 k measured with 2) and edges per second read back into NetworkX
#: (``to_networkx("neo4j:NAME")``: 155 k measured on 4.2 M edges, load average ~4), by
#: benchmarks/load.py and benchmarks/export.py on the same 2-core machine (docs/neo4j.md).
ONLINE_RELS_PER_SECOND = 60_000
READ_EDGES_PER_SECOND = 150_000
#: neo4j-admin import files (``cnngraph load --files-only``): (bytes per edge, bytes per node),
#: measured on VGG16 48x48 with its top (626 M edges): csv.gz 4.45 / 8.6, csv 31.4 / 57.
IMPORT_FILE_BYTES = {"csv.gz": (4.45, 8.6), "csv": (31.4, 57.0)}


#: Heap bytes of a GDS projection (``cypher/gds_project.cypher``): a fixed part (GDS 2.13.9 reports
#: ~100 MiB for a graph of 960 relationships), per neuron, per relationship with ``weight`` and
#: ``abs_weight`` (8 B each, ~2 B of compressed topology; benchmarks/gds.py measured 286 MB for
#: 12.6 M relationships), and per relationship for the path ``cost``. ``cypher/gds_memory.cypher``
#: uses the same figures.
GDS_FIXED_BYTES = 100 << 20
GDS_NODE_BYTES = 40
GDS_RELATIONSHIP_BYTES = 18
GDS_PATH_BYTES = 8


def gds_bytes(nodes: int, edges: int, paths: bool = False) -> int:
    """The heap a weighted GDS projection of this many neurons and relationships takes."""
    return GDS_FIXED_BYTES + nodes * GDS_NODE_BYTES + edges * (GDS_RELATIONSHIP_BYTES + (GDS_PATH_BYTES if paths else 0))


def import_file_bytes(edges: int, nodes: int, input_type: str = "csv.gz") -> int:
    """Expected size of the neo4j-admin import files for a graph of this size."""
    per_edge, per_node = IMPORT_FILE_BYTES[input_type]
    return int(edges * per_edge + nodes * per_node)


def import_seconds(edges: int, rate: float = IMPORT_RELS_PER_SECOND) -> float:
    """Expected bulk load time of this many relationships at the measured rate (``rate``:
    :data:`ONLINE_RELS_PER_SECOND` for an online load, :data:`READ_EDGES_PER_SECOND` to read
    them back)."""
    return edges / rate


def human_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


@dataclass
class LayerPlan:
    index: int
    name: str
    type: str
    output_shape: list[int]
    nodes: int
    edges: int
    activation: str
    boundary: bool = False  # True: outside the selected range, included for its neurons only


@dataclass
class Plan:
    model: str
    layers: list[LayerPlan]
    nodes: int = 0
    edges: int = 0
    bytes: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    def layer(self, name: str) -> LayerPlan:
        return next(lp for lp in self.layers if lp.name == name)


def layer_plan(spec: LayerSpec, boundary: bool = False) -> LayerPlan:
    tr = registry.get(spec.type, spec.name)
    return LayerPlan(
        index=spec.index,
        name=spec.name,
        type=spec.type,
        output_shape=list(spec.output.shape),
        nodes=spec.output.size if spec.makes_neurons else 0,
        edges=0 if boundary else tr.count_edges(spec),
        activation=tr.activation(spec),
        boundary=boundary,
    )


def selection(graph: ModelGraph, layer_range: str | None = None) -> tuple[list[LayerSpec], list[LayerSpec]]:
    """(selected layers, boundary layers): boundary layers own neurons the selection reads."""
    chosen = graph.select(layer_range)
    names = {s.name for s in chosen}
    owners = {t.owner for s in chosen for t in s.inputs} - names
    boundary = [s for s in graph.layers if s.name in owners]
    return chosen, boundary


def plan(graph: ModelGraph, layer_range: str | None = None, granularity: str = "neuron") -> Plan:
    """Exact counts for a model (or a layer range of it) and byte estimates per sink.

    ``granularity`` ``channel`` or ``layer`` counts the coarser graphs of pipeline.extract.coarse.
    """
    if granularity != schema.NEURON:
        return coarse_plan(graph, layer_range, granularity)
    chosen, boundary = selection(graph, layer_range)
    layers = sorted(
        [layer_plan(s) for s in chosen] + [layer_plan(s, boundary=True) for s in boundary],
        key=lambda lp: lp.index,
    )
    result = Plan(model=graph.name, layers=layers)
    result.nodes = sum(lp.nodes for lp in layers)
    result.edges = sum(lp.edges for lp in layers)
    params = {s.name: s.params for s in chosen}
    result.bytes = sink_bytes(result.nodes, result.edges, [(lp.edges, params.get(lp.name, 0)) for lp in layers])
    return result


def sink_bytes(nodes: int, edges: int, layers: list[tuple[int, int]]) -> dict[str, int]:
    """Estimated bytes of a graph of this size in each sink; ``layers``: (edges, distinct weights)
    of each layer, since Parquet stores a repeated weight about once."""
    out = {sink: int(edges * BYTES_PER_EDGE[sink] + nodes * BYTES_PER_NODE[sink]) for sink in BYTES_PER_EDGE}
    out["parquet"] = int(sum(parquet_edge_bytes(e, w) for e, w in layers) + PARQUET_NODE * nodes)
    return out


def parquet_edge_bytes(edges: int, weights: int) -> float:
    """Expected Parquet bytes of a layer's edges that use ``weights`` distinct weight values."""
    return PARQUET_EDGE * edges + PARQUET_WEIGHT * min(edges, weights)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return str(n)


def check_granularity(granularity: str) -> None:
    """UsageError unless granularity is one of schema.GRANULARITIES."""
    if granularity not in schema.GRANULARITIES:
        raise UsageError(f"unknown granularity {granularity!r}: choose one of {', '.join(schema.GRANULARITIES)}")


def ordered(chosen: list[LayerSpec], boundary: list[LayerSpec]) -> list[tuple[LayerSpec, bool]]:
    """(layer, is boundary) of a selection, in model order."""
    return sorted([(s, False) for s in chosen] + [(s, True) for s in boundary], key=lambda x: x[0].index)


def coarse_plan(graph: ModelGraph, layer_range: str | None, granularity: str) -> Plan:
    """Exact node and edge counts at channel or layer granularity (nothing is generated)."""
    check_granularity(granularity)
    chosen, boundary = selection(graph, layer_range)
    layers: list[LayerPlan] = []
    floats = 0
    if granularity == schema.CHANNEL:
        cg = ChannelGraph(graph)
        for spec, is_boundary in ordered(chosen, boundary):
            parts = [] if is_boundary else cg.parts(spec)
            floats += sum(p.count * p.width for p in parts)
            layers.append(_coarse_layer_plan(spec, channels_of(spec.output) if spec.makes_neurons else 0,
                                             sum(p.count for p in parts), is_boundary))
    else:
        names = {s.name for s in chosen + boundary}
        for spec, is_boundary in ordered(chosen, boundary):
            edges = 0 if is_boundary else sum(1 for n in spec.inbound if n in names)
            layers.append(_coarse_layer_plan(spec, 1, edges, is_boundary))
    result = Plan(model=graph.name, layers=layers)
    result.nodes = sum(lp.nodes for lp in layers)
    result.edges = sum(lp.edges for lp in layers)
    result.bytes = {
        sink: int(result.edges * BYTES_PER_EDGE[sink] + result.nodes * BYTES_PER_NODE[sink]) for sink in BYTES_PER_EDGE
    }
    # Coarse edges compress far less than neuron edges, and carry their kernel slices.
    result.bytes["parquet"] = int(result.edges * 16 + floats * 4 + result.nodes * 16)
    return result


def _coarse_layer_plan(spec: LayerSpec, nodes: int, edges: int, boundary: bool) -> LayerPlan:
    tr = registry.get(spec.type, spec.name)
    return LayerPlan(spec.index, spec.name, spec.type, list(spec.output.shape), nodes, edges, tr.activation(spec), boundary)
