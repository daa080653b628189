"""What sources hand to the selection engine: batches of edges as columns, sets of neuron ids,
edge kinds as small codes, and ``[lo, hi)`` runs of ids (the unit of a range read)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from pipeline import schema
from pipeline.layers.base import runs

__all__ = ["CHUNK_EDGES", "KINDS", "Edges", "IdSet", "batch_runs", "kind_array", "kind_code", "runs"]

#: Edges per chunk read from a source.
CHUNK_EDGES = 2_000_000

#: Edge kinds by code; unknown kinds read from files or Neo4j are appended.
KINDS: list[str] = [v for k, v in vars(schema.Kind).items() if not k.startswith("_")]

_KINDS_LOCK = threading.Lock()


def kind_code(name: str) -> int:
    """The code of edge kind ``name`` in :data:`KINDS` (a kind met for the first time is added)."""
    if name not in KINDS:
        with _KINDS_LOCK:  # Neo4j batches are decoded in fetch threads
            if name not in KINDS:
                KINDS.append(name)
    return KINDS.index(name)


def kind_array(codes: np.ndarray) -> pa.DictionaryArray:
    """Kind codes as the dictionary column sinks write (names from :data:`KINDS`)."""
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(KINDS))


@dataclass
class Edges:
    """A batch of edges as columns; ``kind`` holds codes into :data:`KINDS`; ``extra`` the
    coarse-granularity columns (``schema.EXTRA_EDGE_COLUMNS``: kernel slices, tensor shapes)."""

    source: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    kind: np.ndarray
    extra: dict[str, pa.Array] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.source)

    @classmethod
    def of(cls, source, target, weight, kind: str | np.ndarray) -> Edges:
        """Edges from array-likes, with one kind name for all or an array of codes."""
        s = np.asarray(source, dtype=np.int64)
        codes = np.full(len(s), kind_code(kind), np.uint8) if isinstance(kind, str) else kind
        return cls(s, np.asarray(target, np.int64), np.asarray(weight, np.float32), codes)

    def take(self, idx: np.ndarray | slice) -> Edges:
        """The edges at ``idx`` (positions or a slice)."""
        if isinstance(idx, slice):
            extra = {k: v[idx] for k, v in self.extra.items()}
        else:
            extra = {k: v.take(pa.array(idx, pa.int64())) for k, v in self.extra.items()}
        return Edges(self.source[idx], self.target[idx], self.weight[idx], self.kind[idx], extra)

    @classmethod
    def concat(cls, parts: list[Edges]) -> Edges:
        """One batch of all ``parts``, in order (an empty batch for none)."""
        parts = [p for p in parts if len(p)] or parts[:1]
        if not parts:
            return cls.of(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32),
                          np.zeros(0, np.uint8))
        extra = {k: pa.concat_arrays([p.extra[k] for p in parts]) for k in parts[0].extra}
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("source", "target", "weight", "kind")),
                   extra)

    def table(self) -> pa.Table:
        """The edges in the extraction schema (with the coarse columns they carry)."""
        cols = {schema.SOURCE: self.source, schema.TARGET: self.target, schema.WEIGHT: self.weight,
                schema.KIND: kind_array(self.kind), **self.extra}
        fields = [*schema.EDGE_SCHEMA, *(pa.field(k, v.type) for k, v in self.extra.items())]
        return pa.table(cols, schema=pa.schema(fields))


class IdSet:
    """A growable bitmap of neuron ids (ids are dense, so this is at most one byte per neuron)."""

    def __init__(self, size: int = 0):
        self.bits = np.zeros(size, bool)

    def add(self, ids: np.ndarray) -> None:
        """Add ``ids`` (any order, repeats allowed)."""
        if len(ids) == 0:
            return
        top = int(ids.max()) + 1
        if top > len(self.bits):
            grown = np.zeros(max(top, 2 * len(self.bits)), bool)
            grown[: len(self.bits)] = self.bits
            self.bits = grown
        self.bits[ids] = True

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """A mask: which of ``ids`` are in the set."""
        ok = ids < len(self.bits)
        out = np.zeros(len(ids), bool)
        out[ok] = self.bits[ids[ok]]
        return out

    def ids(self) -> np.ndarray:
        """The ids in the set, sorted."""
        return np.flatnonzero(self.bits).astype(np.int64)


def batch_runs(spans: list[tuple[int, int]], size: int) -> Iterator[tuple[list[int], list[int]]]:
    """[lo, hi) runs as (los, his) lists covering at most ``size`` ids each (long runs split)."""
    los: list[int] = []
    his: list[int] = []
    room = size
    for lo, hi in spans:
        while lo < hi:
            take = min(hi - lo, room)
            los.append(lo)
            his.append(lo + take)
            lo += take
            room -= take
            if room == 0:
                yield los, his
                los, his, room = [], [], size
    if los:
        yield los, his
