"""The analysis of a ``neo4j:NAME`` source where the graph is: PageRank in GDS, measures written back.

:func:`gds_pagerank` replaces the streaming forward pass (a second read of every relationship over
Bolt) by GDS PageRank on a temporary projection with ``abs_weight``: run without a tolerance for
one iteration more than the graph is deep, the power iteration reaches the exact fixed point on
our DAG, so the numbers equal the streaming pass's (to float64 rounding). :func:`write_measures`
stores the per-neuron measures as node properties (``--write``), so Browser queries can sort and
filter by them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from pipeline.analyze import columns
from pipeline.progress import NULL, Progress

#: Neurons per write transaction.
WRITE_BATCH = 20_000
#: The per-neuron columns ``--write`` stores, under the same names.
WRITTEN = (columns.IN_DEGREE, columns.OUT_DEGREE, columns.IN_STRENGTH, columns.OUT_STRENGTH, columns.PAGERANK,
           columns.INFLUENCE)


def has_gds(src) -> bool:
    """True when the source's server runs Graph Data Science."""
    records, _, _ = src.driver.execute_query(
        "SHOW PROCEDURES YIELD name WHERE name = 'gds.pageRank.stream' RETURN count(*) AS n")
    return bool(records[0]["n"])


def gds_pagerank(src, pagerank: np.ndarray, depth: int, min_abs_weight: float | None,
                 progress: Progress = NULL) -> None:
    """Fill ``pagerank`` (indexed by neuron id) from GDS PageRank on |w| of the whole model."""
    from pipeline.neo4j import gds

    graph = f"cnngraph_analyze_{uuid.uuid4().hex[:12]}"
    gds.project(src.conn, src.model, graph, min_abs_weight=min_abs_weight, progress=progress)
    try:
        ids, scores = gds.pagerank(src.conn, graph, iterations=depth + 1, tolerance=0.0)
    finally:
        gds.drop(src.conn, graph)
    pagerank[ids] = scores


def write_measures(src, tables: Iterator[pa.Table], progress: Progress = NULL) -> int:
    """Set the per-neuron measures of ``tables`` (neurons.parquet's batches) as properties of the
    model's ``:Neuron`` nodes; returns the number of neurons written. Idempotent: a rerun sets the
    same values."""
    query = ("UNWIND $rows AS r MATCH (n:Neuron {model: $model, id: r.id}) SET n += r.props "
             "RETURN count(n) AS n")
    written = 0
    for table in tables:
        names = [c for c in WRITTEN if c in table.column_names]
        ids = table.column(columns.ID).to_numpy()
        values = {c: table.column(c).to_numpy().tolist() for c in names}
        for lo in range(0, len(ids), WRITE_BATCH):
            rows = [{"id": int(i), "props": {c: values[c][k] for c in names}}
                    for k, i in enumerate(ids[lo:lo + WRITE_BATCH].tolist(), start=lo)]
            records, _, _ = src.driver.execute_query(query, rows=rows, model=src.model)
            written += int(records[0]["n"])
            progress.advance(len(rows))
    return written
