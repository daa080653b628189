"""The data contract: every column name, dtype and edge kind of cnngraph's tables.

Nothing else in the project spells these names. Edge columns ``source``, ``target``, ``weight``
match the defaults of ``networkx.from_pandas_edgelist``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

# Node table ------------------------------------------------------------------------------
ID = "id"
LAYER = "layer"
LAYER_TYPE = "layer_type"
D, H, W, C = "d", "h", "w", "c"
BIAS = "bias"
ACTIVATION = "activation"
#: Position columns, outermost first. A tensor of rank r (without batch) fills the last r of
#: them; the others are -1. The last axis is always ``c``.
POSITION = (D, H, W, C)
NODE_COLUMNS = (ID, LAYER, LAYER_TYPE, *POSITION, BIAS, ACTIVATION)

# Edge table ------------------------------------------------------------------------------
SOURCE = "source"
TARGET = "target"
WEIGHT = "weight"
KIND = "kind"
EDGE_COLUMNS = (SOURCE, TARGET, WEIGHT, KIND)

ID_DTYPE = np.int64
POS_DTYPE = np.int32
WEIGHT_DTYPE = np.float32


class Kind:
    """Edge kinds. The replay rule of a neuron follows from the kind of its incoming edges."""

    CONV = "conv"
    DENSE = "dense"
    DEPTHWISE = "depthwise"
    MAX_POOL = "max_pool"
    AVG_POOL = "avg_pool"
    GLOBAL_MAX_POOL = "global_max_pool"
    GLOBAL_AVG_POOL = "global_avg_pool"
    ADD = "add"
    CONCAT = "concat"
    BATCHNORM = "batchnorm"
    IDENTITY = "identity"
    #: Add (weight 1 per input), Subtract (weights 1 and -1) and Average (weights 1/n) all use ADD.
    #: Per-channel affine maps other than BatchNormalization (Rescaling, Normalization): an
    #: identity-shaped edge with the scale as weight; the offset is the node bias.
    AFFINE = "affine"
    #: SeparableConv's pointwise step: a 1x1 convolution from the ``<layer>/depthwise`` neurons
    #: (the depthwise step, kind ``depthwise``, which Keras computes but does not expose).
    POINTWISE = "pointwise"
    #: Conv*DTranspose: input position p feeds output p * stride - pad + offset (pipeline.layers.transpose).
    CONV_TRANSPOSE = "conv_transpose"
    #: The Maximum merge layer: like max pooling, the target takes the maximum of its sources.
    MAXIMUM = "maximum"
    #: The Multiply merge layer (squeeze-and-excitation, hard-swish): the target takes the product
    #: of weight * source over its sources.
    MULTIPLY = "multiply"
    #: LayerNormalization: edges from every member of the normalised group (the channels at the
    #: target's position) with weight ``gamma[c] * (delta(c', c) - 1/C)``; the target is
    #: ``sum(weight * source) / sqrt(var(sources) + epsilon) + bias`` (var: population variance of
    #: the unweighted sources; epsilon: the layer's).
    LAYERNORM = "layernorm"
    #: GroupNormalization: like LAYERNORM, over the target's group (all positions x the group's
    #: channels), weight ``gamma[c] * (delta - 1/n)``.
    GROUPNORM = "groupnorm"
    #: Layer granularity: a tensor flowing from one Keras layer into another.
    TENSOR = "tensor"


#: Kinds whose target takes the maximum of its sources (weights are 1.0 and ignored).
MAX_KINDS = frozenset({Kind.MAX_POOL, Kind.GLOBAL_MAX_POOL, Kind.MAXIMUM})
#: Kinds whose target takes the product of weight * source over its sources.
PRODUCT_KINDS = frozenset({Kind.MULTIPLY})
#: Kinds whose target is normalised over its sources (see Kind.LAYERNORM).
NORM_KINDS = frozenset({Kind.LAYERNORM, Kind.GROUPNORM})

NODE_SCHEMA = pa.schema(
    [
        pa.field(ID, pa.int64(), nullable=False),
        pa.field(LAYER, pa.dictionary(pa.int32(), pa.string())),
        pa.field(LAYER_TYPE, pa.dictionary(pa.int32(), pa.string())),
        *(pa.field(p, pa.int32(), nullable=False) for p in POSITION),
        pa.field(BIAS, pa.float32(), nullable=False),
        pa.field(ACTIVATION, pa.dictionary(pa.int32(), pa.string())),
    ]
)

EDGE_SCHEMA = pa.schema(
    [
        pa.field(SOURCE, pa.int64(), nullable=False),
        pa.field(TARGET, pa.int64(), nullable=False),
        pa.field(WEIGHT, pa.float32(), nullable=False),
        pa.field(KIND, pa.dictionary(pa.int32(), pa.string())),
    ]
)

# Extraction output layout ------------------------------------------------------------------
MANIFEST = "manifest.json"
NODES_DIR = "nodes"
EDGES_DIR = "edges"
FORMAT = "cnngraph-extract/1"

# Coarser granularities (DESIGN.md section 3) ---------------------------------------------------
NEURON, CHANNEL, LAYER_GRANULARITY = "neuron", "channel", "layer"
GRANULARITIES = (NEURON, CHANNEL, LAYER_GRANULARITY)
#: How a channel edge's weight summarises its kernel slice.
AGGREGATES = ("l1", "l2", "sum", "mean", "max_abs")
#: Channel edges: the raw kernel slice the aggregated weight summarises.
KERNEL = "kernel"
#: Layer nodes: the layer's output shape (without batch), parameter count and Keras config (JSON).
OUTPUT_SHAPE = "output_shape"
PARAMS = "params"
CONFIG = "config"
#: Layer edges: the shape (without batch) of the tensor that flows.
SHAPE = "shape"

#: Columns only the coarse granularities have; loaders and exports carry them as properties.
EXTRA_NODE_COLUMNS = (OUTPUT_SHAPE, PARAMS, CONFIG)
EXTRA_EDGE_COLUMNS = (KERNEL, SHAPE)

CHANNEL_EDGE_SCHEMA = EDGE_SCHEMA.append(pa.field(KERNEL, pa.list_(pa.float32())))
LAYER_NODE_SCHEMA = (
    NODE_SCHEMA.append(pa.field(OUTPUT_SHAPE, pa.list_(pa.int32())))
    .append(pa.field(PARAMS, pa.int64(), nullable=False))
    .append(pa.field(CONFIG, pa.string()))
)
LAYER_EDGE_SCHEMA = EDGE_SCHEMA.append(pa.field(SHAPE, pa.list_(pa.int32())))


def node_schema(granularity: str = NEURON) -> pa.Schema:
    """The node table schema of an extraction at ``granularity``."""
    return LAYER_NODE_SCHEMA if granularity == LAYER_GRANULARITY else NODE_SCHEMA


def edge_schema(granularity: str = NEURON) -> pa.Schema:
    """The edge table schema of an extraction at ``granularity``."""
    return {CHANNEL: CHANNEL_EDGE_SCHEMA, LAYER_GRANULARITY: LAYER_EDGE_SCHEMA}.get(granularity, EDGE_SCHEMA)
