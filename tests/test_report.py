"""``cnngraph report``: the page renders offline in a real headless Chromium, its tables hold the
plan's exact counts, and every picture is drawn from the right numbers: the data beside each
equals the analysis tables (recomputed here with plain numpy), the input-influence map equals an
explicit enumeration of every path, and model, folder and Neo4j sources give the same data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from pipeline.analyze import columns
from pipeline.cli import cli
from pipeline.errors import UsageError
from pipeline.extract import extract, stream_edges
from pipeline.model import walk
from pipeline.plan import plan
from pipeline.report import report
from tests.chromium_plugin import requests
from tests.helpers import functional
from tests.test_analyze import body, enumerate_paths

pytest_plugins = ["tests.chromium_plugin", "tests.neo4j_plugin"]

THRESHOLDS = (0.0, 0.05, 0.2, 1.0)
TARGET = "out:1"
#: Files of data/ that must be the same whatever the source.
SAME = ("weights.json", "distributions.json", "thresholds.json", "path.json", "layer_graph.json")


@pytest.fixture(scope="module")
def graph():
    return walk(functional((6, 5, 2), body, seed=3))


@pytest.fixture(scope="module")
def made(graph, tmp_path_factory):
    return report(graph, tmp_path_factory.mktemp("rep") / "model", target=TARGET, thresholds=THRESHOLDS, workers=1)


@pytest.fixture(scope="module")
def folder(graph, tmp_path_factory):
    out = tmp_path_factory.mktemp("ext") / "ex"
    extract(graph, out)
    return out


def data(res, name: str):
    path = res.out / "data" / name
    return pd.read_parquet(path) if name.endswith(".parquet") else json.loads(path.read_text())


def analysis(res, name: str) -> pd.DataFrame:
    return pd.read_parquet(res.analysis / name)


def test_page_renders_offline(made, graph, chromium, tmp_path):
    from selenium.webdriver.common.by import By

    requests(chromium)  # forget what came before
    chromium.get(made.page.as_uri())
    images = chromium.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
    assert len(images) >= 10
    assert all(done and width > 0 for _, done, width in images), images
    assert {src for src, _, _ in images} == set(made.pictures)
    errors = [e for e in chromium.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    made_requests = requests(chromium)
    assert made_requests and all(url.startswith("file://") for _, url in made_requests), made_requests
    # the plan's table: every layer's exact counts, written as the CLI writes them, and the totals
    p = plan(graph)
    rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in chromium.find_elements(By.CSS_SELECTOR, "#plan tr")[1:]]
    want = [[lp.name, lp.type, "x".join(map(str, lp.output_shape)), f"{lp.nodes:,}", f"{lp.edges:,}"] for lp in p.layers]
    assert rows == [*want, ["total", "", "", f"{p.nodes:,}", f"{p.edges:,}"]]
    sinks = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
             for tr in chromium.find_elements(By.CSS_SELECTOR, "#sinks tr")[1:]]
    assert [(s, b) for s, _, b in sinks] == [(k, f"{v:,}") for k, v in p.bytes.items()]
    # each section says how long it took
    took = chromium.find_elements(By.CSS_SELECTOR, "h2 .took")
    assert len(took) >= 8 and all(t.text.startswith("(took ") for t in took)
    chromium.save_screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_plan_data_and_big_numbers(graph, made):
    p = plan(graph)
    got = data(made, "plan.json")
    assert (got["nodes"], got["edges"], got["bytes"]) == (p.nodes, p.edges, p.bytes)
    assert [(r["name"], r["nodes"], r["edges"]) for r in got["layers"]] == [(lp.name, lp.nodes, lp.edges) for lp in p.layers]
    assert f"{p.edges:,}" in made.page.read_text()


def test_layer_graph_layout(graph, made):
    lay = data(made, "layer_graph.json")
    pos = {k: tuple(v) for k, v in lay["position"].items()}
    assert set(pos) == {s.name for s in graph.layers}
    assert len(set(pos.values())) == len(pos), "two boxes in one place"
    want = {(p, s.name) for s in graph.layers for p in s.inbound}
    assert {(e["source"], e["target"]) for e in lay["edges"]} == want  # Add and Concatenate drawn as merges
    for e in lay["edges"]:
        rows = [r for _, r in e["points"]]
        assert rows == list(range(pos[e["source"]][1], pos[e["target"]][1] + 1))  # one point per row, no box crossed
        for slot, row in e["points"][1:-1]:
            assert (slot, row) not in pos.values()
    for s in graph.layers:  # a layer's row is below every input's
        assert all(pos[p][1] < pos[s.name][1] for p in s.inbound)


def test_weights_data_equals_layers_table(made):
    want = analysis(made, columns.LAYERS_FILE)
    want = want[want[columns.EDGES] > 0]
    got = data(made, "weights.json")
    assert [d["layer"] for d in got] == want[columns.LAYER].tolist()
    for d, (_, row) in zip(got, want.iterrows(), strict=True):
        assert d["edges_total"] == row[columns.EDGES]
        assert d["edges"] == list(row[columns.HIST_EDGES]) and d["counts"] == list(row[columns.HIST_COUNTS])
        for k in (*columns.ABS_QUANTILE, columns.WEIGHT_MIN, columns.WEIGHT_MAX, columns.WEIGHT_STD):
            assert d[k] == row[k]


def test_threshold_data_equals_sweep(made, graph):
    got = data(made, "thresholds.json")
    thr = analysis(made, columns.THRESHOLDS_FILE)
    assert got["thresholds"] == list(THRESHOLDS)
    for name, kept in zip(got["layers"], got["edges"], strict=True):
        rows = thr[thr[columns.LAYER] == name].sort_values(columns.THRESHOLD)
        assert kept == rows[columns.EDGES].tolist()
    p = plan(graph)
    assert got["totals"] == [p.layer(n).edges for n in got["layers"]]
    assert [k[0] for k in got["edges"]] == got["totals"]  # t = 0 keeps every edge


def test_distribution_data_equals_neurons(made):
    got = data(made, "distributions.json")
    neurons = analysis(made, columns.NEURONS_FILE)
    assert got["layers"] == list(dict.fromkeys(neurons[columns.LAYER]))
    for measure in (columns.IN_DEGREE, columns.OUT_DEGREE, columns.IN_STRENGTH, columns.OUT_STRENGTH,
                    columns.PAGERANK, columns.INFLUENCE):
        for layer, group in neurons.groupby(columns.LAYER, observed=True):
            h = got["measures"][measure][layer]
            x = group[measure].to_numpy(np.float64)
            assert h["zeros"] == np.count_nonzero(x == 0)
            if h["counts"]:
                edges = np.asarray(h["edges"])
                assert edges[0] <= x[x > 0].min() and x.max() < edges[-1]
                assert np.histogram(x[x > 0], bins=edges)[0].tolist() == h["counts"], (measure, layer)
                np.testing.assert_allclose(np.log10(edges[1:] / edges[:-1]), 1 / got["bins_per_decade"], rtol=1e-9)
            else:
                assert (x == 0).all()


def test_influence_maps_equal_path_enumeration(made, graph):
    parts = [(c.source, c.target, c.weight) for _, c in stream_edges(graph)]
    edges = tuple(np.concatenate(x) for x in zip(*parts, strict=True))
    target = graph.layer("out").output.offset + 1
    infl, (_, best) = enumerate_paths((edges[0], edges[1], edges[2].astype(np.float64)), target)
    inp = graph.layers[0].output
    got = data(made, f"input_influence_{graph.layers[0].name}.parquet")
    assert len(got) == inp.size
    flat = np.ravel_multi_index((got[columns.H], got[columns.W], got[columns.C]), inp.shape)
    want = np.array([infl.get(inp.offset + int(k), 0.0) for k in flat])
    assert (want > 0).any()
    np.testing.assert_allclose(got[columns.INFLUENCE], want, rtol=1e-10)
    maps = data(made, "layer_influence.parquet")
    assert set(maps[columns.LAYER]) and set(maps[columns.LAYER]) <= {s.name for s in graph.layers}
    for name, grid in maps.groupby(columns.LAYER):
        out = graph.layer(name).output
        h, w, c = np.unravel_index(np.arange(out.size), out.shape)
        sums = np.zeros(out.shape[:2])
        np.add.at(sums, (h, w), [infl.get(out.offset + k, 0.0) for k in range(out.size)])
        np.testing.assert_allclose(grid[columns.INFLUENCE], sums[grid[columns.H], grid[columns.W]], rtol=1e-10)
    assert [s[columns.ID] for s in data(made, "path.json")] == best


def same_data(a, b) -> None:
    pa_, pb = data(a, "plan.json"), data(b, "plan.json")
    pa_.pop("model"), pb.pop("model")
    assert pa_ == pb
    for name in SAME:
        x, y = data(a, name), data(b, name)
        if name == "path.json":
            for r, s in zip(x, y, strict=True):
                assert r[columns.ID] == s[columns.ID] and r[columns.SCORE] == pytest.approx(s[columns.SCORE], rel=1e-12)
        elif name == "weights.json":
            assert [{k: v for k, v in d.items() if k in ("layer", "edges", "counts", "edges_total")} for d in x] == \
                [{k: v for k, v in d.items() if k in ("layer", "edges", "counts", "edges_total")} for d in y]
        else:
            assert x == y, name
    np.testing.assert_allclose(data(a, "layer_influence.parquet")[columns.INFLUENCE],
                               data(b, "layer_influence.parquet")[columns.INFLUENCE], rtol=1e-12)


def test_folder_source_gives_the_same_report(made, folder, tmp_path):
    same_data(made, report(folder, tmp_path / "f", target=TARGET, thresholds=THRESHOLDS))


def test_neo4j_source_gives_the_same_report_and_gds_pagerank(made, folder, tmp_path, neo4j_conn):
    from pipeline.neo4j import loader
    from pipeline.neo4j.query import run_query

    loader.load(folder, mode="online", model_name="report_tiny", replace=True, conn=neo4j_conn)
    try:
        res = report("neo4j:report_tiny", tmp_path / "n", target=TARGET, thresholds=THRESHOLDS, conn=neo4j_conn)
    finally:
        loader.drop(neo4j_conn, "report_tiny")
    same_data(made, res)
    _, left = run_query("CALL gds.graph.list() YIELD graphName RETURN graphName", {}, conn=neo4j_conn)
    assert not [g for (g,) in left if g.startswith("cnngraph_report_")], "the projection was not dropped"
    gds = data(res, "gds_pagerank.json")
    ours = analysis(made, columns.NEURONS_FILE)
    assert gds["nodes"] == len(ours)
    for layer, group in ours.groupby(columns.LAYER, observed=True):
        h = gds["layers"][layer]
        x = group[columns.PAGERANK].to_numpy()
        assert sum(h["counts"]) == len(x)  # every neuron, and GDS's PageRank is the exact one
        assert np.histogram(x, bins=np.asarray(h["edges"]))[0].tolist() == h["counts"]
    assert "GDS PageRank" in res.page.read_text()


def test_cli_report_and_refusal(folder, tmp_path):
    runner = CliRunner()
    done = runner.invoke(cli, ["report", str(folder), "--out", str(tmp_path / "r"), "--thresholds", "0,0.1", "-s"])
    assert done.exit_code == 0, done.output
    assert done.output.splitlines()[-1].startswith(f"wrote {tmp_path / 'r' / 'index.html'}")
    assert (tmp_path / "r" / "layers.png").stat().st_size > 1000
    assert not list((tmp_path / "r").glob("input_influence*"))  # no target, no influence map
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    done = runner.invoke(cli, ["report", str(folder), "--out", str(tmp_path / "mine"), "-s"])
    assert done.exit_code == 1
    assert "is not a cnngraph report folder" in done.output and "choose another --out" in done.output
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    done = runner.invoke(cli, ["report", str(folder), "--out", str(folder / "r"), "-s"])
    assert done.exit_code == 1 and "would write over the source" in done.output
    done = runner.invoke(cli, ["report", str(folder), "--out", str(tmp_path / "r"), "--class", "9", "-s"])
    assert done.exit_code == 1 and "Error:" in done.output


def test_rerun_leaves_no_stale_picture(made, graph, tmp_path):
    out = tmp_path / "again"
    first = report(graph, out, target=TARGET, thresholds=THRESHOLDS, workers=1)
    assert "path.png" in first.pictures
    second = report(graph, out, thresholds=THRESHOLDS, workers=1)
    assert "path.png" not in second.pictures and not (out / "path.png").exists()
    assert sorted(p.name for p in out.glob("*.png")) == second.pictures
    assert not list(Path(out).rglob("*.tmp"))
    with pytest.raises(UsageError, match="out of range"):  # refused before anything is replaced
        report(graph, out, klass=9, workers=1)
    assert sorted(p.name for p in out.glob("*.png")) == second.pictures and second.page.exists()
