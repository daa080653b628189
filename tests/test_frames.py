"""pandas frames: ``to_pandas`` and ``iter_frames`` against the extraction folder's Parquet tables
(read by pyarrow), a brute-force filter of them, ``to_networkx`` and each other; from a model, a
folder and Neo4j; chunking, selections, the size guard and bounded memory."""

from __future__ import annotations

import math
import re
import tracemalloc

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline import export, schema
from pipeline.extract import extract
from pipeline.model import walk
from tests.helpers import functional, keras

pytest_plugins = ["tests.neo4j_plugin"]

EDGE_DTYPES = {schema.SOURCE: "int64", schema.TARGET: "int64", schema.WEIGHT: "float32", schema.KIND: "category"}
NODE_DTYPES = {schema.ID: "int64", schema.LAYER: "category", schema.LAYER_TYPE: "category",
               **{p: "int32" for p in schema.POSITION}, schema.BIAS: "float32", schema.ACTIVATION: "category"}


def _model():
    """8x8x3 -> conv c1 -> max pool p1 -> conv c2 -> add(p1, c2) -> flatten -> dense out: a skip
    connection, so the add layer reads two layers."""
    L = keras().layers

    def body(x):
        y = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(x)
        y = L.MaxPooling2D(2, name="p1")(y)
        z = L.Conv2D(4, 3, padding="same", name="c2")(y)
        y = L.Add(name="add")([y, z])
        return L.Dense(5, activation="softmax", name="out")(L.Flatten(name="flat")(y))

    return functional((8, 8, 3), body, seed=4)


@pytest.fixture(scope="module")
def graph():
    return walk(_model())


@pytest.fixture(scope="module")
def folder(graph, tmp_path_factory):
    out = tmp_path_factory.mktemp("frames") / "model"
    extract(graph, out)
    return out


@pytest.fixture(scope="module")
def tables(folder):
    """The folder's edge and node tables, read by pyarrow alone."""
    return (pq.read_table(folder / schema.EDGES_DIR).to_pandas(),
            pq.read_table(folder / schema.NODES_DIR).to_pandas().sort_values(schema.ID, ignore_index=True))


def rows(edges: pd.DataFrame) -> list[tuple[int, int, int, str]]:
    """Edges as sorted (source, target, float32 bits, kind) rows: a multiset, so a doubled edge shows."""
    bits = edges[schema.WEIGHT].to_numpy(np.float32).view(np.uint32)
    return sorted(zip(edges[schema.SOURCE].tolist(), edges[schema.TARGET].tolist(), bits.tolist(),
                      edges[schema.KIND].astype(str).tolist(), strict=True))


def node_rows(nodes: pd.DataFrame) -> list[tuple]:
    cols = [nodes[c].astype(str) if str(nodes[c].dtype) == "category" else nodes[c] for c in schema.NODE_COLUMNS]
    return sorted(zip(*(c.tolist() for c in cols), strict=True))


def owner_range(graph, name):
    out = graph.layer(name).output
    return out.offset, out.offset + out.size


def brute(graph, edges, layers=None, min_abs_weight=None, top_k_in=None):
    """The selection, filtered by hand from the full edge table."""
    d = edges
    if layers:
        keep = np.zeros(len(d), bool)
        for s in graph.select(layers):
            if s.makes_neurons:
                lo, hi = owner_range(graph, s.name)
                keep |= (d[schema.TARGET] >= lo).to_numpy() & (d[schema.TARGET] < hi).to_numpy()
        d = d[keep]
    if min_abs_weight:
        d = d[d[schema.WEIGHT].abs() >= np.float32(min_abs_weight)]
    if top_k_in:
        d = d.assign(a=-d[schema.WEIGHT].abs()).sort_values([schema.TARGET, "a", schema.SOURCE])
        d = d.groupby(schema.TARGET, sort=False).head(top_k_in).drop(columns="a")
    return d


def check_dtypes(nodes, edges):
    assert {c: str(t) for c, t in edges.dtypes.items()} == EDGE_DTYPES
    assert {c: str(t) for c, t in nodes.dtypes.items()} == NODE_DTYPES


