"""Graph Data Science on the test server: the shipped gds_*.cypher queries and pipeline.neo4j.gds
give what an independent numpy computation on the extracted edges gives."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import schema
from pipeline.errors import Neo4jError, UsageError
from pipeline.neo4j import gds, loader
from pipeline.neo4j.query import run_query, shipped
from tests.test_neo4j_load import ext_edges, ext_nodes, extract_tiny

MODEL = "gdsq"
GRAPH = "gdsq_graph"


@pytest.fixture(scope="module")
def projected(neo4j_conn, tmp_path_factory):
    folder = extract_tiny(tmp_path_factory.mktemp("ext") / MODEL, 5, MODEL)
    loader.load(folder, "online", MODEL, replace=True, conn=neo4j_conn)
    gds.drop(neo4j_conn, GRAPH)
    info = gds.project(neo4j_conn, MODEL, GRAPH, paths=True)
    try:
        yield neo4j_conn, info, ext_nodes(folder), ext_edges(folder)
    finally:
        gds.drop(neo4j_conn, GRAPH)
        loader.drop(neo4j_conn, MODEL)


def rows(conn, name: str, **params) -> list[dict]:
    keys, values = run_query(shipped(name), {"graph": GRAPH, "model": MODEL, **params}, conn=conn)
    return [dict(zip(keys, v, strict=True)) for v in values]


def test_projection_holds_every_neuron_and_edge(projected):
    _, info, nodes, edges = projected
    assert (info["graph"], info["nodes"], info["relationships"]) == (GRAPH, len(nodes), len(edges))


def test_memory_check_counts_the_model(projected):
    conn, _, nodes, edges = projected
    mem = gds.memory(conn, MODEL)
    assert (mem["neurons"], mem["relationships"]) == (len(nodes), len(edges))
    assert mem["needed_bytes"] == gds.projection_bytes(len(nodes), len(edges))
    assert 0 < mem["free_heap_bytes"] <= mem["max_heap_bytes"]


def test_weighted_degree_is_exact(projected):
    conn, _, nodes, edges = projected
    ids, into, out = gds.strength(conn, GRAPH)
    assert np.array_equal(ids, nodes[schema.ID].to_numpy())
    w = np.abs(edges[schema.WEIGHT].to_numpy().astype(np.float64))
    index = np.searchsorted(ids, edges[schema.TARGET].to_numpy())
    np.testing.assert_allclose(into, np.bincount(index, w, len(ids)), rtol=1e-12, atol=0)
    index = np.searchsorted(ids, edges[schema.SOURCE].to_numpy())
    np.testing.assert_allclose(out, np.bincount(index, w, len(ids)), rtol=1e-12, atol=0)
    by_layer = {(r["layer"], r["direction"]): r for r in rows(conn, "gds_strength")}
    for layer, group in nodes.groupby(schema.LAYER):
        mine = np.isin(ids, group[schema.ID].to_numpy())
        assert by_layer[(layer, "in")]["neurons"] == mine.sum()
        assert by_layer[(layer, "in")]["total"] == pytest.approx(into[mine].sum(), rel=1e-12)
        assert by_layer[(layer, "out")]["max"] == pytest.approx(out[mine].max(), rel=1e-12)


def power_iteration(ids: np.ndarray, edges, steps: int) -> np.ndarray:
    """GDS's PageRank formula, PR(v) = 0.15 + 0.85 * sum PR(u) |w| / out_strength(u), iterated."""
    src = np.searchsorted(ids, edges[schema.SOURCE].to_numpy())
    dst = np.searchsorted(ids, edges[schema.TARGET].to_numpy())
    w = np.abs(edges[schema.WEIGHT].to_numpy().astype(np.float64))
    out = np.bincount(src, w, len(ids))
    pr = np.full(len(ids), 0.15)
    for _ in range(steps):
        pr = 0.15 + 0.85 * np.bincount(dst, pr[src] * w / out[src], len(ids))
    return pr


