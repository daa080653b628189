"""Coarser graphs of a walked model (DESIGN.md section 3): a node per channel, or a node per layer.

**Channel granularity.** Every tensor that owns neurons gets one node per channel (the last axis: a
feature map of a conv output, a unit of a Dense output); channel ids are numbered like neuron ids,
layer by layer, contiguously. An edge is one *kernel slice*: all the neuron-level weights that
connect one source channel to one target channel, kept raw in the ``kernel`` column, with the
``weight`` column an aggregate of it (``l1`` by default; ``l2``, ``sum``, ``mean``, ``max_abs``).
How each layer family makes its slices:

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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import schema
from pipeline.errors import OutputError, UnsupportedLayerError, UsageError
from pipeline.extract import (
    _PARTIAL,
    ExtractResult,
    _add,
    _prepare,
    _write_json_atomic,
    _write_parquet,
    constant_column,
    edge_checksum,
    layer_dir,
    node_checksum,
)
from pipeline.layers import registry
from pipeline.model import LayerSpec, ModelGraph, Tensor, model_record
from pipeline.plan import BYTES_PER_EDGE, BYTES_PER_NODE, LayerPlan, Plan, selection
from pipeline.progress import NULL, Progress
from pipeline.schema import Kind

#: Kernel floats held in memory per channel-edge chunk.
CHUNK_FLOATS = 8_000_000

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


def check_granularity(granularity: str) -> None:
    if granularity not in schema.GRANULARITIES:
        raise UsageError(f"unknown granularity {granularity!r}: choose one of {', '.join(schema.GRANULARITIES)}")


# ---------------------------------------------------------------------------------------------
# Channel granularity: rules per layer family


@dataclass
class Part:
    """``count`` channel edges of one kind whose kernel slices all have ``width`` values.

    ``block(lo, hi)`` gives edges [lo, hi): (source channel, target channel, kernel (n, width)),
    channels counted within their tensors (not yet offset to channel ids).
    """

    tensor: Tensor  # the input tensor the sources belong to
    count: int
    width: int
    kind: str
    block: Callable[[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


def _channels(t: Tensor) -> int:
    return t.shape[-1] if t.shape else 1


class ChannelGraph:
    """Channel ids and channel-edge rules of a walked model."""

    def __init__(self, graph: ModelGraph):
        self.graph = graph
        self.by_name = {s.name: s for s in graph.layers}
        self.offset: dict[str, int] = {}
        n = 0
        for spec in graph.layers:
            if spec.makes_neurons:
                self.offset[spec.name] = n
                n += _channels(spec.output)
        self.total = n

    # Source channels -------------------------------------------------------------------------
    def source_channels(self, spec: LayerSpec, t: Tensor) -> np.ndarray:
        """Owner channel of each index of t's last axis (identity unless t re-indexes a map)."""
        n = _channels(t)
        if not t.alias:
            return np.arange(n, dtype=np.int64)
        owner_c = _channels(self.by_name[t.owner].output)
        if n % owner_c:
            raise UnsupportedLayerError(
                spec.name, spec.type, registry.supported(),
                f"at channel granularity: its input (shape {t.shape}) re-indexes {t.owner}'s "
                f"{owner_c} channels into rows of {n}, which do not map to whole channels",
            )
        return np.arange(n, dtype=np.int64) % owner_c

    def source_id(self, t: Tensor) -> int:
        return self.offset[t.owner]

    def target_id(self, spec: LayerSpec) -> int:
        return self.offset[spec.name]

    # Rules -----------------------------------------------------------------------------------
    def parts(self, spec: LayerSpec) -> list[Part]:
        """The channel edges of one layer, as parts; [] for layers that make none."""
        return self.parts_as(spec, registry.get(spec.type, spec.name))

    def parts_as(self, spec: LayerSpec, tr: Any) -> list[Part]:
        """The channel edges of spec read by translator tr."""
        from pipeline.layers import activation as act
        from pipeline.layers import (
            conv,
            depthwise,
            global_pooling,
            merge,
            normalization,
            pooling,
            reshape,
            spatial,
            transpose,
        )
        from pipeline.layers import dense as dense_

        if not spec.makes_neurons or isinstance(tr, (act.Input, reshape.Alias)):
            return []
        extra = _extra_rules()
        for cls, rule in extra:
            if isinstance(tr, cls):
                return rule(self, spec, tr)
        if isinstance(tr, conv.Conv):
            k = np.asarray(spec.weights["kernel"])
            return self.mixing(spec, k.reshape(-1, *k.shape[-2:]), spec.config.get("groups", 1), Kind.CONV)
        if isinstance(tr, depthwise.Separable):
            k = np.asarray(spec.weights["pointwise_kernel"])  # its depthwise step is a Depthwise spec
            return self.mixing(spec, k.reshape(-1, *k.shape[-2:]), 1, Kind.POINTWISE)
        if isinstance(tr, transpose.ConvTranspose):
            return self.mixing(spec, tr.channel_kernel(spec), 1, Kind.CONV_TRANSPOSE)
        if isinstance(tr, dense_.Dense):
            k = np.asarray(spec.weights["kernel"])
            return self.mixing(spec, k[None], 1, Kind.DENSE)
        if isinstance(tr, depthwise.Depthwise):
            return [self.depthwise(spec)]
        if isinstance(tr, normalization.ChannelAffine):
            return [self.diagonal(spec, spec.inputs[0], tr.scale_shift(spec)[0], tr.kind)]
        if isinstance(tr, merge.Elementwise):
            kind = {"Maximum": Kind.MAXIMUM, "Multiply": Kind.MULTIPLY}.get(_merge_type(spec), Kind.ADD)
            return [self.diagonal(spec, t, w, kind) for t, w in zip(spec.inputs, tr.weights(spec), strict=True)]
        if isinstance(tr, merge.Concatenate):
            return self.concat(spec)
        if isinstance(tr, spatial.Permute):
            dims = list(spec.config.get("dims", []))
            if dims and dims[-1] != len(dims):
                self.refuse(spec, "a Permute that moves the channel axis has no channel-level form")
            return [self.diagonal(spec, spec.inputs[0], 1.0, Kind.IDENTITY)]
        if isinstance(tr, (pooling.Pooling, global_pooling.GlobalPooling)):
            t = spec.type
            kind = (
                (Kind.GLOBAL_MAX_POOL if "Max" in t else Kind.GLOBAL_AVG_POOL) if t.startswith("Global")
                else Kind.MAX_POOL if "Max" in t else Kind.AVG_POOL
            )
            return [self.diagonal(spec, spec.inputs[0], 1.0, kind)]
        if isinstance(tr, (act.Activation, spatial.ZeroPadding, spatial.Cropping, spatial.UpSampling)):
            return [self.diagonal(spec, spec.inputs[0], 1.0, Kind.IDENTITY)]
        self.refuse(spec, "no channel-level rule for this layer family yet")
        return []

    def refuse(self, spec: LayerSpec, why: str) -> None:
        raise UnsupportedLayerError(spec.name, spec.type, registry.supported(), f"at channel granularity: {why}")

    def mixing(self, spec: LayerSpec, kernel: np.ndarray, groups: int, kind: str) -> list[Part]:
        """Conv/Dense/separable: kernel (S, n_in // groups, n_out), S spatial taps (1 for Dense)."""
        t = spec.inputs[0]
        cmap = self.source_channels(spec, t)
        taps, cin_g, n_out = kernel.shape
        cout_g = n_out // groups
        if np.array_equal(cmap, np.arange(len(cmap))):

            def block(lo: int, hi: int):
                q = np.arange(lo, hi, dtype=np.int64)
                a, o = q // n_out, q % n_out
                src = (o // cout_g) * cin_g + a
                return src, o, kernel[:, a, o].T.astype(np.float32)

            return [Part(t, cin_g * n_out, taps, kind, block)]
        if groups != 1:
            self.refuse(spec, "a grouped convolution over a re-indexed tensor")
        owners = np.unique(cmap)
        rows = np.stack([np.flatnonzero(cmap == c) for c in owners])  # equal counts per channel

        def block_regrouped(lo: int, hi: int):
            q = np.arange(lo, hi, dtype=np.int64)
            u, o = q // n_out, q % n_out
            # (n, taps, rows per channel): the slice is the channel's kernel rows in position order
            k = kernel[:, rows[u], o[:, None]]  # (taps, n, r)
            return owners[u], o, np.moveaxis(k, 0, -1).reshape(len(q), -1).astype(np.float32)

        return [Part(t, len(owners) * n_out, taps * rows.shape[1], kind, block_regrouped)]

    def depthwise(self, spec: LayerSpec) -> Part:
        t = spec.inputs[0]
        cmap = self.source_channels(spec, t)
        k = np.asarray(spec.weights["kernel"])
        k = k.reshape(-1, *k.shape[-2:])  # (taps, C, M)
        taps, cin, mult = k.shape

        def block(lo: int, hi: int):
            q = np.arange(lo, hi, dtype=np.int64)
            c, m = q // mult, q % mult
            return cmap[c], q, k[:, c, m].T.astype(np.float32)

        return Part(t, cin * mult, taps, Kind.DEPTHWISE, block)

    def diagonal(self, spec: LayerSpec, t: Tensor, scale: Any, kind: str) -> Part:
        """c -> c (or 0 -> every c for a one-channel input broadcast), slice [scale_c]."""
        cmap = self.source_channels(spec, t)
        n_out = _channels(spec.output)
        scale = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), (n_out,)) if np.size(scale) in (1, n_out) else None
        if scale is None:
            self.refuse(spec, "per-channel scale of the wrong length")
        if len(cmap) not in (1, n_out):
            self.refuse(spec, f"an input of {len(cmap)} channels feeding {n_out}")

        def block(lo: int, hi: int):
            c = np.arange(lo, hi, dtype=np.int64)
            src = cmap[c] if len(cmap) == n_out else np.zeros_like(c) + cmap[0]
            return src, c, scale[lo:hi, None].astype(np.float32)

        return Part(t, n_out, 1, kind, block)

    def concat(self, spec: LayerSpec) -> list[Part]:
        from pipeline.layers.merge import concat_axis

        rank = len(spec.output.shape)
        if concat_axis(spec) != rank - 1:
            return [self.diagonal(spec, t, 1.0, Kind.CONCAT) for t in spec.inputs]
        parts, start = [], 0
        for t in spec.inputs:
            cmap = self.source_channels(spec, t)

            def block(lo: int, hi: int, cmap=cmap, start=start):
                c = np.arange(lo, hi, dtype=np.int64)
                return cmap[c], start + c, np.ones((hi - lo, 1), np.float32)

            parts.append(Part(t, len(cmap), 1, Kind.CONCAT, block))
            start += len(cmap)
        return parts


