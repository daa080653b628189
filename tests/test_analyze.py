"""``pipeline.analyze``: every measure against a brute-force computation written here (explicit path
enumeration, a power iteration of the PageRank formula, plain numpy), on a model with branches
(Add, Concatenate), max and average pooling, stride 2 and 'same' padding; model, folder and Neo4j
sources and worker counts give the same tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.analyze import analyze, columns
from pipeline.errors import UsageError
from pipeline.extract import extract, stream_edges
from pipeline.model import walk
from tests.helpers import functional, keras

pytest_plugins = ["tests.neo4j_plugin"]

THRESHOLDS = (0.0, 0.05, 0.2, 1.0)
D = 0.85


def body(x):
    L = keras().layers
    c1 = L.Conv2D(3, 3, padding="same", activation="relu", name="c1")(x)
    p = L.MaxPooling2D(2, padding="same", name="pool")(c1)
    c2 = L.Conv2D(3, 3, strides=2, padding="same", name="c2")(p)
    c3 = L.Conv2D(3, 1, strides=2, name="c3")(p)
    s = L.Add(name="add")([c2, c3])
    cat = L.Concatenate(name="cat")([s, c3])
    ap = L.AveragePooling2D(2, padding="same", name="ap")(cat)
    return L.Dense(3, name="out")(L.Flatten(name="flat")(ap))


@pytest.fixture(scope="module")
def graph():
    return walk(functional((6, 5, 2), body, seed=3))


@pytest.fixture(scope="module")
def edges(graph):
    parts = [(c.source, c.target, c.weight) for _, c in stream_edges(graph)]
    s, t, w = (np.concatenate(x) for x in zip(*parts, strict=True))
    return s, t, w.astype(np.float64)


@pytest.fixture(scope="module")
def result(graph, tmp_path_factory):
    out = tmp_path_factory.mktemp("an") / "model"
    analyze(graph, out, target="out:1", thresholds=THRESHOLDS, workers=1)
    return out


def read(out, name):
    return pd.read_parquet(out / name)


def owners(graph):
    return [s for s in graph.layers if s.makes_neurons]


def test_degree_strength(graph, edges, result):
    s, t, w = edges
    n = graph.total_neurons
    df = read(result, columns.NEURONS_FILE).set_index(columns.ID)
    assert list(df.index) == list(range(n))
    np.testing.assert_array_equal(df[columns.IN_DEGREE], np.bincount(t, minlength=n))
    np.testing.assert_array_equal(df[columns.OUT_DEGREE], np.bincount(s, minlength=n))
    in_str, out_str = np.zeros(n), np.zeros(n)
    for a, b, x in zip(s.tolist(), t.tolist(), np.abs(w).tolist(), strict=True):
        in_str[b] += x
        out_str[a] += x
    np.testing.assert_allclose(df[columns.IN_STRENGTH], in_str, rtol=1e-12)
    np.testing.assert_allclose(df[columns.OUT_STRENGTH], out_str, rtol=1e-12)
    for spec in owners(graph):  # positions as in the node table
        rows = df[df[columns.LAYER] == spec.name]
        flat = rows.index.to_numpy() - spec.output.offset
        want = np.unravel_index(flat, spec.output.shape)
        for axis, name in zip(want[::-1], "cwhd", strict=False):
            np.testing.assert_array_equal(rows[name], axis)


def test_pagerank_power_iteration(graph, edges, result):
    s, t, w = edges
    n = graph.total_neurons
    a = np.abs(w)
    out = np.bincount(s, a, minlength=n)
    pr = np.ones(n)
    for _ in range(200):
        q = np.divide(pr, out, out=np.zeros(n), where=out > 0)
        nxt = (1 - D) + D * np.bincount(t, a * q[s], minlength=n)
        if np.max(np.abs(nxt - pr)) < 1e-14:
            break
        pr = nxt
    df = read(result, columns.NEURONS_FILE)
    np.testing.assert_allclose(df[columns.PAGERANK], nxt, rtol=1e-12)


def enumerate_paths(edges, target):
    """Every path into target, walked backwards: the influence of every node, and the path from an
    input of largest product (ties, common with shared conv weights: the lexicographically smallest
    id sequence, i.e. the smallest start, then the smallest next neuron)."""
    s, t, w = edges
    into: dict[int, list[tuple[int, float]]] = {}
    for a, b, x in zip(s.tolist(), t.tolist(), w.tolist(), strict=True):
        into.setdefault(b, []).append((a, x))
    infl: dict[int, float] = {target: 1.0}
    best: tuple[float, list[int]] = (-1.0, [])
    stack = [(target, 1.0, [target])]
    while stack:
        v, prod, path = stack.pop()
        if v not in into:  # an input neuron
            fwd = path[::-1]
            if prod > best[0] or (prod == best[0] and fwd < best[1]):
                best = (prod, fwd)
            continue
        for u, x in into[v]:
            p = prod * abs(x)
            infl[u] = infl.get(u, 0.0) + p
            stack.append((u, p, [*path, u]))
    return infl, best


def test_influence_and_path(graph, edges, result):
    target = graph.layer("out").output.offset + 1
    infl, (score, path) = enumerate_paths(edges, target)
    df = read(result, columns.NEURONS_FILE).set_index(columns.ID)
    want = np.zeros(graph.total_neurons)
    for k, v in infl.items():
        want[k] = v
    np.testing.assert_allclose(df[columns.INFLUENCE], want, rtol=1e-10)
    got = read(result, columns.PATH_FILE)
    assert got[columns.ID].tolist() == path
    assert got[columns.SCORE].iloc[-1] == pytest.approx(score, rel=1e-12)
    assert math.isnan(got[columns.PATH_WEIGHT].iloc[0])
    s, t, w = edges
    for u, v, x in zip(path, path[1:], got[columns.PATH_WEIGHT].iloc[1:], strict=False):
        assert x in w[(s == u) & (t == v)].astype(np.float32).tolist()  # the signed weight of a real edge


def test_layers_and_thresholds(graph, edges, result):
    s, t, w = edges
    layers = read(result, columns.LAYERS_FILE).set_index(columns.LAYER)
    thr = read(result, columns.THRESHOLDS_FILE)
    n = graph.total_neurons
    a32 = np.abs(w.astype(np.float32))
    max_in, max_out = np.full(n, -1.0), np.full(n, -1.0)
    np.maximum.at(max_in, t, a32)
    np.maximum.at(max_out, s, a32)
    for spec in owners(graph):
        lo, hi = spec.output.offset, spec.output.offset + spec.output.size
        mine = (t >= lo) & (t < hi)
        if mine.any():
            row, x = layers.loc[spec.name], w[mine]
            assert row[columns.EDGES] == mine.sum()
            assert row[columns.WEIGHT_MIN] == pytest.approx(x.min()) and row[columns.WEIGHT_MAX] == pytest.approx(x.max())
            assert row[columns.WEIGHT_MEAN] == pytest.approx(x.mean(), abs=1e-9)
            assert row[columns.WEIGHT_STD] == pytest.approx(x.std(), rel=1e-6, abs=1e-9)
            assert row[columns.ABS_MEAN] == pytest.approx(np.abs(x).mean(), rel=1e-12)
            xs = np.sort(a32[mine].astype(np.float64))
            for q, name in zip(columns.QUANTILES, columns.ABS_QUANTILE, strict=True):
                rank = q * (len(xs) - 1)  # within one fine bin (2^-7) of the order statistics around it
                assert xs[math.floor(rank)] * (1 - 2 ** -7) <= row[name] <= xs[math.ceil(rank)] * (1 + 2 ** -7)
            counts, _ = np.histogram(a32[mine], bins=np.asarray(row[columns.HIST_EDGES], np.float32))
            assert counts.tolist() == list(row[columns.HIST_COUNTS])
            assert sum(row[columns.HIST_COUNTS]) == mine.sum()
        for th in THRESHOLDS:
            got = thr[(thr[columns.LAYER] == spec.name) & (thr[columns.THRESHOLD] == th)].iloc[0]
            assert got[columns.EDGES] == np.count_nonzero(mine & (a32 >= th))
            keep = (max_in[lo:hi] >= th) & (max_out[lo:hi] >= th)
            assert got[columns.NEURONS] == keep.sum()
            assert got[columns.NEURONS_WITH_IN] == np.count_nonzero(max_in[lo:hi] >= th)


def test_selection(graph, edges, tmp_path):
    """--layers and --min-abs-weight analyse the selected subgraph only."""
    s, t, w = edges
    lo = graph.layer("c2").output.offset
    hi = graph.layer("cat").output.offset + graph.layer("cat").output.size
    keep = (t >= lo) & (t < hi) & (np.abs(w.astype(np.float32)) >= np.float32(0.1))
    analyze(graph, tmp_path / "a", layers="c2:cat", min_abs_weight=0.1, thresholds="0", workers=1)
    df = read(tmp_path / "a", columns.NEURONS_FILE).set_index(columns.ID)
    assert set(df[columns.LAYER]) == {"pool", "c2", "c3", "add", "cat"}
    n = graph.total_neurons
    np.testing.assert_array_equal(df[columns.IN_DEGREE], np.bincount(t[keep], minlength=n)[df.index])
    np.testing.assert_array_equal(df[columns.OUT_DEGREE], np.bincount(s[keep], minlength=n)[df.index])


def assert_same(a, b, exact: bool) -> None:
    for name in (columns.NEURONS_FILE, columns.LAYERS_FILE, columns.THRESHOLDS_FILE, columns.PATH_FILE):
        x, y = read(a, name), read(b, name)
        if exact:
            pd.testing.assert_frame_equal(x, y)
        else:
            pd.testing.assert_frame_equal(x, y, check_exact=False, rtol=1e-12, check_categorical=False)


def test_workers_and_tasks_give_identical_tables(graph, tmp_path):
    analyze(graph, tmp_path / "w1", target="out:1", thresholds=THRESHOLDS, workers=1, task_edges=40)
    analyze(graph, tmp_path / "w2", target="out:1", thresholds=THRESHOLDS, workers=2, task_edges=40)
    assert_same(tmp_path / "w1", tmp_path / "w2", exact=True)


def test_folder_source_matches(graph, result, tmp_path):
    extract(graph, tmp_path / "ex")
    analyze(tmp_path / "ex", tmp_path / "f", target="out:1", thresholds=THRESHOLDS)
    assert_same(result, tmp_path / "f", exact=False)


def test_neo4j_source_matches(graph, result, tmp_path, neo4j_conn):
    from pipeline.neo4j import loader

    extract(graph, tmp_path / "ex")
    loader.load(tmp_path / "ex", mode="online", model_name="analyze_tiny", replace=True, conn=neo4j_conn)
    try:
        analyze("neo4j:analyze_tiny", tmp_path / "n", target="out:1", thresholds=THRESHOLDS, conn=neo4j_conn)
    finally:
        loader.drop(neo4j_conn, "analyze_tiny")
    assert_same(result, tmp_path / "n", exact=False)


def test_bad_inputs(graph, tmp_path):
    with pytest.raises(UsageError, match="not both"):
        analyze(graph, tmp_path / "x", target="out:1", klass=1)
    with pytest.raises(UsageError, match="no layer named 'nope'"):
        analyze(graph, tmp_path / "x", target="nope:1")
    with pytest.raises(UsageError, match="out of range"):
        analyze(graph, tmp_path / "x", klass=7)
    with pytest.raises(UsageError, match="bad thresholds"):
        analyze(graph, tmp_path / "x", thresholds="0.1,abc")
    with pytest.raises(UsageError, match="outside the selected layers"):
        analyze(graph, tmp_path / "x", target="out:1", layers="c1:pool")
    with pytest.raises(UsageError, match="does not take the selection top_k_in"):
        analyze(graph, tmp_path / "x", top_k_in=3)


def test_dask_executor_gives_identical_tables(graph, tmp_path):
    import distributed  # the test extra has it: a missing one fails, never skips

    from pipeline.extract.executors import DaskExecutor

    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=2) as cluster, \
            distributed.Client(cluster) as client:
        analyze(graph, tmp_path / "d", target="out:1", thresholds=THRESHOLDS, executor=DaskExecutor(client),
                task_edges=40)
    analyze(graph, tmp_path / "l", target="out:1", thresholds=THRESHOLDS, workers=1, task_edges=40)
    assert_same(tmp_path / "d", tmp_path / "l", exact=True)


def many_families(x):
    L = keras().layers
    y = L.Conv2D(4, 3, padding="same", groups=2, name="grouped")(x)
    y = L.Conv2D(5, 2, dilation_rate=2, padding="same", name="dilated")(y)
    y = L.BatchNormalization(name="bn")(y)
    y = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(y)
    y = L.SeparableConv2D(4, 3, padding="same", name="sep")(y)
    y = L.Conv2DTranspose(3, 3, strides=2, name="tconv")(y)
    y = L.LayerNormalization(name="ln")(y)
    y = L.Dense(4, name="per_position")(y)
    a = L.Conv2D(4, 3, strides=2, padding="valid", name="strided")(y)
    b = L.GlobalAveragePooling2D(name="gap")(a)
    return L.Dense(3, name="out")(b)


@pytest.mark.parametrize("min_abs", [None, 0.15])
def test_blocks_match_the_per_edge_path(tmp_path, monkeypatch, min_abs):
    """The whole-block fast path (conv, dense, transposed conv, layer norm grids) gives the per-edge
    path's tables; blocks it declines (groups, depthwise, diagonals) still count, once."""
    from pipeline.analyze import accumulate, blocks

    g = walk(functional((5, 4, 4), many_families, seed=5))
    kw = dict(target="out:1", thresholds=THRESHOLDS, workers=1, task_edges=300, min_abs_weight=min_abs)
    taken = []
    grid_of = blocks.grid_of

    def counting(b, m):
        got = grid_of(b, m)
        taken.extend([b.kind] if got is not None else [])
        return got

    monkeypatch.setattr(blocks, "grid_of", counting)
    analyze(g, tmp_path / "fast", **kw)
    assert {"conv", "dense", "conv_transpose", "layernorm"} <= set(taken)
    monkeypatch.setattr(accumulate, "BLOCKS", False)
    analyze(g, tmp_path / "slow", **kw)
    assert_same(tmp_path / "fast", tmp_path / "slow", exact=False)
