"""The interface every export source implements (:class:`Source`) and what the selection engine
knows of a layer (:class:`LayerInfo`). Kept apart from the sources themselves so that the Neo4j
source and the model and folder sources depend on it, not on each other."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from pipeline import schema
from pipeline.errors import UsageError
from pipeline.export.edges import Edges


@dataclass
class LayerInfo:
    """What the selection engine needs to know of a layer, from any source."""

    index: int
    name: str
    type: str
    offset: int  # first id of the layer's output tensor (an alias: of the tensor it re-indexes)
    shape: tuple[int, ...]
    owns: bool  # the layer makes its own neurons
    edges: int
    inputs: list[tuple[int, int]] = field(default_factory=list)  # id ranges of its input tensors

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def stop(self) -> int:
        return self.offset + self.size


class Source:
    """Where edges and nodes come from. Subclasses narrow the work for ``targets``/``sources``."""

    name: str
    layers: list[LayerInfo]
    #: The extraction's granularity (schema.GRANULARITIES); coarse ones carry extra columns.
    granularity: str = schema.NEURON

    @property
    def extra_edge_columns(self) -> list[pa.Field]:
        """Edge columns beyond the neuron schema that this source's edges carry."""
        return [f for f in schema.edge_schema(self.granularity) if f.name in schema.EXTRA_EDGE_COLUMNS]

    @property
    def extra_node_columns(self) -> list[pa.Field]:
        """Node columns beyond the neuron schema that this source's node tables carry."""
        return [f for f in schema.node_schema(self.granularity) if f.name in schema.EXTRA_NODE_COLUMNS]

    def edges(self, layer: LayerInfo, targets: np.ndarray | None = None,
              sources: np.ndarray | None = None) -> Iterator[Edges]:
        """The edges into ``layer``'s neurons (a superset is fine when targets/sources are given:
        the caller filters exactly)."""
        raise NotImplementedError

    def nodes(self, ids: np.ndarray) -> pa.Table:
        """The node table (schema.NODE_SCHEMA) of sorted unique ``ids``, in id order."""
        raise NotImplementedError

    def cypher(self, query: str) -> Iterator[Edges]:
        """The edges a Cypher query returns (only a Neo4j source can)."""
        raise UsageError("--cypher selects from a model loaded into Neo4j: use SOURCE neo4j:NAME")

    def close(self) -> None:
        """Release what the source holds (a database driver); a no-op by default."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # shared helpers
    def owner(self, ids: np.ndarray) -> np.ndarray:
        """Index into ``self.owners`` of the layer owning each id."""
        starts = np.array([la.offset for la in self.owners], np.int64)
        return np.searchsorted(starts, ids, side="right") - 1

    @property
    def owners(self) -> list[LayerInfo]:
        """The layers that make their own neurons, by first id."""
        cached = getattr(self, "_owners", None)
        if cached is None:
            cached = self._owners = sorted((la for la in self.layers if la.owns), key=lambda la: la.offset)
        return cached


def concat_nodes(tables: list[pa.Table], granularity: str = schema.NEURON) -> pa.Table:
    """Node tables as one (an empty table of the granularity's schema for none)."""
    if not tables:
        return schema.node_schema(granularity).empty_table()
    table = pa.concat_tables(tables).unify_dictionaries()
    return table.combine_chunks()