def union(frames):
    nodes = pd.concat([n for _, n, _ in frames], ignore_index=True)
    edges = pd.concat([e for _, _, e in frames], ignore_index=True)
    return nodes, edges


SELECTIONS = [
    {"layers": "c2:add"},
    {"min_abs_weight": 0.2},
    {"top_k_in": 3},
    {"layers": "p1:out", "min_abs_weight": 0.05, "top_k_in": 2},
    {"upstream_of": "out:1", "depth": 2},
    {"downstream_of": "c1:3,3,1", "depth": 3, "top_k_in": 4},
    {"upstream_of": "add:1,1,2", "downstream_of": "p1:1,1,2", "depth": 2},  # overlapping cones
    {"upstream_of": "out:0", "depth": 0},  # the seed alone
]


# -- to_pandas -------------------------------------------------------------------------------


def test_to_pandas_equals_the_folder_tables(graph, folder, tables):
    """The whole graph from a model and from the folder: the folder's edge table row for row, and
    the node rows of every neuron (all are endpoints here), with the schema's dtypes."""
    want_edges, want_nodes = tables
    assert set(np.union1d(want_edges[schema.SOURCE], want_edges[schema.TARGET])) == set(want_nodes[schema.ID])
    for source in (graph, folder):
        nodes, edges = export.to_pandas(source)
        check_dtypes(nodes, edges)
        assert {c: str(t) for c, t in edges.dtypes.items()} == {c: str(t) for c, t in want_edges.dtypes.items()}
        assert rows(edges) == rows(want_edges) and len(edges) == graph_edges(graph)
        assert np.all(np.diff(nodes[schema.ID].to_numpy()) > 0)  # id order, each once
        assert node_rows(nodes) == node_rows(want_nodes)
        assert set(edges[schema.KIND].astype(str)) == {"conv", "max_pool", "add", "dense"}


def graph_edges(graph):
    from pipeline.plan import plan

    return plan(graph).edges


def test_to_pandas_equals_to_networkx(graph):
    """Same selection, same graph: the DataFrames hold what the DiGraph holds, each edge once."""
    for selection in [{}, *SELECTIONS]:
        G = export.to_networkx(graph, **selection)
        nodes, edges = export.to_pandas(graph, **selection)
        check_dtypes(nodes, edges)
        assert len(edges) == G.number_of_edges(), selection
        assert rows(edges) == sorted((u, v, int(np.float32(d[schema.WEIGHT]).view(np.uint32)), d[schema.KIND])
                                     for u, v, d in G.edges(data=True)), selection
        assert nodes[schema.ID].tolist() == sorted(G.nodes), selection
        for row in nodes.itertuples(index=False):
            a = G.nodes[row.id]
            assert (a[schema.LAYER], a[schema.H], a[schema.W], a[schema.C], a[schema.ACTIVATION]) == \
                (row.layer, row.h, row.w, row.c, row.activation)
            assert np.float32(a[schema.BIAS]) == row.bias


def test_selections_match_brute_force(graph, folder, tables):
    want_edges, want_nodes = tables
    for selection in ({"layers": "c2:add"}, {"min_abs_weight": 0.2}, {"top_k_in": 3},
                      {"layers": "p1:out", "min_abs_weight": 0.05, "top_k_in": 2}):
        want = brute(graph, want_edges, **selection)
        ends = np.union1d(want[schema.SOURCE], want[schema.TARGET])
        for source in (graph, folder):
            nodes, edges = export.to_pandas(source, **selection)
            assert rows(edges) == rows(want), selection
            assert nodes[schema.ID].tolist() == ends.tolist(), selection
            f_nodes, f_edges = union(list(export.iter_frames(source, chunk_edges=64, **selection)))
            assert rows(f_edges) == rows(want), selection
            assert sorted(f_nodes[schema.ID]) == ends.tolist(), selection


