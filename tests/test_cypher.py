"""Every file in cypher/ runs against a loaded model and agrees with the extracted tables."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from pipeline import schema
from pipeline.neo4j import db, gds, loader
from tests.test_neo4j_load import ext_edges, ext_nodes, extract_tiny

CYPHER = Path(__file__).resolve().parents[1] / "cypher"
MODEL = "cyq"


def statements(path: Path) -> list[str]:
    """The statements of a .cypher file: comments dropped, split on ';'."""
    text = "\n".join(line for line in path.read_text().splitlines()
                     if not line.strip().startswith("//"))
    return [" ".join(s.split()) for s in text.split(";") if s.strip()]


def run(driver, name: str, **params) -> list[dict]:
    (query,) = statements(CYPHER / name)
    records, _, _ = driver.execute_query(query, model=MODEL, **params)
    return [r.data() for r in records]


@pytest.fixture(scope="module")
def loaded(neo4j_conn, tmp_path_factory):
    dir = extract_tiny(tmp_path_factory.mktemp("ext") / "cyq", 3, "cyq")
    loader.load(dir, "online", MODEL, replace=True, conn=neo4j_conn)
    from pipeline.neo4j.server import driver

    with driver(neo4j_conn) as drv:
        yield drv, dir, loader.read_manifest(dir), ext_nodes(dir), ext_edges(dir)
    loader.drop(neo4j_conn, MODEL)


def test_schema_file_is_what_the_loader_applies():
    assert tuple(statements(CYPHER / "schema.cypher")) == db.SCHEMA_STATEMENTS


def test_every_query_file_is_tested_and_documented():
    # run here by file name, or by bare name in the GDS and Browser tests and in pipeline.neo4j.gds
    # (which tests/test_gds.py tests)
    sources = [Path(__file__).with_name(n) for n in ("test_cypher.py", "test_gds.py", "test_browser.py")]
    text = "".join(p.read_text() for p in [*sources, Path(gds.__file__)])
    files = {p.name for p in CYPHER.glob("*.cypher")}
    untested = {f for f in files if f'"{f}"' not in text and f'"{f.removesuffix(".cypher")}"' not in text}
    assert not untested, untested
    assert len(files - {"schema.cypher"}) >= 6
    for path in CYPHER.glob("*.cypher"):
        first = path.read_text().splitlines()[0]
        assert first.startswith("// "), path
        if path.name != "schema.cypher":
            assert "Parameters:" in path.read_text(), path


def test_layer_summary(loaded):
    driver, _, manifest, _, _ = loaded
    rows = run(driver, "layer_summary.cypher")
    assert [(r["layer"], r["type"], r["neurons"], r["edges"], sorted(r["inputs"]))
            for r in rows] == [
        (la["name"], la["type"], la["nodes"], la["edges"], sorted(la["inbound"]))
        for la in manifest["layers"]
    ]


def test_strongest_incoming(loaded):
    driver, _, _, nodes, edges = loaded
    target = int(nodes[nodes[schema.LAYER] == "fc"][schema.ID].iloc[1])
    rows = run(driver, "strongest_incoming.cypher", id=target, limit=5)
    mine = edges[edges[schema.TARGET] == target].copy()
    mine["abs"] = mine[schema.WEIGHT].abs()
    want = mine.sort_values(["abs", schema.SOURCE], ascending=[False, True]).head(5)
    assert [r["source"] for r in rows] == want[schema.SOURCE].tolist()
    assert np.array_equal(np.float32([r["weight"] for r in rows]), want[schema.WEIGHT].to_numpy())
    assert {r["kind"] for r in rows} == {"dense"}


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_receptive_field(loaded, depth):
    driver, _, _, nodes, edges = loaded
    target = int(nodes[nodes[schema.LAYER] == "fc"][schema.ID].iloc[0])
    parents = defaultdict(set)
    for s, t in zip(edges[schema.SOURCE], edges[schema.TARGET], strict=True):
        parents[int(t)].add(int(s))
    want, frontier = {}, {target}
    for d in range(1, depth + 1):
        frontier = set().union(*(parents[f] for f in frontier))
        for n in frontier:
            want.setdefault(n, d)
    rows = run(driver, "receptive_field.cypher", id=target, depth=depth)
    assert {r["id"]: r["distance"] for r in rows} == want
    assert len(want) > 0


def test_weight_stats(loaded):
    driver, _, _, nodes, edges = loaded
    layer_of = dict(zip(nodes[schema.ID], nodes[schema.LAYER], strict=True))
    edges = edges.assign(layer=edges[schema.TARGET].map(layer_of))
    rows = run(driver, "weight_stats.cypher")
    got = {(r["layer"], r["kind"]): r for r in rows}
    groups = edges.groupby(["layer", schema.KIND])
    assert set(got) == set(groups.groups)
    for key, g in groups:
        w = g[schema.WEIGHT].to_numpy(np.float64)
        r = got[key]
        assert r["edges"] == len(w)
        assert np.float32(r["min"]) == np.float32(w.min())
        assert np.float32(r["max"]) == np.float32(w.max())
        assert r["mean"] == pytest.approx(w.mean(), rel=1e-9, abs=1e-12)
        assert r["std"] == pytest.approx(w.std(), rel=1e-6, abs=1e-12)
        assert r["mean_abs"] == pytest.approx(np.abs(w).mean(), rel=1e-9)


def test_degree_distribution(loaded):
    driver, _, _, nodes, edges = loaded
    ind = edges[schema.TARGET].value_counts()
    outd = edges[schema.SOURCE].value_counts()
    want = defaultdict(int)
    for i, layer in zip(nodes[schema.ID], nodes[schema.LAYER], strict=True):
        want[(layer, int(ind.get(i, 0)), int(outd.get(i, 0)))] += 1
    rows = run(driver, "degree_distribution.cypher")
    assert {(r["layer"], r["in_degree"], r["out_degree"]): r["neurons"] for r in rows} == want


def test_strongest_path(loaded):
    driver, _, _, nodes, edges = loaded
    source = int(nodes[nodes[schema.LAYER] == "input"][schema.ID].iloc[7])
    target = int(nodes[nodes[schema.LAYER] == "fc"][schema.ID].iloc[2])
    # Dynamic programming over the DAG (ids are topological: every source id < its target id):
    # best |weight product| from source to every neuron.
    best = {source: (1.0, [source])}
    order = edges.sort_values(schema.TARGET)
    for s, t, w in zip(order[schema.SOURCE], order[schema.TARGET], order[schema.WEIGHT],
                       strict=True):
        if int(s) in best:
            cand = best[int(s)][0] * abs(float(w))
            if int(t) not in best or cand > best[int(t)][0]:
                best[int(t)] = (cand, [*best[int(s)][1], int(t)])
    (row,) = run(driver, "strongest_path.cypher", source=source, target=target)
    assert row["strength"] == pytest.approx(best[target][0], rel=1e-12)
    assert row["ids"][0] == source and row["ids"][-1] == target
    assert row["layers"] == ["input", "conv", "pool", "fc"]
    assert not run(driver, "strongest_path.cypher", source=target, target=source)
