"""Arrow tables of the extract stage: node rows of a layer's neurons, edge rows of a chunk, writer settings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import schema
from pipeline.errors import OutputError
from pipeline.layers import registry
from pipeline.layers.base import EdgeChunk
from pipeline.spec import LayerSpec

#: Nodes per node-table chunk.
CHUNK_NODES = 1_000_000


def node_tables(spec: LayerSpec, max_nodes: int = CHUNK_NODES) -> Iterator[pa.Table]:
    """The node table of the neurons a layer owns, in chunks."""
    if not spec.makes_neurons:
        return
    for start in range(0, spec.output.size, max_nodes):
        yield node_table(spec, np.arange(start, min(start + max_nodes, spec.output.size), dtype=np.int64))


def node_table(spec: LayerSpec, flat: np.ndarray) -> pa.Table:
    """Node rows of the neurons at row-major positions ``flat`` of the layer's output tensor."""
    tr = registry.get(spec.type, spec.name)
    shape = spec.output.shape
    if len(shape) > len(schema.POSITION):
        raise OutputError(f"layer {spec.name} has rank {len(shape)}; at most {len(schema.POSITION)} axes are supported")
    pos = np.unravel_index(flat, shape)
    missing = len(schema.POSITION) - len(shape)
    bias = tr.bias(spec)
    n = len(flat)
    return pa.table(
        {
            schema.ID: flat + spec.output.offset,
            schema.LAYER: constant_column(spec.name, n),
            schema.LAYER_TYPE: constant_column(spec.type, n),
            **{
                p: np.full(n, -1, np.int32) if i < missing else pos[i - missing].astype(np.int32)
                for i, p in enumerate(schema.POSITION)
            },
            schema.BIAS: np.zeros(n, np.float32) if bias is None else np.asarray(bias, np.float32)[pos[-1]],
            schema.ACTIVATION: constant_column(tr.activation(spec), n),
        },
        schema=schema.NODE_SCHEMA,
    )


def constant_column(value: str, n: int) -> pa.DictionaryArray:
    """A dictionary-encoded string column holding one value n times."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([value]))


def edge_table(chunk: EdgeChunk) -> pa.Table:
    """The edge rows of a chunk (source, target, weight, kind)."""
    return pa.table(
        {
            schema.SOURCE: chunk.source,
            schema.TARGET: chunk.target,
            schema.WEIGHT: chunk.weight,
            schema.KIND: constant_column(chunk.kind, len(chunk)),
        },
        schema=schema.EDGE_SCHEMA,
    )


def parquet_options(schema_: pa.Schema) -> dict[str, Any]:
    """Writer settings measured fastest at small size (benchmarks/extract.py): ids as deltas.

    The emitter's weight-major order makes ids arithmetic progressions (delta-packed to ~0 bits)
    and weights long constant runs (which LZ4 folds); byte-stream-split or zstd cost 2x the time
    for under 0.05 bytes per edge.
    """
    ints = [f.name for f in schema_ if pa.types.is_integer(f.type)]
    floats = [f.name for f in schema_ if pa.types.is_floating(f.type)]
    return {
        "compression": "lz4",
        "use_dictionary": [f.name for f in schema_ if pa.types.is_dictionary(f.type)],
        "column_encoding": {**dict.fromkeys(ints, "DELTA_BINARY_PACKED"), **dict.fromkeys(floats, "PLAIN")},
        "write_statistics": [schema.ID, schema.SOURCE, schema.TARGET],
    }