def test_both_cones_give_each_edge_once(graph, tmp_path):
    """Overlapping upstream and downstream cones share edges; every sink gives them once."""
    selection = SELECTIONS[6]
    up = export.to_networkx(graph, upstream_of=selection["upstream_of"], depth=2)
    down = export.to_networkx(graph, downstream_of=selection["downstream_of"], depth=2)
    shared = set(up.edges) & set(down.edges)
    assert shared, "the test needs cones that overlap"
    want = len(set(up.edges) | set(down.edges))
    _, edges = export.to_pandas(graph, **selection)
    assert len(edges) == want
    res = export.write_parquet(graph, tmp_path / "pq", **selection)
    assert res.edges == want == pq.read_table(tmp_path / "pq" / schema.EDGES_DIR).num_rows
    assert len(union(list(export.iter_frames(graph, chunk_edges=5, **selection)))[1]) == want


def test_size_guard(graph, monkeypatch):
    with pytest.raises(export.ExportTooLarge, match=r"over the pandas limit of 100 edges.*--force") as err:
        export.to_pandas(graph, layers="c1:c1", limit=100)
    assert re.search(r"the selection has [\d,]+ edges and [\d,]+ nodes \(about [\d.]+ [KM]?B as pandas\)",
                     str(err.value))
    c1 = graph.layer("c1")
    assert err.value.edges == len(export.to_pandas(graph, layers="c1:c1", limit=100, force=True)[1])
    assert err.value.nodes == c1.output.size
    with pytest.raises(export.ExportTooLarge, match="more than 100 edges"):  # a filter: counted first
        export.to_pandas(graph, min_abs_weight=0.01, limit=100)
    monkeypatch.setitem(export.LIMITS, "pandas", 50)  # the default limit is LIMITS["pandas"]
    with pytest.raises(export.ExportTooLarge, match="pandas limit of 50 edges"):
        export.to_pandas(graph, layers="out:out")
    assert len(list(export.iter_frames(graph, layers="c1:c1"))) > 0  # streaming has no limit


def test_bad_arguments(graph):
    for bad in (0, -3, 2.5, True):
        with pytest.raises(export.UsageError, match="bad chunk_edges"):
            export.iter_frames(graph, chunk_edges=bad)  # refused at the call, not at the first frame
    with pytest.raises(export.UsageError, match="bad depth"):
        export.iter_frames(graph, upstream_of="out:0", depth=-1)
    frames = export.iter_frames(graph, layers="nope:out")
    with pytest.raises(export.UsageError, match="no layer named 'nope'"):
        next(frames)


# -- iter_frames -------------------------------------------------------------------------------


def test_iter_frames_chunks_layer_by_layer(graph, folder, tables):
    """Chunk 100: c1 and c2 come in several frames of at most 100 edges whose union is exact;
    layers in model order, the input first with its neurons and no edges; every neuron once, in
    its own layer's frames; an edge's source was handed out before the edge."""
    want_edges, want_nodes = tables
    chunk = 100
    order = [s.name for s in graph.layers if s.makes_neurons]
    for source in (graph, folder):
        frames = list(export.iter_frames(source, chunk_edges=chunk))
        names = [name for name, _, _ in frames]
        first = graph.layers[0].name
        assert names[0] == first
        assert all(len(e) == 0 for n, _, e in frames if n == first)  # the input: its neurons, no edges
        assert sum(len(nd) for n, nd, _ in frames if n == first) == graph.layers[0].output.size
        assert [n for k, n in enumerate(names) if k == 0 or names[k - 1] != n] == order  # each layer's frames together
        for name in ("c1", "c2"):
            got = [len(e) for n, _, e in frames if n == name]
            assert len(got) >= math.ceil(graph_layer_edges(want_edges, graph, name) / chunk) >= 2
            assert sum(got) == graph_layer_edges(want_edges, graph, name)
        seen: set[int] = set()
        for name, nodes, edges in frames:
            check_dtypes(nodes, edges)
            assert len(edges) <= chunk and len(nodes) <= chunk
            lo, hi = owner_range(graph, name)
            assert set(nodes[schema.LAYER].astype(str)) <= {name}
            assert nodes[schema.ID].between(lo, hi - 1).all() and edges[schema.TARGET].between(lo, hi - 1).all()
            assert set(edges[schema.SOURCE]) <= seen  # sources come in earlier layers' frames
            assert not seen & set(nodes[schema.ID])
            seen |= set(nodes[schema.ID])
            assert list(edges[schema.KIND].cat.categories) == list(frames[0][2][schema.KIND].cat.categories)
        nodes, edges = union(frames)
        assert rows(edges) == rows(want_edges)
        assert node_rows(nodes) == node_rows(want_nodes)


