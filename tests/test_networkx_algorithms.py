"""NetworkX's common algorithms on an export, each against a small independent computation (numpy
on the extraction folder's tables) or an invariant that can fail; the ``abs_weight`` attribute in
NetworkX, GraphML (read back by NetworkX and igraph) and the CLI; the README's pandas section."""

from __future__ import annotations

import re
from pathlib import Path

import igraph
import networkx as nx
import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipeline import export, schema
from pipeline.cli import cli
from pipeline.extract import extract
from pipeline.model import walk
from tests.helpers import tiny_cnn

ALPHA = 0.85


@pytest.fixture(scope="module")
def model():
    """The suite's tiny CNN, a chain: input 6x5x2 -> conv -> pool -> (flat) -> fc."""
    return tiny_cnn(seed=2)


@pytest.fixture(scope="module")
def graph(model):
    return walk(model)


@pytest.fixture(scope="module")
def table(graph, tmp_path_factory):
    """The extraction folder's edge table (pyarrow alone) and every neuron id, sorted."""
    out = tmp_path_factory.mktemp("algorithms") / "tiny"
    extract(graph, out)
    edges = pq.read_table(out / schema.EDGES_DIR).to_pandas()
    ids = np.sort(pq.read_table(out / schema.NODES_DIR, columns=[schema.ID]).column(schema.ID).to_numpy())
    return edges, ids


@pytest.fixture(scope="module")
def G(graph):
    return export.to_networkx(graph, abs_weight=True)


def dense(edges, ids, weight=True) -> np.ndarray:
    """The adjacency matrix over ``ids``: |weight| (or 1) per edge."""
    n = len(ids)
    s, t = np.searchsorted(ids, edges[schema.SOURCE]), np.searchsorted(ids, edges[schema.TARGET])
    A = np.zeros((n, n))
    np.add.at(A, (s, t), np.abs(edges[schema.WEIGHT].to_numpy(np.float64)) if weight else 1.0)
    return A


def as_vector(values: dict, ids) -> np.ndarray:
    return np.array([values[int(i)] for i in ids])


def test_abs_weight_attribute(graph, G):
    plain = export.to_networkx(graph)
    assert all(export.ABS_WEIGHT not in d for _, _, d in plain.edges(data=True))
    assert nx.utils.edges_equal(plain.edges, G.edges)
    assert all(type(d[export.ABS_WEIGHT]) is float and d[export.ABS_WEIGHT] == abs(d[schema.WEIGHT])
               for _, _, d in G.edges(data=True))
    assert min(d[schema.WEIGHT] for _, _, d in G.edges(data=True)) < 0  # the point: weights are signed


def test_pagerank_on_abs_weight_equals_a_power_iteration(G, table):
    """nx.pagerank on |w| equals numpy's power iteration of the same chain (dangling neurons, the
    outputs, spread their rank uniformly, as NetworkX does); on the signed weight it does not."""
    edges, ids = table
    A = dense(edges, ids)
    out = A.sum(axis=1)
    P = np.divide(A, out[:, None], out=np.zeros_like(A), where=out[:, None] > 0)
    dangling = out == 0
    n = len(ids)
    x = np.full(n, 1 / n)
    for _ in range(10_000):
        nxt = ALPHA * (x @ P + x[dangling].sum() / n) + (1 - ALPHA) / n
        done = np.abs(nxt - x).sum() < 1e-15
        x = nxt
        if done:
            break
    rank = nx.pagerank(G, alpha=ALPHA, weight=export.ABS_WEIGHT, tol=1e-13, max_iter=10_000)
    np.testing.assert_allclose(as_vector(rank, ids), x, rtol=1e-7, atol=1e-12)
    assert abs(sum(rank.values()) - 1) < 1e-9
    try:
        signed = as_vector(nx.pagerank(G, alpha=ALPHA), ids)  # NetworkX's default reads "weight"
    except nx.PowerIterationFailedConvergence:
        return
    assert np.abs(signed - x).max() > 1e-3


