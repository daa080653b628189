"""Coarser graphs of a walked model (DESIGN.md section 3): a node per channel, or a node per layer.

**Channel granularity.** Every tensor that owns neurons gets one node per channel (the last axis: a
feature map of a conv output, a unit of a Dense output); channel ids are numbered like neuron ids,
layer by layer, contiguously. An edge is one *kernel slice*: all the neuron-level weights that
connect one source channel to one target channel, kept raw in the ``kernel`` column, with the
``weight`` column an aggregate of it (``l1`` by default; ``l2``, ``sum``, ``mean``, ``max_abs``).
How each layer family makes its slices (each translator's ``channel_parts``, built with
:class:`pipeline.layers.channels.ChannelGraph`):

- Conv (groups g): input channel ``i`` -> output channel ``o`` within a group, slice
  ``kernel[..., i mod cin_g, o]`` (the spatial taps, row-major); separable: its ``<name>/depthwise``
  part as Depthwise, then the pointwise kernel ``[pointwise[c, o]]``.
- Conv*DTranspose: input channel ``i`` -> filter ``o``, slice ``kernel[..., o, i]``.
- Depthwise (multiplier M): ``c -> c*M + m``, slice ``kernel[..., c, m]``.
- Dense: unit ``i -> o``, slice ``[kernel[i, o]]``. After Flatten (or any re-indexing layer whose
  width is a multiple of the source's channels) the flattened units map back to the channels of the
  map they came from: unit ``u`` is channel ``u mod C`` (Keras flattens row-major over ``(h, w, c)``),
  and the slice of ``(c, o)`` is the kernel rows of that channel, in position order.
- Per-channel maps (BatchNormalization, Rescaling, Normalization, LayerScale, scalar keras.ops):
  ``c -> c``, slice ``[scale_c]``. Pooling, activations, padding, cropping, upsampling: ``c -> c``,
  slice ``[1.0]``. Merges: ``c -> c`` from each input with the merge weight (a one-channel input
  broadcast feeds every channel). Concatenate on the channel axis: ``c -> start + c``.
- LayerNormalization: every channel of the position feeds every channel, slice
  ``[gamma_c * (delta - 1/C)]`` (the same weights as its neuron edges).
- PReLU split into ``<name>/negative`` (``c -> c``, ``[-1]``) and ``<name>`` (``c -> c`` from the
  input, ``[1]``, and from the negative part, ``[1 - alpha_c]``); refused when alpha varies by position.
- GroupNormalization: every channel of the group feeds every channel of the group, slice
  ``[gamma_c * (delta - 1/n)]`` (n: the group's neurons; the weight between same-position neurons).
- Re-indexing layers (Flatten, Reshape, Dropout) make no nodes and no edges, as at neuron level.

Node ``bias`` and ``activation`` are the neurons' (per channel). The kind is the neuron-level kind.

**Layer granularity.** A node per Keras layer (id = its index in topological order) with its type,
output shape, parameter count and config (JSON); an edge per tensor that flows from one layer into
another (weight 1.0, kind ``tensor``, the tensor's shape).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa

from pipeline import schema
from pipeline.dataset import LayerEntry
from pipeline.errors import OutputError, UsageError
from pipeline.extract import folder
from pipeline.extract.checksum import add, node_checksum, table_edge_checksum
from pipeline.extract.tables import constant_column
from pipeline.layers import registry
from pipeline.layers.base import Part, channels_of
from pipeline.layers.channels import ChannelGraph
from pipeline.plan import Plan, check_granularity, coarse_plan, ordered
from pipeline.progress import Progress
from pipeline.schema import Kind
from pipeline.spec import LayerSpec, ModelGraph

#: Kernel floats held in memory per channel-edge chunk.
CHUNK_FLOATS = 8_000_000
#: Rows per row group of coarse files (one file per layer and table).
ROW_GROUP = 1 << 20

AGGREGATORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "l1": lambda k: np.abs(k).sum(axis=-1),
    "l2": lambda k: np.sqrt(np.square(k).sum(axis=-1)),
    "sum": lambda k: k.sum(axis=-1),
    "mean": lambda k: k.mean(axis=-1),
    "max_abs": lambda k: np.abs(k).max(axis=-1),
}
assert tuple(AGGREGATORS) == schema.AGGREGATES


def aggregate(kernel: np.ndarray, how: str = "l1") -> np.ndarray:
    """The weight of each kernel slice (rows of ``kernel``), as float32."""
    try:
        fn = AGGREGATORS[how]
    except KeyError:
        raise UsageError(f"unknown aggregate {how!r}: choose one of {', '.join(schema.AGGREGATES)}") from None
    return fn(np.asarray(kernel, np.float64)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Tables


def channel_nodes(cg: ChannelGraph, spec: LayerSpec) -> pa.Table | None:
    if not spec.makes_neurons:
        return None
    tr = registry.get(spec.type, spec.name)
    n = channels_of(spec.output)
    bias = tr.bias(spec)
    b = np.zeros(n, np.float32) if bias is None else np.broadcast_to(np.asarray(bias, np.float32).reshape(-1)[-n:], (n,))
    minus = np.full(n, -1, np.int32)
    cols = {p: minus for p in schema.POSITION}
    cols[schema.C] = np.arange(n, dtype=np.int32)
    return pa.table(
        {
            schema.ID: cg.target_id(spec) + np.arange(n, dtype=np.int64),
            schema.LAYER: constant_column(spec.name, n),
            schema.LAYER_TYPE: constant_column(spec.type, n),
            **cols,
            schema.BIAS: b,
            schema.ACTIVATION: constant_column(tr.activation(spec), n),
        },
        schema=schema.NODE_SCHEMA,
    )


def channel_edges(
    cg: ChannelGraph, spec: LayerSpec, how: str = "l1", max_floats: int = CHUNK_FLOATS
) -> Iterator[pa.Table]:
    """The channel edges of one layer as tables (source, target, weight, kind, kernel)."""
    for part in cg.parts(spec):
        step = max(1, max_floats // max(part.width, 1))
        for lo in range(0, part.count, step):
            src, tgt, kernel = part.block(lo, min(lo + step, part.count))
            yield channel_edge_table(cg.source_id(part.tensor) + src, cg.target_id(spec) + tgt, kernel, part.kind, how)


def channel_edge_table(src, tgt, kernel: np.ndarray, kind: str, how: str) -> pa.Table:
    n, width = kernel.shape
    flat = pa.array(np.ascontiguousarray(kernel, np.float32).reshape(-1))
    kernels = pa.ListArray.from_arrays(pa.array(np.arange(0, n * width + 1, width, dtype=np.int32)), flat)
    return pa.table(
        {
            schema.SOURCE: np.asarray(src, np.int64),
            schema.TARGET: np.asarray(tgt, np.int64),
            schema.WEIGHT: aggregate(kernel, how),
            schema.KIND: constant_column(kind, n),
            schema.KERNEL: kernels,
        },
        schema=schema.CHANNEL_EDGE_SCHEMA,
    )


def layer_nodes(specs: list[LayerSpec]) -> pa.Table:
    n = len(specs)
    minus = np.full(n, -1, np.int32)
    return pa.table(
        {
            schema.ID: np.array([s.index for s in specs], np.int64),
            schema.LAYER: pa.array([s.name for s in specs]).dictionary_encode(),
            schema.LAYER_TYPE: pa.array([s.type for s in specs]).dictionary_encode(),
            **{p: minus for p in schema.POSITION},
            schema.BIAS: np.zeros(n, np.float32),
            schema.ACTIVATION: pa.array([registry.get(s.type, s.name).activation(s) for s in specs]).dictionary_encode(),
            schema.OUTPUT_SHAPE: pa.array([list(s.output.shape) for s in specs], pa.list_(pa.int32())),
            schema.PARAMS: np.array([s.params for s in specs], np.int64),
            schema.CONFIG: pa.array([json.dumps(s.config, default=str, sort_keys=True) for s in specs]),
        },
        schema=schema.LAYER_NODE_SCHEMA,
    )


def layer_edges(graph: ModelGraph, spec: LayerSpec, names: set[str]) -> pa.Table:
    """One edge per input tensor of spec coming from a layer in names."""
    index = {s.name: s.index for s in graph.layers}
    pairs = [(index[n], t) for n, t in zip(spec.inbound, spec.inputs, strict=True) if n in names]
    n = len(pairs)
    return pa.table(
        {
            schema.SOURCE: np.array([p[0] for p in pairs], np.int64),
            schema.TARGET: np.full(n, spec.index, np.int64),
            schema.WEIGHT: np.ones(n, np.float32),
            schema.KIND: constant_column(Kind.TENSOR, n),
            schema.SHAPE: pa.array([list(p[1].shape) for p in pairs], pa.list_(pa.int32())),
        },
        schema=schema.LAYER_EDGE_SCHEMA,
    )


# ---------------------------------------------------------------------------------------------
# The coarse layers of an extraction


def check_options(granularity: str, how: str) -> None:
    """UsageError for an unknown granularity or aggregate, before any work."""
    check_granularity(granularity)
    aggregate(np.zeros((1, 1)), how)


def coarse_entries(
    graph: ModelGraph,
    chosen: list[LayerSpec],
    boundary: list[LayerSpec],
    the_plan: Plan,
    root: folder.Location | None,
    granularity: str = schema.CHANNEL,
    how: str = "l1",
    progress: Progress | None = None,
) -> list[LayerEntry]:
    """Write a channel- or layer-level graph's files under root (None: count only); its manifest entries.

    Same layout and column names as the neuron-level extraction, plus ``kernel`` (channel edges) or
    ``output_shape``/``params``/``config`` (layer nodes) and ``shape`` (layer edges). Coarse graphs
    are small, so they are written in-process, one node and one edge file per layer.
    """
    cg = ChannelGraph(graph) if granularity == schema.CHANNEL else None
    names = {s.name for s in chosen + boundary}
    entries = []
    for spec, is_boundary in ordered(chosen, boundary):
        if cg is not None:
            node_tab = channel_nodes(cg, spec)
            edge_tables = iter(()) if is_boundary else channel_edges(cg, spec, how)
            node_schema, edge_schema = schema.NODE_SCHEMA, schema.CHANNEL_EDGE_SCHEMA
            id_start = cg.offset.get(spec.name, 0)
        else:
            node_tab = layer_nodes([spec])
            edge_tables = iter(()) if is_boundary else iter([layer_edges(graph, spec, names)])
            node_schema, edge_schema = schema.LAYER_NODE_SCHEMA, schema.LAYER_EDGE_SCHEMA
            id_start = spec.index
        lp = the_plan.layer(spec.name)
        entry = LayerEntry(
            index=spec.index, name=spec.name, type=spec.type, output_shape=list(spec.output.shape),
            params=spec.params, config=spec.config, inbound=spec.inbound, boundary=is_boundary,
            id_start=id_start, activation=lp.activation,
        )
        nchk = echk = 0
        if node_tab is not None and node_tab.num_rows:
            entry.nodes = node_tab.num_rows
            nchk = node_checksum(node_tab)
            if root is not None:
                rel = folder.node_file(spec, 0)
                entry.node_file_sha256.append(folder.write_table_file(root, rel, iter([node_tab]), node_schema, ROW_GROUP))
                entry.node_files.append(rel)
        pending = [t for t in edge_tables if t.num_rows]
        for t in pending:
            entry.edges += t.num_rows
            echk = add(echk, table_edge_checksum(t))
            if progress is not None:
                progress.advance(t.num_rows)
        if pending and root is not None:
            rel = folder.edge_file(spec, 0)
            entry.edge_file_sha256.append(folder.write_table_file(root, rel, iter(pending), edge_schema, ROW_GROUP))
            entry.edge_files.append(rel)
        if entry.edges != lp.edges or entry.nodes != lp.nodes:
            raise OutputError(
                f"internal error: layer {spec.name} produced {entry.nodes} nodes and {entry.edges} edges, "
                f"the plan says {lp.nodes} and {lp.edges}; please report this"
            )
        entry.id_stop = id_start + entry.nodes
        entry.node_checksum, entry.edge_checksum = f"{nchk:016x}", f"{echk:016x}"
        entries.append(entry)
    return entries


def channel_count(graph: ModelGraph) -> int:
    """Number of channel nodes of the whole model."""
    return ChannelGraph(graph).total


__all__ = [
    "AGGREGATORS", "ChannelGraph", "Part", "aggregate", "channel_count", "channel_edges", "channel_nodes",
    "check_granularity", "coarse_entries", "coarse_plan", "layer_edges", "layer_nodes",
]