def graph_layer_edges(edges, graph, name):
    lo, hi = owner_range(graph, name)
    return int(edges[schema.TARGET].between(lo, hi - 1).sum())


def test_iter_frames_selections_equal_to_pandas(graph):
    """Each selection (cones and top-k included) streams to exactly what to_pandas gives."""
    for selection in SELECTIONS:
        nodes, edges = export.to_pandas(graph, **selection)
        for chunk in (7, 10**6):
            frames = list(export.iter_frames(graph, chunk_edges=chunk, **selection))
            f_nodes, f_edges = union(frames)
            assert rows(f_edges) == rows(edges), (selection, chunk)
            assert sorted(f_nodes[schema.ID]) == nodes[schema.ID].tolist(), (selection, chunk)
            assert all(len(e) <= chunk and len(n) <= chunk for _, n, e in frames)
    seed = graph.layer("out").output.offset
    assert [(name, n[schema.ID].tolist(), len(e)) for name, n, e in
            export.iter_frames(graph, upstream_of="out:0", depth=0)] == [("out", [seed], 0)]


@pytest.mark.slow
def test_iter_frames_memory_is_bounded_by_the_chunk():
    """Peak traced memory (numpy reports its buffers to tracemalloc) of iter_frames stays flat as
    the graph doubles, well under the graph's size; to_pandas holds the graph, within its price
    (PANDAS_BYTES_PER_EDGE). Both graphs are big enough that the source reads full chunks."""
    L = keras().layers

    def peak(fn):
        tracemalloc.start()
        try:
            fn()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    def stream(g):
        assert sum(len(e) for _, _, e in export.iter_frames(g, chunk_edges=250_000)) == graph_edges(g)

    graphs = [walk(functional((64, 64, 16), lambda x, f=f: L.Conv2D(f, 3, padding="same", name="conv")(x), seed=1))
              for f in (32, 64)]
    small, big = (graph_edges(g) for g in graphs)
    assert big == 2 * small > 18_000_000
    frames_small, frames_big = (peak(lambda g=g: stream(g)) for g in graphs)
    assert frames_big < 1.3 * frames_small  # flat: set by the chunk, not by the graph
    assert frames_big < big * schema_bytes() / 5
    pandas_small = peak(lambda: export.to_pandas(graphs[0]))
    assert small * schema_bytes() < pandas_small < small * export.PANDAS_BYTES_PER_EDGE


def schema_bytes() -> int:
    """Bytes of one edge row: int64 source and target, float32 weight, int8 kind code."""
    return 8 + 8 + 4 + 1


# -- Neo4j ---------------------------------------------------------------------------------------


def test_neo4j_source(graph, folder, neo4j_conn):
    """A model loaded into Neo4j: to_pandas and iter_frames give what the model gives."""
    from pipeline.neo4j import loader

    loader.load(folder, mode="online", model_name="frames_model", replace=True, conn=neo4j_conn)
    try:
        for selection in ({}, SELECTIONS[6]):  # everything; cones read by target and by source
            nodes, edges = export.to_pandas(graph, **selection)
            n_nodes, n_edges = export.to_pandas("neo4j:frames_model", conn=neo4j_conn, **selection)
            check_dtypes(n_nodes, n_edges)
            assert rows(n_edges) == rows(edges), selection
            assert node_rows(n_nodes) == node_rows(nodes), selection
            frames = list(export.iter_frames("neo4j:frames_model", conn=neo4j_conn, chunk_edges=300, **selection))
            f_nodes, f_edges = union(frames)
            assert rows(f_edges) == rows(edges) and node_rows(f_nodes) == node_rows(nodes), selection
            assert [n for n, _, _ in frames] == [n for n, _, _ in export.iter_frames(graph, chunk_edges=300, **selection)]
    finally:
        loader.drop(neo4j_conn, "frames_model")