def test_hits_on_abs_weight_equals_the_singular_vectors(G, table):
    """nx.hits always reads "weight": give it a graph whose weight is |w|; authorities are then the
    top right singular vector of |W| and hubs |W| times it (each summing to 1)."""
    edges, ids = table
    H = nx.DiGraph()
    H.add_nodes_from(G)
    H.add_weighted_edges_from(G.edges(data=export.ABS_WEIGHT))
    hubs, authorities = nx.hits(H, max_iter=10_000, tol=1e-12)
    A = dense(edges, ids)
    _, S, Vt = np.linalg.svd(A)
    assert S[0] > 1.01 * S[1]  # a unique top singular vector
    a = np.abs(Vt[0]) / np.abs(Vt[0]).sum()
    h = A @ a / (A @ a).sum()
    np.testing.assert_allclose(as_vector(authorities, ids), a, atol=1e-8)
    np.testing.assert_allclose(as_vector(hubs, ids), h, atol=1e-8)


def test_betweenness_equals_path_counts(G, table):
    """In a chain every path between two neurons has the same length, so all are shortest:
    betweenness(v) = sum over s, t of paths(s, v) * paths(v, t) / paths(s, t)."""
    edges, ids = table
    B = dense(edges, ids, weight=False)
    N, power = np.zeros_like(B), np.eye(len(ids))
    for _ in range(len(ids)):
        power = power @ B
        if not power.any():
            break
        N += power
    through = N[:, :, None] * N[None, :, :]  # [s, v, t]
    want = np.divide(through, N[:, None, :], out=np.zeros_like(through), where=N[:, None, :] > 0).sum(axis=(0, 2))
    got = as_vector(nx.betweenness_centrality(G, normalized=False), ids)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    assert want.max() > 0


def test_degree_histogram(G, table):
    edges, ids = table
    pos = np.searchsorted(ids, np.concatenate([edges[schema.SOURCE], edges[schema.TARGET]]))
    degree = np.bincount(pos, minlength=len(ids))
    assert nx.degree_histogram(G) == np.bincount(degree).tolist()
    assert len(G) == len(ids)


def test_dag_longest_path(graph, G, table):
    """Unweighted: the chain's depth (one edge per neuron-making layer after the input), one
    neuron per layer in order. On |w|: the value of a numpy dynamic programme, layer by layer."""
    layers = [s.name for s in graph.layers if s.makes_neurons]
    path = nx.dag_longest_path(G, weight=None)
    assert len(path) - 1 == nx.dag_longest_path_length(G, weight=None) == len(layers) - 1 == 3
    assert [G.nodes[n][schema.LAYER] for n in path] == layers
    edges, ids = table
    s, t = np.searchsorted(ids, edges[schema.SOURCE]), np.searchsorted(ids, edges[schema.TARGET])
    w = np.abs(edges[schema.WEIGHT].to_numpy(np.float64))
    best = np.zeros(len(ids))
    for name in layers[1:]:  # targets of a layer only read sources of earlier layers
        out = graph.layer(name).output
        mine = (edges[schema.TARGET] >= out.offset).to_numpy() & (edges[schema.TARGET] < out.offset + out.size).to_numpy()
        np.maximum.at(best, t[mine], best[s[mine]] + w[mine])
    strongest = nx.dag_longest_path(G, weight=export.ABS_WEIGHT)
    assert nx.dag_longest_path_length(G, weight=export.ABS_WEIGHT) == pytest.approx(best.max(), rel=1e-12)
    assert len(strongest) == 4  # |w| > 0 everywhere: the heaviest path runs through every layer


def test_weakly_connected_components(graph, G):
    """The whole chain is one component; the pooling layer alone is one component per pooling
    neuron: itself and its 2x2 window of disjoint conv neurons."""
    assert nx.number_weakly_connected_components(G) == 1
    pool = export.to_networkx(graph, layers="pool:pool")
    parts = list(nx.weakly_connected_components(pool))
    assert len(parts) == graph.layer("pool").output.size == 18
    assert {len(p) for p in parts} == {1 + 2 * 2}