def test_pagerank_equals_a_power_iteration(projected):
    conn, _, nodes, edges = projected
    ids, score = gds.pagerank(conn, GRAPH)
    assert np.array_equal(ids, nodes[schema.ID].to_numpy())
    want = power_iteration(ids, edges, steps=10)  # the model is 4 layers deep: 10 steps converge
    np.testing.assert_allclose(score, want, rtol=1e-6)
    assert score.min() >= 0.15 - 1e-12  # |w|: never the negative scores signed weights give
    top = rows(conn, "gds_pagerank")
    assert len(top) == 25 and top[0]["id"] == ids[np.argmax(score)]
    assert top[0]["score"] == pytest.approx(score.max(), rel=1e-9)


def test_louvain_covers_every_neuron(projected):
    conn, _, nodes, _ = projected
    communities = rows(conn, "gds_louvain")
    assert communities and sum(c["neurons"] for c in communities) <= len(nodes)
    records = run_query("CALL gds.louvain.stream($graph, {relationshipWeightProperty: 'abs_weight'}) "
                        "YIELD nodeId, communityId RETURN gds.util.asNode(nodeId).id AS id, communityId",
                        {"graph": GRAPH}, conn=conn)[1]
    assert sorted(r[0] for r in records) == sorted(nodes[schema.ID])
    assert 1 < len({r[1] for r in records}) < len(nodes)


def test_strongest_path_is_the_max_product_path(projected):
    conn, _, nodes, edges = projected
    first = nodes[nodes[schema.LAYER] == "input"][schema.ID].min()
    target = nodes[nodes[schema.LAYER] == "fc"][schema.ID].max()
    weight = {(s, t): abs(float(w)) for s, t, w in edges[[schema.SOURCE, schema.TARGET, schema.WEIGHT]].itertuples(index=False)}
    succ: dict[int, list[int]] = {}
    for s, t in weight:
        succ.setdefault(s, []).append(t)

    def paths(node):  # explicit enumeration of every path from node to the target
        if node == target:
            yield [node]
        for nxt in succ.get(node, []):
            for rest in paths(nxt):
                yield [node, *rest]

    best = max(paths(first), key=lambda p: np.prod([weight[e] for e in zip(p, p[1:], strict=False)]))
    (row,) = rows(conn, "gds_strongest_path", source=int(first), target=int(target))
    assert row["ids"] == best
    assert row["product"] == pytest.approx(np.prod([weight[e] for e in zip(best, best[1:], strict=False)]), rel=1e-6)


def test_projection_refused_when_it_does_not_fit(projected):
    conn, _, _, edges = projected
    with pytest.raises(Neo4jError, match=r"needs about .* of heap and the server has .* free.*CNNGRAPH_NEO4J_HEAP"):
        gds.project(conn, MODEL, "gdsq_small", heap_fraction=1e-9)
    assert not run_query("CALL gds.graph.exists('gdsq_small') YIELD exists RETURN exists", {}, conn=conn)[1][0][0]
    with pytest.raises(UsageError, match="exists; drop it first"):
        gds.project(conn, MODEL, GRAPH)
    with pytest.raises(UsageError, match="invalid projection name"):
        gds.project(conn, MODEL, "bad name")


def test_min_abs_weight_projects_fewer_edges(projected):
    conn, _, nodes, edges = projected
    info = gds.project(conn, MODEL, "gdsq_cut", min_abs_weight=0.3)
    try:
        kept = int((np.abs(edges[schema.WEIGHT].to_numpy().astype(np.float64)) >= 0.3).sum())
        assert 0 < kept < len(edges)
        assert (info["nodes"], info["relationships"]) == (len(nodes), kept)  # every neuron stays
    finally:
        assert gds.drop(conn, "gdsq_cut")
    assert not gds.drop(conn, "gdsq_cut")