def _merge_type(spec: LayerSpec) -> str:
    """The merge layer a spec acts as (keras.ops merges name their layer twin)."""
    return spec.type.rsplit(".", 1)[-1]


def _extra_rules() -> list[tuple[type, Callable[[ChannelGraph, LayerSpec, Any], list[Part]]]]:
    """Rules of translators that live in their own modules (checked before the generic ones)."""
    rules: list[tuple[type, Callable]] = []
    try:
        from pipeline.layers.layernorm import LayerNorm
    except ImportError:  # pragma: no cover - module added alongside
        return rules

    def layernorm(cg: ChannelGraph, spec: LayerSpec, tr: Any) -> list[Part]:
        t = spec.inputs[0]
        cmap = cg.source_channels(spec, t)
        n = _channels(spec.output)
        w = tr.pair_weights(spec)  # (C_in, C_out)

        def block(lo: int, hi: int):
            q = np.arange(lo, hi, dtype=np.int64)
            a, o = q // n, q % n
            return cmap[a], o, w[a, o][:, None].astype(np.float32)

        return [Part(t, n * n, 1, Kind.LAYERNORM, block)]

    from pipeline.layers.layernorm import GroupNorm

    def groupnorm(cg: ChannelGraph, spec: LayerSpec, tr: Any) -> list[Part]:
        t = spec.inputs[0]
        cmap = cg.source_channels(spec, t)
        c = _channels(spec.output)
        size, n = c // tr.groups(spec), tr.group_size(spec)
        gamma = tr._gamma_beta(spec)[0]

        def block(lo: int, hi: int):
            q = np.arange(lo, hi, dtype=np.int64)
            o, a = q // size, q % size
            src = (o // size) * size + a
            return cmap[src], o, (gamma[o] * ((src == o) - 1.0 / n))[:, None].astype(np.float32)

        return [Part(t, c * size, 1, Kind.GROUPNORM, block)]

    rules.append((GroupNorm, groupnorm))  # before LayerNorm, its base class
    from pipeline.layers.advanced_activation import PReLU

    def prelu(cg: ChannelGraph, spec: LayerSpec, tr: Any) -> list[Part]:
        if spec.part_of is not None:  # <name>/negative: relu(-x)
            return [cg.diagonal(spec, spec.inputs[0], -1.0, Kind.IDENTITY)]
        if not tr.is_split(spec):
            return [cg.diagonal(spec, spec.inputs[0], 1.0, Kind.IDENTITY)]
        alpha = tr.alpha(spec).reshape(-1, spec.output.shape[-1])
        if not np.all(alpha == alpha[:1]):
            cg.refuse(spec, "a PReLU whose alpha varies by position (no shared_axes) has no channel-level form")
        return [cg.diagonal(spec, spec.inputs[0], 1.0, Kind.ADD), cg.diagonal(spec, spec.inputs[1], 1.0 - alpha[0], Kind.ADD)]

    rules.append((PReLU, prelu))
    rules.append((LayerNorm, layernorm))
    from pipeline.layers.ops import OpsCall

    def ops_call(cg: ChannelGraph, spec: LayerSpec, tr: Any) -> list[Part]:
        impl, as_spec = tr.delegate(spec)  # affine with a number, a merge between tensors
        return cg.parts_as(as_spec, impl)

    rules.append((OpsCall, ops_call))
    return rules


# ---------------------------------------------------------------------------------------------
# Plans


def coarse_plan(graph: ModelGraph, layer_range: str | None, granularity: str) -> Plan:
    """Exact node and edge counts at channel or layer granularity (nothing is generated)."""
    check_granularity(granularity)
    chosen, boundary = selection(graph, layer_range)
    layers: list[LayerPlan] = []
    floats = 0
    if granularity == schema.CHANNEL:
        cg = ChannelGraph(graph)
        for spec, is_boundary in _ordered(chosen, boundary):
            parts = [] if is_boundary else cg.parts(spec)
            floats += sum(p.count * p.width for p in parts)
            layers.append(_layer_plan(spec, _channels(spec.output) if spec.makes_neurons else 0,
                                      sum(p.count for p in parts), is_boundary))
    else:
        names = {s.name for s in chosen + boundary}
        for spec, is_boundary in _ordered(chosen, boundary):
            edges = 0 if is_boundary else sum(1 for n in spec.inbound if n in names)
            layers.append(_layer_plan(spec, 1, edges, is_boundary))
    result = Plan(model=graph.name, layers=layers)
    result.nodes = sum(lp.nodes for lp in layers)
    result.edges = sum(lp.edges for lp in layers)
    result.bytes = {
        sink: int(result.edges * BYTES_PER_EDGE[sink] + result.nodes * BYTES_PER_NODE[sink]) for sink in BYTES_PER_EDGE
    }
    # Coarse edges compress far less than neuron edges, and carry their kernel slices.
    result.bytes["parquet"] = int(result.edges * 16 + floats * 4 + result.nodes * 16)
    return result


def _ordered(chosen: list[LayerSpec], boundary: list[LayerSpec]) -> list[tuple[LayerSpec, bool]]:
    return sorted([(s, False) for s in chosen] + [(s, True) for s in boundary], key=lambda x: x[0].index)


def _layer_plan(spec: LayerSpec, nodes: int, edges: int, boundary: bool) -> LayerPlan:
    tr = registry.get(spec.type, spec.name)
    return LayerPlan(spec.index, spec.name, spec.type, list(spec.output.shape), nodes, edges, tr.activation(spec), boundary)


# ---------------------------------------------------------------------------------------------
# Tables


def channel_nodes(cg: ChannelGraph, spec: LayerSpec) -> pa.Table | None:
    if not spec.makes_neurons:
        return None
    tr = registry.get(spec.type, spec.name)
    n = _channels(spec.output)
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
# The coarse extract stage


def extract_coarse(
    graph: ModelGraph,
    out: str | Path | None,
    layers: str | None = None,
    granularity: str = schema.CHANNEL,
    how: str = "l1",
    progress: Progress = NULL,
):
    """Write a channel- or layer-level graph as Parquet (nodes/, edges/, manifest.json).

    Same layout and column names as the neuron-level extraction, plus ``kernel`` (channel edges) or
    ``output_shape``/``params``/``config`` (layer nodes) and ``shape`` (layer edges). Coarse graphs
    are small, so they are written in-process.
    """

    check_granularity(granularity)
    aggregate(np.zeros((1, 1)), how)  # validates the aggregate before any work
    the_plan = coarse_plan(graph, layers, granularity)
    chosen, boundary = selection(graph, layers)
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        _prepare(out_path, the_plan)
    t0 = time.perf_counter()
    progress.start(the_plan.edges, "edges", f"extract ({granularity})")
    cg = ChannelGraph(graph) if granularity == schema.CHANNEL else None
    names = {s.name for s in chosen + boundary}
    entries = []
    for spec, is_boundary in _ordered(chosen, boundary):
        if cg is not None:
            node_table = channel_nodes(cg, spec)
            edge_tables = iter(()) if is_boundary else channel_edges(cg, spec, how)
            node_schema, edge_schema = schema.NODE_SCHEMA, schema.CHANNEL_EDGE_SCHEMA
            id_start = cg.offset.get(spec.name, 0)
        else:
            node_table = layer_nodes([spec])
            edge_tables = iter(()) if is_boundary else iter([layer_edges(graph, spec, names)])
            node_schema, edge_schema = schema.LAYER_NODE_SCHEMA, schema.LAYER_EDGE_SCHEMA
            id_start = spec.index
        entry: dict[str, Any] = {"nodes": 0, "edges": 0, "node_files": [], "edge_files": []}
        nchk = echk = 0
        if node_table is not None and node_table.num_rows:
            entry["nodes"] = node_table.num_rows
            nchk = node_checksum(node_table)
            if out_path is not None:
                rel = f"{schema.NODES_DIR}/{layer_dir(spec)}/part-00000.parquet"
                (out_path / rel).parent.mkdir(parents=True, exist_ok=True)
                _write_parquet(out_path / rel, iter([node_table]), node_schema, 1 << 20)
                entry["node_files"].append(rel)
        pending = [t for t in edge_tables if t.num_rows]
        for t in pending:
            entry["edges"] += t.num_rows
            echk = _add(echk, edge_checksum(
                t.column(schema.SOURCE).to_numpy(), t.column(schema.TARGET).to_numpy(),
                t.column(schema.WEIGHT).to_numpy(), t.column(schema.KIND).chunk(0).dictionary[0].as_py(),
            ))
            progress.advance(t.num_rows)
        if pending and out_path is not None:
            rel = f"{schema.EDGES_DIR}/{layer_dir(spec)}/part-00000.parquet"
            (out_path / rel).parent.mkdir(parents=True, exist_ok=True)
            _write_parquet(out_path / rel, iter(pending), edge_schema, 1 << 20)
            entry["edge_files"].append(rel)
        lp = the_plan.layer(spec.name)
        if entry["edges"] != lp.edges or entry["nodes"] != lp.nodes:
            raise OutputError(
                f"internal error: layer {spec.name} produced {entry['nodes']} nodes and {entry['edges']} edges, "
                f"the plan says {lp.nodes} and {lp.edges}; please report this"
            )
        entries.append({
            "index": spec.index, "name": spec.name, "type": spec.type, "output_shape": list(spec.output.shape),
            "params": spec.params, "config": spec.config, "inbound": spec.inbound, "boundary": is_boundary,
            "nodes": entry["nodes"], "edges": entry["edges"], "id_start": id_start,
            "id_stop": id_start + entry["nodes"], "activation": lp.activation,
            "node_checksum": f"{nchk:016x}", "edge_checksum": f"{echk:016x}",
            "node_files": entry["node_files"], "edge_files": entry["edge_files"],
        })
    progress.finish()
    seconds = time.perf_counter() - t0
    manifest = {
        "format": schema.FORMAT,
        "complete": True,
        "model": model_record(graph),
        "granularity": granularity,
        "aggregate": how if granularity == schema.CHANNEL else None,
        "options": {"layers": layers},
        "nodes": sum(e["nodes"] for e in entries),
        "edges": sum(e["edges"] for e in entries),
        "seconds": round(seconds, 3),
        "layers": entries,
    }
    if out_path is not None:
        _write_json_atomic(out_path / schema.MANIFEST, manifest)
        (out_path / _PARTIAL).unlink(missing_ok=True)
    return ExtractResult(out_path, the_plan, manifest["nodes"], manifest["edges"], seconds, manifest)


def channel_count(graph: ModelGraph) -> int:
    """Number of channel nodes of the whole model."""
    return ChannelGraph(graph).total


__all__ = [
    "AGGREGATORS", "ChannelGraph", "Part", "aggregate", "channel_count", "channel_edges", "channel_nodes",
    "coarse_plan", "extract_coarse", "layer_edges", "layer_nodes",
]
