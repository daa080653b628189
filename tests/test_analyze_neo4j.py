"""The analysis of a neo4j:NAME source uses GDS for PageRank (same numbers as streaming) and
``write=True`` stores the per-neuron measures on the neurons."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.analyze import analyze, columns
from pipeline.errors import UsageError
from pipeline.neo4j import loader
from tests.test_neo4j_load import extract_tiny

MODEL = "analyze_write"


def test_gds_pagerank_and_write(neo4j_conn, neo4j_driver, tmp_path):
    folder = extract_tiny(tmp_path / "ex", 11, MODEL)
    loader.load(folder, "online", MODEL, replace=True, conn=neo4j_conn)
    try:
        analyze(folder, tmp_path / "f", target="fc:2")
        analyze(f"neo4j:{MODEL}", tmp_path / "n", target="fc:2", conn=neo4j_conn, write=True)
        summary = json.loads((tmp_path / "n" / columns.SUMMARY_FILE).read_text())
        assert "pagerank (GDS)" in summary["measures"]
        streamed = pd.read_parquet(tmp_path / "f" / columns.NEURONS_FILE)
        in_db = pd.read_parquet(tmp_path / "n" / columns.NEURONS_FILE)
        assert np.array_equal(streamed[columns.ID], in_db[columns.ID])
        np.testing.assert_allclose(in_db[columns.PAGERANK], streamed[columns.PAGERANK], rtol=1e-12)
        records, _, _ = neo4j_driver.execute_query(
            "MATCH (n:Neuron {model: $m}) RETURN n.id AS id, n.pagerank AS pagerank, n.in_strength AS s, "
            "n.influence AS influence, n.out_degree AS out_degree ORDER BY id", m=MODEL)
        stored = pd.DataFrame([r.data() for r in records])
        assert np.array_equal(stored["id"], in_db[columns.ID])
        np.testing.assert_array_equal(stored["pagerank"], in_db[columns.PAGERANK])
        np.testing.assert_array_equal(stored["s"], in_db[columns.IN_STRENGTH])
        np.testing.assert_array_equal(stored["influence"], in_db[columns.INFLUENCE])
        np.testing.assert_array_equal(stored["out_degree"], in_db[columns.OUT_DEGREE])
        leftover, _, _ = neo4j_driver.execute_query(
            "CALL gds.graph.list() YIELD graphName WHERE graphName STARTS WITH 'cnngraph_analyze_' RETURN count(*) AS n")
        assert leftover[0]["n"] == 0  # the temporary projection is dropped
    finally:
        loader.drop(neo4j_conn, MODEL)
    with pytest.raises(UsageError, match="needs a neo4j:NAME source"):
        analyze(folder, tmp_path / "w", write=True)
