"""The streaming GraphML writer: exact floats, typed keys, escaping, atomic files, readers."""

from __future__ import annotations

import igraph
import networkx as nx
import numpy as np
import pyarrow as pa
import pytest

from pipeline.errors import OutputError
from pipeline.sinks.graphml import GraphMLWriter, floats, render


def _write(path, source, target, weight, kind, nodes):
    attrs = [("name", pa.string()), ("h", pa.int32()), ("bias", pa.float32())]
    with GraphMLWriter(path, attrs, [("weight", pa.float32()), ("kind", pa.string())]) as w:
        w.edges(source, target, {"weight": weight, "kind": kind})
        w.close([nodes])
    return w


def test_float32_round_trip_is_bit_exact():
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    values = values[np.isfinite(values)]
    values[:6] = [0.1, -0.0, 1.0, 3.4028235e38, 1e-45, -1.1754944e-38]
    t = floats(values)
    mats = render([t], len(values))
    text = b"".join(m.tobytes() for m in mats)  # groups are rendered in length order
    order = np.argsort(t.keys(), kind="stable")
    lens = t.keys()[order]
    strings = []
    pos = 0
    for n in lens:
        strings.append(text[pos : pos + n].decode())
        pos += n
    got = np.array([float(s) for s in strings], np.float64).astype(np.float32)
    assert np.array_equal(got.view(np.uint32), values[order].view(np.uint32))


def test_networkx_and_igraph_read_it(tmp_path):
    n = 1000
    rng = np.random.default_rng(0)
    source = rng.integers(0, 300, n)
    target = rng.integers(300, 10**9, n)
    pairs = np.unique(np.stack([source, target], 1), axis=0)
    source, target = pairs[:, 0], pairs[:, 1]
    weight = rng.normal(0, 0.05, len(source)).astype(np.float32)
    kind = pa.array(np.where(rng.random(len(source)) < 0.5, "conv", 'a<&"b>')).dictionary_encode()
    ids = np.union1d(source, target)
    nodes = pa.table({"id": ids, "name": pa.array([f"L{i % 3}&" for i in range(len(ids))]),
                      "h": (ids % 5 - 1).astype(np.int32),
                      "bias": rng.normal(size=len(ids)).astype(np.float32)})
    path = tmp_path / "g.graphml"
    w = _write(path, source, target, weight, kind, nodes)
    assert (w.node_count, w.edge_count) == (len(ids), len(source))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.graphml"]
    G = nx.read_graphml(path, node_type=int)
    assert G.is_directed() and G.number_of_edges() == len(source) and G.number_of_nodes() == len(ids)
    kinds = kind.cast(pa.string()).to_pylist()
    for s, t, wt, k in zip(source.tolist(), target.tolist(), weight, kinds, strict=True):
        d = G.edges[s, t]
        assert np.float32(d["weight"]) == wt and d["kind"] == k
    for i, nid in enumerate(ids.tolist()):
        d = G.nodes[nid]
        assert d["name"] == f"L{i % 3}&" and d["h"] == nid % 5 - 1 and isinstance(d["h"], int)
        assert np.float32(d["bias"]) == nodes.column("bias")[i].as_py()
    g = igraph.Graph.Read_GraphML(str(path))
    assert g.is_directed() and g.vcount() == len(ids) and g.ecount() == len(source)
    got = {(int(g.vs[e.source]["id"]), int(g.vs[e.target]["id"])): np.float32(e["weight"]) for e in g.es}
    assert got == dict(zip(zip(source.tolist(), target.tolist(), strict=True), weight.tolist(), strict=True))
    # nodes follow the edges in the file: both readers still give them their attributes
    text = path.read_text()
    assert text.rindex("<edge ") < text.index("<node ")
    by_id = {int(v["id"]): v for v in g.vs}
    for i, nid in enumerate(ids.tolist()):
        v = by_id[nid]
        assert v["name"] == f"L{i % 3}&" and v["h"] == nid % 5 - 1
        assert np.float32(v["bias"]) == nodes.column("bias")[i].as_py()


def test_key_types_and_empty_graph(tmp_path):
    path = tmp_path / "empty.graphml"
    empty = pa.table({"id": np.zeros(0, np.int64), "name": pa.array([], pa.string()),
                      "h": np.zeros(0, np.int32), "bias": np.zeros(0, np.float32)})
    _write(path, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32),
           pa.array([], pa.string()), empty)
    text = path.read_text()
    for key in ('attr.name="h" attr.type="long"', 'attr.name="bias" attr.type="double"',
                'attr.name="name" attr.type="string"', 'attr.name="weight" attr.type="double"',
                'edgedefault="directed"'):
        assert key in text
    assert nx.read_graphml(path).number_of_nodes() == 0


def test_failure_leaves_no_file(tmp_path):
    path = tmp_path / "g.graphml"
    with pytest.raises(RuntimeError):
        with GraphMLWriter(path, [], [("weight", pa.float32())]) as w:
            w.edges(np.arange(5), np.arange(5) + 5, {"weight": np.ones(5, np.float32)})
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match="does not exist"):
        GraphMLWriter(tmp_path / "missing" / "g.graphml", [], [])
