"""The translator interface, edge chunks, and the pairs-times-positions edge emitter.

A translator turns one layer (a :class:`~pipeline.spec.LayerSpec`) into edges by index
arithmetic. Most layers are "pairs times positions": a set of (source channel, target channel,
weight) pairs repeated over matching source and target positions. The emitter materialises that
product weight-major (positions innermost), so a chunk's weights come in long constant runs and its
ids in arithmetic progressions: both compress to almost nothing in Parquet.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from pipeline import schema
from pipeline.errors import UnsupportedLayerError
from pipeline.spec import LayerSpec, Tensor


@dataclass
class EdgeChunk:
    """A bounded block of edges of one kind."""

    source: np.ndarray  # int64
    target: np.ndarray  # int64
    weight: np.ndarray  # float32
    kind: str

    def __len__(self) -> int:
        return len(self.source)


@dataclass(frozen=True)
class Task:
    """An independent unit of extraction work: rows [lo, hi) of one layer."""

    layer: int
    lo: int
    hi: int
    seq: int  # position of the task within its layer (names its output file)


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


class ChannelRules(Protocol):
    """The shapes channel rules are built from (:class:`pipeline.layers.channels.ChannelGraph`).

    A translator's :meth:`Translator.channel_parts` gets one; the protocol keeps the translators
    free of imports of the channel graph (which imports the registry).
    """

    def source_channels(self, spec: LayerSpec, t: Tensor) -> np.ndarray: ...

    def refuse(self, spec: LayerSpec, why: str) -> None: ...

    def mixing(self, spec: LayerSpec, kernel: np.ndarray, groups: int, kind: str) -> list[Part]: ...

    def depthwise(self, spec: LayerSpec) -> Part: ...

    def diagonal(self, spec: LayerSpec, t: Tensor, scale: Any, kind: str) -> Part: ...

    def concat(self, spec: LayerSpec) -> list[Part]: ...


def channels_of(t: Tensor) -> int:
    """The channels of a tensor: the length of its last axis (1 for a scalar)."""
    return t.shape[-1] if t.shape else 1


def runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """Sorted unique ints as [lo, hi) runs."""
    if len(rows) == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) > 1) + 1
    starts = rows[np.r_[0, breaks]]
    stops = rows[np.r_[breaks - 1, len(rows) - 1]] + 1
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


#: Keras class name -> translator, filled by :mod:`pipeline.layers.registry` (which imports every
#: family); kept here so a translator can name the supported types without importing the registry.
_BY_TYPE: dict[str, Translator] = {}


def register(*translators: Translator) -> None:
    """Make each translator the one for its Keras class names (``types``)."""
    for tr in translators:
        for name in tr.types:
            _BY_TYPE[name] = tr


def registered(layer_type: str) -> Translator | None:
    """The translator registered for a Keras class name, or None."""
    return _BY_TYPE.get(layer_type)


def supported_types() -> list[str]:
    """Keras class names that have a translator (once the registry is imported)."""
    return sorted(_BY_TYPE)


class Translator:
    """Base class: one subclass per layer family, registered for Keras class names."""

    types: ClassVar[tuple[str, ...]] = ()

    def aliases(self, config: dict[str, Any]) -> bool:
        """True when the layer only re-indexes its input (its output reuses the input's ids)."""
        return False

    def split(self, spec: LayerSpec) -> list[LayerSpec]:
        """The specs one walked Keras layer becomes, in order (default: ``[spec]``).

        The last is the layer's own spec (its name, its output tensor object); the others are parts
        (``part_of`` set, names ``<layer>/<part>``) whose tensors own the ids right before the
        layer's, whose output offset the split moves past them.
        """
        return [spec]

    def check(self, spec: LayerSpec) -> None:
        """Raise UnsupportedLayerError for configurations this translator cannot express."""
        if spec.config.get("data_format", "channels_last") != "channels_last":
            self.unsupported(spec, "data_format must be channels_last")

    def unsupported(self, spec: LayerSpec, why: str) -> None:
        raise UnsupportedLayerError(spec.name, spec.type, supported_types(), why)

    def activation(self, spec: LayerSpec) -> str:
        """The activation applied to this layer's neurons (Keras's name)."""
        return activation_name(spec.config.get("activation", "linear"))

    def bias(self, spec: LayerSpec) -> np.ndarray | None:
        """Bias per output channel (last axis), or None."""
        b = spec.weights.get("bias")
        return None if b is None else np.asarray(b, dtype=np.float32).reshape(-1)

    def rows(self, spec: LayerSpec) -> int:
        """Number of independent work rows (tasks are blocks of rows)."""
        return 1

    def count_edges(self, spec: LayerSpec) -> int:
        """Exact edge count, computed analytically."""
        return 0

    def edges(self, spec: LayerSpec, lo: int, hi: int, max_edges: int) -> Iterator[EdgeChunk]:
        """Edges of rows [lo, hi) in chunks of at most max_edges."""
        return iter(())

    def rows_touched(
        self, spec: LayerSpec, targets: np.ndarray | None, sources: np.ndarray | None
    ) -> list[tuple[int, int]]:
        """The [lo, hi) row runs whose edges can reach ``targets`` or leave ``sources`` (sorted ids).

        A superset is fine (callers filter the edges); the default is every row. Families whose
        rows map to output rows or input units narrow it, so a cone reads only its rows.
        """
        return [(0, self.rows(spec))]

    def channel_parts(self, cg: ChannelRules, spec: LayerSpec) -> list[Part]:
        """The channel-granularity edges of a layer that owns neurons, as parts (built with ``cg``)."""
        cg.refuse(spec, "no channel-level rule for this layer family yet")
        return []


def output_rows_touched(spec: LayerSpec, targets: np.ndarray) -> list[tuple[int, int]]:
    """The output rows (first axis) holding ``targets``, for families whose rows are output rows."""
    per_row = math.prod(spec.output.shape[1:])
    return runs(np.unique((targets - spec.output.offset) // per_row))


def input_rows(spec: LayerSpec, sources: np.ndarray) -> np.ndarray:
    """The rows (first axis) of the single input that hold ``sources``, sorted and unique."""
    src_t = spec.inputs[0]
    return np.unique((sources - src_t.offset) // math.prod(src_t.shape[1:]))


def activation_name(value: Any) -> str:
    """Normalise a Keras activation config value to its name."""
    if value is None:
        return "linear"
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return str(value.get("config", value).get("name", value.get("class_name", "custom")))
    return getattr(value, "__name__", str(value))


class Arena:
    """Preallocated chunk buffers: reusing them avoids page faults on every chunk (~1.5x faster)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.source = np.empty(capacity, np.int64)
        self.target = np.empty(capacity, np.int64)
        self.weight = np.empty(capacity, np.float32)
        self.scratch = np.empty(capacity, np.uint64)


#: Below this many positions per pair, emit_pairs fills columns (one numpy call per position).
_FEW_POSITIONS = 8

_ARENA: ContextVar[Arena | None] = ContextVar("cnngraph_arena", default=None)


@contextmanager
def reused_buffers(capacity: int) -> Iterator[Arena]:
    """Let emitters write chunks into shared buffers while the block runs.

    Inside it, a chunk's arrays are valid only until the next chunk is requested: a consumer that
    keeps chunks must copy them. Consumers that encode or reduce each chunk at once opt in.
    """
    arena = Arena(capacity)
    token = _ARENA.set(arena)
    try:
        yield arena
    finally:
        _ARENA.reset(token)


@dataclass(frozen=True)
class PairBlock:
    """What :func:`emit_pairs` was asked to materialise, before expansion into single edges.

    Edges ``src_base[p] + pair_src[k] -> tgt_base[p] + pair_tgt[k]`` with weight ``pair_w[k]``
    (times ``pos_w[p]``, rounded to float32, when given). The arrays belong to the caller: a
    consumer reads them at once and keeps no reference.
    """

    src_base: np.ndarray
    tgt_base: np.ndarray
    pair_src: np.ndarray
    pair_tgt: np.ndarray
    pair_w: np.ndarray
    kind: str
    pos_w: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.src_base) * len(self.pair_src)


#: A consumer of whole blocks: returns True when it took the block (emit_pairs then yields nothing).
BlockConsumer = Callable[[PairBlock], bool]

_CONSUMER: ContextVar[BlockConsumer | None] = ContextVar("cnngraph_block_consumer", default=None)


@contextmanager
def block_consumer(fn: BlockConsumer) -> Iterator[None]:
    """Offer every :func:`emit_pairs` block to ``fn`` while the block runs (reducers, not writers).

    Blocks ``fn`` takes produce no chunks; the others are materialised as usual, so the chunks a
    consumer still sees plus the blocks it took are exactly the layer's edges. Analysis uses it to
    reduce whole kernels at once; extraction never sets it, so its output does not change.
    """
    token = _CONSUMER.set(fn)
    try:
        yield
    finally:
        _CONSUMER.reset(token)


def emit_pairs(
    src_base: np.ndarray,
    tgt_base: np.ndarray,
    pair_src: np.ndarray,
    pair_tgt: np.ndarray,
    pair_w: np.ndarray,
    kind: str,
    max_edges: int,
    pos_w: np.ndarray | None = None,
) -> Iterator[EdgeChunk]:
    """Edges ``src_base[p] + pair_src[k] -> tgt_base[p] + pair_tgt[k]`` for all pairs k, positions p.

    Weight is ``pair_w[k]`` (times ``pos_w[p]`` when given). Pairs outermost, positions innermost;
    chunks hold at most ``max_edges`` edges (at least one pair row, split over positions if needed).
    Under :func:`block_consumer`, the consumer may take the whole block instead.
    """
    n_pos, n_pairs = len(src_base), len(pair_src)
    if n_pos == 0 or n_pairs == 0:
        return
    consumer = _CONSUMER.get()
    if consumer is not None and consumer(PairBlock(src_base, tgt_base, pair_src, pair_tgt, pair_w, kind, pos_w)):
        return
    if n_pos > max_edges:  # huge position sets: split them, one pair at a time
        for p0 in range(0, n_pos, max_edges):
            p1 = min(p0 + max_edges, n_pos)
            yield from emit_pairs(
                src_base[p0:p1], tgt_base[p0:p1], pair_src, pair_tgt, pair_w, kind, max_edges,
                None if pos_w is None else pos_w[p0:p1],
            )
        return
    step = max(1, max_edges // n_pos)
    arena = _ARENA.get()
    for k0 in range(0, n_pairs, step):
        k1 = min(k0 + step, n_pairs)
        m = (k1 - k0) * n_pos
        if arena is not None and m <= arena.capacity:
            src, tgt, w = arena.source[:m], arena.target[:m], arena.weight[:m]
        else:
            src, tgt, w = np.empty(m, np.int64), np.empty(m, np.int64), np.empty(m, np.float32)
        shape = (k1 - k0, n_pos)
        if n_pos < _FEW_POSITIONS:  # numpy's inner loops would run over n_pos items: go by column
            s2, t2, w2 = src.reshape(shape), tgt.reshape(shape), w.reshape(shape)
            for p in range(n_pos):
                np.add(pair_src[k0:k1], src_base[p], out=s2[:, p])
                np.add(pair_tgt[k0:k1], tgt_base[p], out=t2[:, p])
                if pos_w is None:
                    w2[:, p] = pair_w[k0:k1]
                else:
                    np.multiply(pair_w[k0:k1], pos_w[p], out=w2[:, p], casting="unsafe")
        else:
            np.add(pair_src[k0:k1, None], src_base[None, :], out=src.reshape(shape))
            np.add(pair_tgt[k0:k1, None], tgt_base[None, :], out=tgt.reshape(shape))
            if pos_w is None:
                w.reshape(shape)[...] = pair_w[k0:k1, None]
            else:
                np.multiply(pair_w[k0:k1, None], pos_w[None, :], out=w.reshape(shape), casting="unsafe")
        yield EdgeChunk(src, tgt, w, kind)


def full_pair_ids(n_in: int, n_out: int, groups: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(input channel, output channel) of every pair of a dense channel mixing, row-major.

    Group g maps its input slice to its output slice; :func:`pair_weights` gives the weights.
    """
    cin_g, cout_g = n_in // groups, n_out // groups
    a = np.arange(cin_g, dtype=np.int64)
    b = np.arange(cout_g, dtype=np.int64)
    srcs, tgts = [], []
    for g in range(groups):
        srcs.append(np.repeat(g * cin_g + a, cout_g))
        tgts.append(np.tile(g * cout_g + b, cin_g))
    return np.concatenate(srcs), np.concatenate(tgts)


def pair_weights(kernel: np.ndarray, groups: int = 1) -> np.ndarray:
    """The weights of :func:`full_pair_ids`' pairs, for a kernel of shape (n_in // groups, n_out)."""
    kernel = np.asarray(kernel)
    if groups == 1:
        return np.ascontiguousarray(kernel, dtype=np.float32).reshape(-1)
    cout_g = kernel.shape[1] // groups
    return np.concatenate(
        [kernel[:, g * cout_g : (g + 1) * cout_g].reshape(-1) for g in range(groups)]
    ).astype(np.float32)


def diagonal_pairs(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Channel c -> channel c with weight 1."""
    c = np.arange(n, dtype=np.int64)
    return c, c, np.ones(n, dtype=np.float32)


ID_DTYPE = schema.ID_DTYPE