def test_graphml_abs_weight_read_back(graph, G, tmp_path):
    """The abs_weight key is a double; NetworkX and igraph read it as a float equal to |weight| in
    float32, and their PageRank on it agrees with the one on the exported DiGraph."""
    path = tmp_path / "g.graphml"
    res = export.write_graphml(graph, path, abs_weight=True)
    assert res.edges == G.number_of_edges()
    text = path.read_text()
    assert re.search(r'<key id="d\d+" for="edge" attr.name="abs_weight" attr.type="double"/>', text)
    H = nx.read_graphml(path, node_type=int)
    assert set(H.edges) == set(G.edges)
    for u, v, d in H.edges(data=True):
        assert type(d[export.ABS_WEIGHT]) is float
        assert np.float32(d[export.ABS_WEIGHT]) == abs(np.float32(d[schema.WEIGHT])) == np.float32(G[u][v][export.ABS_WEIGHT])
    rank = nx.pagerank(G, weight=export.ABS_WEIGHT, tol=1e-12)
    back = nx.pagerank(H, weight=export.ABS_WEIGHT, tol=1e-12)
    assert max(abs(rank[n] - back[n]) for n in G) < 1e-6
    g = igraph.Graph.Read_GraphML(str(path))
    assert set(g.es.attributes()) == {schema.WEIGHT, schema.KIND, export.ABS_WEIGHT}
    assert all(isinstance(a, float) for a in g.es[export.ABS_WEIGHT])
    np.testing.assert_array_equal(np.float32(g.es[export.ABS_WEIGHT]), np.abs(np.float32(g.es[schema.WEIGHT])))
    ids = [int(v) for v in g.vs["id"]]
    ig_rank = g.pagerank(weights=export.ABS_WEIGHT, damping=ALPHA, directed=True)
    assert max(abs(r - rank[n]) for n, r in zip(ids, ig_rank, strict=True)) < 1e-6


def test_cli_abs_weight(model, tmp_path):
    path = tmp_path / "tiny.keras"
    model.save(path)
    out = tmp_path / "a.graphml"
    runner = CliRunner()
    res = runner.invoke(cli, ["export", str(path), "--out", str(out), "--abs-weight", "-s"])
    assert res.exit_code == 0, res.output
    H = nx.read_graphml(out, node_type=int)
    assert H.number_of_edges() > 0
    assert all(d[export.ABS_WEIGHT] == abs(d[schema.WEIGHT]) for _, _, d in H.edges(data=True))
    res = runner.invoke(cli, ["export", str(path), "--out", str(tmp_path / "pq"), "--format", "parquet",
                              "--abs-weight", "-s"])
    assert res.exit_code == 2
    assert "--abs-weight applies to GraphML files" in res.output
    assert not (tmp_path / "pq").exists()


def test_readme_pandas_section_runs():
    """The README's pandas/NetworkX block, run exactly as written (on VGG16 32x32)."""
    text = (Path(__file__).parents[1] / "README.md").read_text()
    section = text.split("### pandas frames and weighted algorithms", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    nodes, edges, G, rank = scope["nodes"], scope["edges"], scope["G"], scope["rank"]
    assert len(edges) == 4_194_304 + 512 * 4 and edges[schema.WEIGHT].dtype == np.float32
    assert set(nodes[schema.LAYER].astype(str)) == {"block5_conv2", "block5_conv3", "block5_pool"}
    strength = scope["strength"]
    assert strength.index.isin(nodes[schema.ID]).all() and (strength > 0).all()
    stats = scope["stats"]
    assert {k: v[0] for k, v in stats.items()} == {"block5_conv2": 0, "block5_conv3": 4_194_304, "block5_pool": 2048}
    assert stats["block5_conv3"][1] == pytest.approx(float(np.abs(edges[schema.WEIGHT].to_numpy(np.float64)).sum()) -
                                                     stats["block5_pool"][1], rel=1e-5)
    assert abs(sum(rank.values()) - 1) < 1e-6 and min(rank.values()) > 0
    assert all(export.ABS_WEIGHT in d for _, _, d in G.edges(data=True))
    assert scope["top"] == sorted(rank, key=rank.get, reverse=True)[:5]
