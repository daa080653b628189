"""Export: selections against brute-force filters of the full edge table, the sinks' round trips
(model -> GraphML -> NetworkX, extraction folder, Neo4j), igraph, the size guard, the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import igraph
import networkx as nx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner

from pipeline import export, schema
from pipeline.cli import cli
from pipeline.extract import extract, node_tables, stream_edges
from pipeline.model import ModelSpec, walk

pytest_plugins = ["tests.neo4j_plugin"]


def _tiny_model():
    import keras

    keras.utils.set_random_seed(3)
    x = keras.Input((9, 8, 3), name="image")
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(x)
    y = keras.layers.MaxPooling2D(2, name="p1")(y)
    y = keras.layers.Conv2D(5, 3, strides=2, padding="same", name="c2")(y)
    y = keras.layers.Flatten(name="flat")(y)
    y = keras.layers.Dense(6, activation="relu", name="d1")(y)
    y = keras.layers.Dense(3, activation="softmax", name="out")(y)
    model = keras.Model(x, y, name="tiny")
    for layer in model.layers:  # non-zero biases, so node attributes are checked for real
        if hasattr(layer, "bias") and layer.bias is not None:
            layer.bias.assign(np.random.default_rng(0).normal(0, 0.1, layer.bias.shape).astype("float32"))
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model = _tiny_model()
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    spec = ModelSpec(str(path))
    graph = walk(model, spec)
    rows = [pd.DataFrame({schema.SOURCE: c.source, schema.TARGET: c.target, schema.WEIGHT: c.weight,
                          schema.KIND: c.kind}) for _, c in stream_edges(graph)]
    df = pd.concat(rows, ignore_index=True)
    nodes = pa.concat_tables([t for s in graph.layers for t in node_tables(s)]).to_pandas()
    return graph, df, nodes.set_index(schema.ID), path


@pytest.fixture(scope="module")
def folder(tiny, tmp_path_factory):
    graph = tiny[0]
    out = tmp_path_factory.mktemp("extract") / "tiny"
    extract(graph, out)
    return out


# -- brute force ---------------------------------------------------------------------------


def _owner_ranges(graph, names):
    return [(s.output.offset, s.output.offset + s.output.size) for s in graph.layers if s.name in names and s.makes_neurons]


def brute(graph, df, layers=None, min_abs_weight=None, top_k_in=None, upstream_of=(), downstream_of=(), depth=None):
    d = df
    if layers:
        names = {s.name for s in graph.select(layers)}
        keep = np.zeros(len(d), bool)
        for lo, hi in _owner_ranges(graph, names):
            keep |= (d[schema.TARGET] >= lo) & (d[schema.TARGET] < hi)
        d = d[keep]
    if min_abs_weight:
        d = d[d[schema.WEIGHT].abs() >= np.float32(min_abs_weight)]
    if top_k_in:
        d = d.assign(a=-d[schema.WEIGHT].abs()).sort_values([schema.TARGET, "a", schema.SOURCE])
        d = d.groupby(schema.TARGET, sort=False).head(top_k_in).drop(columns="a")
    if not (upstream_of or downstream_of):
        return d
    G = nx.from_pandas_edgelist(d, create_using=nx.DiGraph)
    parts = []
    for seeds, graph_, col in ((upstream_of, G.reverse(copy=False), schema.TARGET),
                               (downstream_of, G, schema.SOURCE)):
        ids = [_seed_id(graph, s) for s in seeds]
        if not ids:
            continue
        H = graph_.copy()
        H.add_nodes_from(ids)
        H.add_edges_from(("seed", i) for i in ids)
        dist = nx.single_source_shortest_path_length(H, "seed", cutoff=None if depth is None else depth)
        inner = [n for n, k in dist.items() if n != "seed" and (depth is None or k - 1 < depth)]
        parts.append(d[d[col].isin(inner)])
    return pd.concat(parts).drop_duplicates([schema.SOURCE, schema.TARGET])


def _seed_id(graph, text):
    name, index = text.rsplit(":", 1)
    spec = graph.layer(name)
    pos = tuple(int(p) for p in index.split(","))
    flat = pos[0] if len(pos) == 1 else int(np.ravel_multi_index(pos, spec.output.shape))
    return spec.output.offset + flat


def edge_map(G):
    return {(u, v): (np.float32(d[schema.WEIGHT]), d[schema.KIND]) for u, v, d in G.edges(data=True)}


def frame_map(d):
    return {(int(s), int(t)): (np.float32(w), k) for s, t, w, k in
            zip(d[schema.SOURCE], d[schema.TARGET], d[schema.WEIGHT], d[schema.KIND], strict=True)}


def check_nodes(G, nodes, extra=()):
    for n, attrs in G.nodes(data=True):
        row = nodes.loc[n]
        for col in (schema.LAYER, schema.LAYER_TYPE, *schema.POSITION, schema.ACTIVATION):
            assert attrs[col] == row[col], (n, col)
        assert np.float32(attrs[schema.BIAS]) == np.float32(row[schema.BIAS])


SELECTIONS = [
    {},
    {"layers": "c1:p1"},
    {"layers": "c2:"},
    {"min_abs_weight": 0.15},
    {"top_k_in": 3},
    {"layers": "p1:d1", "min_abs_weight": 0.05, "top_k_in": 4},
    {"upstream_of": "out:1", "depth": 2},
    {"upstream_of": ["c2:1,1,3", "p1:2,3,1"], "depth": 3, "top_k_in": 2},
    {"upstream_of": "d1:4"},
    {"downstream_of": "image:4,4,1", "depth": 3},
    {"downstream_of": "c1:0,0,0", "min_abs_weight": 0.02, "top_k_in": 5},
    {"downstream_of": "p1:1,1,1", "upstream_of": "c2:0,0,0", "depth": 1, "layers": "p1:d1"},
    {"upstream_of": "out:0", "depth": 0},
]


@pytest.mark.parametrize("selection", SELECTIONS, ids=[str(s) for s in SELECTIONS])
def test_selection_matches_brute_force(tiny, folder, selection):
    graph, df, nodes, _ = tiny
    want = frame_map(brute(graph, df, **{k: ([v] if isinstance(v, str) and k.endswith("_of") else v)
                                         for k, v in selection.items()}))
    for source in (graph, folder):
        G = export.to_networkx(source, **selection)
        assert edge_map(G) == want
        check_nodes(G, nodes)
        ends = {n for e in want for n in e}
        assert ends <= set(G.nodes)


def test_model_graphml_networkx_round_trip(tiny, tmp_path):
    graph, _, nodes, _ = tiny
    G = export.to_networkx(graph)
    path = tmp_path / "tiny.graphml"
    res = export.write_graphml(graph, path)
    assert (res.nodes, res.edges) == (G.number_of_nodes(), G.number_of_edges())
    H = nx.read_graphml(path, node_type=int)
    assert edge_map(H) == edge_map(G)
    assert dict(H.nodes(data=True)).keys() == dict(G.nodes(data=True)).keys()
    check_nodes(H, nodes)
    for n, attrs in G.nodes(data=True):
        assert {k: (np.float32(v) if k == schema.BIAS else v) for k, v in H.nodes[n].items()} == \
            {k: (np.float32(v) if k == schema.BIAS else v) for k, v in attrs.items()}
    g = igraph.Graph.Read_GraphML(str(path))
    assert (g.vcount(), g.ecount()) == (G.number_of_nodes(), G.number_of_edges())
    assert set(g.es.attributes()) == {schema.WEIGHT, schema.KIND}


def test_bulk_edges_match_add_edges_from():
    """The sink fills the adjacency dicts directly: same graph as add_edges_from, order included
    (neighbours in edge order; a repeated edge keeps its first place and its last attributes)."""
    from pipeline.sinks import networkx as nx_sink

    rng = np.random.default_rng(5)
    n = 5000
    ids = np.unique(rng.integers(0, 10**6, 300))
    source, target = rng.choice(ids, n), rng.choice(ids, n)
    source[-50:], target[-50:] = source[:50], target[:50]  # repeated edges
    weight = rng.choice(rng.normal(size=40).astype(np.float32), n)
    kinds = rng.integers(0, 3, n).astype(np.uint8)
    names = ["conv", "add", "dense"]
    keys = np.empty(len(ids), dtype=object)
    keys[:] = ids.tolist()
    by_target = np.argsort(target, kind="stable")  # grouped input takes the path without a sort
    for codes, perm in ((kinds, np.arange(n)), (np.zeros(n, np.uint8), np.arange(n)), (kinds, by_target)):
        source, target, weight, codes = source[perm], target[perm], weight[perm], codes[perm]
        G, H = nx.DiGraph(), nx.DiGraph()
        for g in (G, H):
            g.add_nodes_from(keys.tolist())
        half = n // 2  # two calls: the second updates dicts the first filled
        for sl in (slice(0, half), slice(half, n)):
            nx_sink.add_edges(G, ids, keys, source[sl], target[sl],
                              nx_sink.edge_data(weight[sl], codes[sl], names))
        H.add_edges_from((int(s), int(t), {schema.WEIGHT: float(w), schema.KIND: names[k]})
                         for s, t, w, k in zip(source, target, weight, codes, strict=True))
        assert list(G.edges(data=True)) == list(H.edges(data=True))
        assert list(G.in_edges(data=True)) == list(H.in_edges(data=True))
        assert all(G.succ[u][v] is G.pred[v][u] for u, v in G.edges)
        assert all(type(d[schema.WEIGHT]) is float for _, _, d in G.edges(data=True))


def test_parquet_uses_extraction_schema(tiny, tmp_path):
    graph, df, _, _ = tiny
    out = tmp_path / "sel"
    res = export.write_parquet(graph, out, layers="c2:c2", top_k_in=2)
    import pyarrow.parquet as pq

    edges = pq.read_table(out / schema.EDGES_DIR)
    assert edges.schema.equals(schema.EDGE_SCHEMA)
    assert pq.read_table(out / schema.NODES_DIR).schema.equals(schema.NODE_SCHEMA)
    assert frame_map(edges.to_pandas().astype({schema.KIND: str})) == frame_map(brute(graph, df, "c2:c2", top_k_in=2))
    assert res.edges == edges.num_rows
    assert not (tmp_path / "sel.tmp").exists()


def test_size_guard(tiny, tmp_path):
    graph = tiny[0]
    with pytest.raises(export.ExportTooLarge, match=r"over the networkx limit of 100 edges.*--force") as err:
        export.to_networkx(graph, layers="c1:c1", limit=100)
    from pipeline.plan import plan

    assert err.value.edges == plan(graph, "c1:c1").layer("c1").edges
    assert re.search(r"the selection has [\d,]+ edges and [\d,]+ nodes \(about [\d.]+ [KM]B as networkx\)", str(err.value))
    G = export.to_networkx(graph, layers="c1:c1", limit=100, force=True)
    assert G.number_of_edges() > 100
    # a filter makes the count unknown up front: the guard counts first, and no file stays
    path = tmp_path / "g.graphml"
    with pytest.raises(export.ExportTooLarge, match="more than 100 edges"):
        export.write_graphml(graph, path, min_abs_weight=0.01, limit=100)
    assert list(tmp_path.iterdir()) == []
    assert export.write_graphml(graph, path, min_abs_weight=0.01, limit=100, force=True).edges > 100


def test_bad_selections(tiny):
    graph = tiny[0]
    with pytest.raises(export.UsageError, match="no layer named 'nope'"):
        export.to_networkx(graph, layers="nope:c2")
    with pytest.raises(export.UsageError, match="outside layer c2"):
        export.to_networkx(graph, upstream_of="c2:9,9,9")
    with pytest.raises(export.UsageError, match="--cypher selects from a model loaded into Neo4j"):
        export.to_networkx(graph, cypher="MATCH ()-[r]->() RETURN r")


def test_cli(tiny, tmp_path):
    graph, _, _, path = tiny
    out = tmp_path / "c.graphml"
    runner = CliRunner()
    res = runner.invoke(cli, ["export", str(path), "--out", str(out), "--upstream-of", "out:2", "--depth", "2", "-s"])
    assert res.exit_code == 0, res.output
    assert re.search(r"^exporting at most [\d,]+ edges \(about .* as graphml\)\nwrote \d+ nodes and \d+ edges "
                     r"to .*c\.graphml", res.output, re.M)  # the size is said before the work
    assert nx.read_graphml(out, node_type=int).number_of_edges() == 6 + 6 * 20  # out:2 <- d1 (6 units) <- flat (2x2x5)
    res = runner.invoke(cli, ["export", str(path), "--out", str(tmp_path / "d.graphml"), "--layers", "x:y", "-s"])
    assert res.exit_code == 1
    assert res.output.startswith("Error: no layer named 'x'")
    res = runner.invoke(cli, ["export", str(path), "--out", str(tmp_path / "pq"), "--format", "parquet",
                                         "--layers", "c1:c1", "-s"])
    assert res.exit_code == 0, res.output


def test_readme_analysis_runs(tiny):
    """The README's NetworkX analysis, run exactly as written (on VGG16 32x32)."""
    text = (Path(__file__).parents[1] / "README.md").read_text()
    section = text.split("## A NetworkX analysis", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    G = scope["G"]
    assert G.number_of_edges() > 0 and len(scope["top"]) == 5
    # depth 3 from a block5_pool neuron: edges into the pool, conv3 and conv2 neurons, so conv1
    # neurons appear only as sources (no incoming strength)
    strength = scope["strength"]
    assert set(strength) == {"block5_conv1", "block5_conv2", "block5_conv3", "block5_pool"}
    assert strength["block5_conv1"] == 0 and min(strength[k] for k in strength if k != "block5_conv1") > 0
    seed = scope["seed"]
    assert G.nodes[seed]["layer"] == "block5_pool" and (G.nodes[seed]["h"], G.nodes[seed]["w"], G.nodes[seed]["c"]) == (0, 0, 7)
    assert all(scope["influence"][n] >= scope["influence"][scope["top"][-1]] for n in scope["top"])


# -- Neo4j ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(folder, neo4j_conn):
    from pipeline.neo4j import loader

    loader.load(folder, mode="online", model_name="export_tiny", replace=True, conn=neo4j_conn)
    yield "neo4j:export_tiny"
    loader.drop(neo4j_conn, "export_tiny")


@pytest.mark.parametrize("selection", [{}, {"layers": "c2:d1", "top_k_in": 3},
                                       {"upstream_of": "out:1", "depth": 2, "min_abs_weight": 0.03},
                                       {"downstream_of": "image:4,4,1", "depth": 3}],
                         ids=["all", "layers-topk", "upstream", "downstream"])
def test_neo4j_source(tiny, loaded, neo4j_conn, selection, tmp_path):
    graph, df, nodes, _ = tiny
    want = export.to_networkx(graph, **selection)
    G = export.to_networkx(loaded, conn=neo4j_conn, **selection)
    assert edge_map(G) == edge_map(want)
    assert set(G.nodes) == set(want.nodes)
    check_nodes(G, nodes)
    path = tmp_path / "n.graphml"
    export.write_graphml(loaded, path, conn=neo4j_conn, **selection)
    assert edge_map(nx.read_graphml(path, node_type=int)) == edge_map(want)


def test_neo4j_small_batches(tiny, loaded, neo4j_conn, monkeypatch):
    """Many batches: queries run ahead in threads, node id runs are split across queries, and the
    neuron ids of sources are looked up in parts; a batch mixing kinds is read again per edge."""
    graph, df, nodes, _ = tiny
    monkeypatch.setattr(export.Neo4jSource, "BATCH_EDGES", 300)
    monkeypatch.setattr(export.Neo4jSource, "BATCH_NODES", 7)
    for selection in ({}, {"upstream_of": "out:1", "depth": 2}, {"downstream_of": "image:4,4,1", "depth": 2}):
        want = export.to_networkx(graph, **selection)
        G = export.to_networkx(loaded, conn=neo4j_conn, **selection)
        assert edge_map(G) == edge_map(want) and set(G.nodes) == set(want.nodes)
        check_nodes(G, nodes)
    with export.Neo4jSource(loaded.removeprefix("neo4j:"), neo4j_conn) as src:
        e = src._batch("MATCH (b:Neuron {model: $m}) MATCH (a)-[r:CONNECTS]->(b) ", {})
    got = {(int(s), int(t)): (w, export.KINDS[k]) for s, t, w, k in zip(e.source, e.target, e.weight, e.kind, strict=True)}
    assert got == frame_map(df) and len(set(df[schema.KIND])) > 1


def test_neo4j_cypher(tiny, loaded, neo4j_conn):
    graph, df, _, _ = tiny
    q = ("MATCH (a:Neuron {model: 'export_tiny', layer: 'd1'})-[r:CONNECTS]->(b:Neuron) "
         "WHERE abs(r.weight) > 0.2 RETURN r")
    G = export.to_networkx(loaded, conn=neo4j_conn, cypher=q)
    d1 = graph.layer("d1").output
    want = df[(df.source >= d1.offset) & (df.source < d1.offset + d1.size) & (df.weight.abs() > 0.2)]
    assert edge_map(G) == frame_map(want) and len(want) > 0
    with pytest.raises(export.UsageError, match="no model 'missing'"):
        export.to_networkx("neo4j:missing", conn=neo4j_conn)


def _spy_queries(monkeypatch) -> list[str]:
    """The queries Neo4j sources run from now on."""
    from pipeline.export import neo4j_source

    seen: list[str] = []
    query = neo4j_source.Neo4jSource._query

    def spy(self, text, **params):
        seen.append(text)
        return query(self, text, **params)

    monkeypatch.setattr(neo4j_source.Neo4jSource, "_query", spy)
    return seen


def test_neo4j_layer_ranges_read_from_layer_nodes(tiny, loaded, neo4j_conn, monkeypatch):
    """A model loaded now carries each layer's id range on its :Layer node: the source takes them
    from there (the same ranges as the model's) and never scans the neurons."""
    from pipeline.export.neo4j_source import NEURON_SCAN

    seen = _spy_queries(monkeypatch)
    with export.Neo4jSource(loaded.removeprefix("neo4j:"), neo4j_conn) as src:
        got = [(la.name, la.offset, la.stop, la.inputs) for la in src.layers]
    assert seen and NEURON_SCAN not in seen
    assert got == [(la.name, la.offset, la.stop, la.inputs) for la in export.ModelSource(tiny[0]).layers]
    seen.clear()
    G = export.to_networkx(loaded, conn=neo4j_conn, upstream_of="out:1", depth=2)
    assert edge_map(G) == edge_map(export.to_networkx(tiny[0], upstream_of="out:1", depth=2))
    assert NEURON_SCAN not in seen


def test_neo4j_model_loaded_without_layer_ranges(tiny, folder, neo4j_conn, neo4j_driver, monkeypatch):
    """A model loaded by an older cnngraph has no id_start/id_stop on its :Layer nodes: the ranges
    are recomputed from the neurons and the export gives the same graph."""
    from pipeline.export.neo4j_source import NEURON_SCAN
    from pipeline.neo4j import loader

    loader.load(folder, mode="online", model_name="export_old", replace=True, conn=neo4j_conn)
    try:
        neo4j_driver.execute_query("MATCH (l:Layer {model: 'export_old'}) REMOVE l.id_start, l.id_stop")
        seen = _spy_queries(monkeypatch)
        for selection in ({}, {"layers": "c2:d1", "top_k_in": 3}, {"upstream_of": "out:1", "depth": 2},
                          {"downstream_of": "image:4,4,1", "depth": 3}):
            want = export.to_networkx(tiny[0], **selection)
            G = export.to_networkx("neo4j:export_old", conn=neo4j_conn, **selection)
            assert edge_map(G) == edge_map(want) and set(G.nodes) == set(want.nodes)
        assert NEURON_SCAN in seen
    finally:
        loader.drop(neo4j_conn, "export_old")
