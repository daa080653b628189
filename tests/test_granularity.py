"""Channel and layer granularities, checked against direct computations from the Keras weights."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipeline import schema
from pipeline.errors import UnsupportedLayerError, UsageError
from pipeline.extract import extract
from pipeline.extract.coarse import AGGREGATORS, ChannelGraph, aggregate, channel_edges
from pipeline.model import randomize_batchnorm, walk
from pipeline.plan import plan
from tests.helpers import functional, keras, sequential

K = keras()
L = K.layers


def channel_table(model, name: str, how: str = "l1") -> dict[tuple[int, int], tuple[float, np.ndarray, str]]:
    """{(source channel, target channel) within their layers: (weight, kernel slice, kind)}."""
    graph = walk(model)
    cg = ChannelGraph(graph)
    spec = graph.layer(name)
    out: dict[tuple[int, int], tuple[float, np.ndarray, str]] = {}
    for table in channel_edges(cg, spec, how, max_floats=7):  # tiny chunks: exercise chunking
        src_base = {cg.offset[t.owner] for t in spec.inputs}
        assert len(src_base) == 1
        base = src_base.pop()
        rows = table.to_pylist()
        for r in rows:
            key = (r[schema.SOURCE] - base, r[schema.TARGET] - cg.offset[name])
            assert key not in out, f"duplicate channel edge {key}"
            out[key] = (r[schema.WEIGHT], np.array(r[schema.KERNEL], np.float32), r[schema.KIND])
    assert len(out) == plan(graph, granularity="channel").layer(name).edges
    return out


def test_conv_channel_edges_are_l1_of_kernel_slices():
    model = sequential((6, 6, 3), [L.Conv2D(4, 3, name="conv")])
    kernel = model.get_layer("conv").get_weights()[0]
    edges = channel_table(model, "conv")
    assert len(edges) == 3 * 4
    for (i, o), (w, k, kind) in edges.items():
        assert kind == "conv"
        np.testing.assert_array_equal(k, kernel[:, :, i, o].reshape(-1))
        assert w == pytest.approx(float(np.abs(kernel[:, :, i, o]).sum()), rel=1e-6)


@pytest.mark.parametrize("how", list(AGGREGATORS))
def test_aggregates_match_numpy(how):
    model = sequential((5, 5, 2), [L.Conv2D(3, 2, name="conv")])
    kernel = model.get_layer("conv").get_weights()[0].astype(np.float64)
    direct = {
        "l1": lambda s: np.abs(s).sum(), "l2": lambda s: np.sqrt((s**2).sum()), "sum": np.sum,
        "mean": np.mean, "max_abs": lambda s: np.abs(s).max(),
    }[how]
    for (i, o), (w, _, _) in channel_table(model, "conv", how).items():
        assert w == pytest.approx(float(direct(kernel[:, :, i, o])), rel=1e-6, abs=1e-7)


def test_unknown_aggregate_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown aggregate 'median'"):
        aggregate(np.ones((1, 2)), "median")


def test_grouped_conv_pairs_stay_inside_groups():
    model = sequential((5, 5, 4), [L.Conv2D(6, 3, groups=2, name="conv")])
    kernel = model.get_layer("conv").get_weights()[0]  # (3, 3, 2, 6)
    edges = channel_table(model, "conv")
    expected = {(g * 2 + a, o) for o in range(6) for g in [o // 3] for a in range(2)}
    assert set(edges) == expected
    for (i, o), (_, k, _) in edges.items():
        np.testing.assert_array_equal(k, kernel[:, :, i % 2, o].reshape(-1))


def test_depthwise_channel_edges():
    model = sequential((5, 5, 3), [L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")])
    kernel = model.get_layer("dw").get_weights()[0]  # (3, 3, 3, 2)
    edges = channel_table(model, "dw")
    assert set(edges) == {(c, c * 2 + m) for c in range(3) for m in range(2)}
    for (c, t), (w, k, kind) in edges.items():
        assert kind == "depthwise"
        np.testing.assert_array_equal(k, kernel[:, :, c, t % 2].reshape(-1))
        assert w == pytest.approx(float(np.abs(kernel[:, :, c, t % 2]).sum()), rel=1e-6)


def test_flatten_then_dense_maps_units_back_to_channels():
    model = sequential((2, 3, 4), [L.Conv2D(4, 1, name="conv"), L.Flatten(), L.Dense(5, name="fc")])
    kernel = model.get_layer("fc").get_weights()[0]  # (24, 5): rows row-major over (h, w, c)
    edges = channel_table(model, "fc")
    assert set(edges) == {(c, o) for c in range(4) for o in range(5)}
    for (c, o), (w, k, kind) in edges.items():
        assert kind == "dense"
        np.testing.assert_array_equal(k, kernel[c::4, o])  # the channel's 6 positions, in order
        assert w == pytest.approx(float(np.abs(kernel[c::4, o]).sum()), rel=1e-6)


def test_dense_on_a_map_and_on_a_vector():
    model = sequential((3, 4), [L.Dense(5, name="a"), L.GlobalAveragePooling1D(), L.Dense(2, name="b")])
    for name in ("a", "b"):
        kernel = model.get_layer(name).get_weights()[0]
        edges = channel_table(model, name)
        assert len(edges) == kernel.size
        for (i, o), (w, k, _) in edges.items():
            np.testing.assert_array_equal(k, [kernel[i, o]])
            assert w == pytest.approx(abs(float(kernel[i, o])))


def test_batchnorm_is_diagonal_with_its_folded_scale():
    model = sequential((3, 3, 4), [L.BatchNormalization(epsilon=0.01, name="bn")])
    randomize_batchnorm(model)
    gamma, beta, mean, var = model.get_layer("bn").get_weights()
    scale = gamma / np.sqrt(var.astype(np.float64) + 0.01)
    edges = channel_table(model, "bn", "sum")
    assert set(edges) == {(c, c) for c in range(4)}
    for (c, _), (w, k, kind) in edges.items():
        assert kind == "batchnorm" and w == pytest.approx(scale[c], rel=1e-6)
        np.testing.assert_allclose(k, [scale[c]], rtol=1e-6)
    nodes = extract(walk(model), None, granularity="channel").manifest
    assert nodes["granularity"] == "channel"


def test_pooling_merges_and_concat():
    def body(x):
        a = L.Conv2D(3, 1, name="a")(x)
        b = L.MaxPooling2D(2, name="pool")(a)
        c = L.Conv2D(3, 1, name="c")(b)
        s = L.Add(name="add")([b, c])
        g = L.Conv2D(1, 1, name="g")(s)
        m = L.Multiply(name="mul")([s, g])  # a one-channel input broadcast over channels
        return L.Concatenate(name="cat")([s, m])

    model = functional((4, 4, 2), body)
    graph = walk(model)
    cg = ChannelGraph(graph)
    got = {}
    for name in ("pool", "add", "mul", "cat"):
        got[name] = set()
        for table in channel_edges(cg, graph.layer(name)):
            got[name] |= {(r["source"], r["target"], r["weight"], r["kind"]) for r in table.to_pylist()}
    off = cg.offset
    assert got["pool"] == {(off["a"] + c, off["pool"] + c, 1.0, "max_pool") for c in range(3)}
    assert got["add"] == {(off[x] + c, off["add"] + c, 1.0, "add") for x in ("pool", "c") for c in range(3)}
    assert got["mul"] == {(off["add"] + c, off["mul"] + c, 1.0, "multiply") for c in range(3)} | {
        (off["g"], off["mul"] + c, 1.0, "multiply") for c in range(3)
    }
    assert got["cat"] == {(off["add"] + c, off["cat"] + c, 1.0, "concat") for c in range(3)} | {
        (off["mul"] + c, off["cat"] + 3 + c, 1.0, "concat") for c in range(3)
    }


def test_permute_of_the_channel_axis_is_refused_at_channel_level():
    model = sequential((3, 4, 2), [L.Permute((1, 3, 2), name="perm")])
    with pytest.raises(UnsupportedLayerError, match="channel granularity"):
        plan(walk(model), granularity="channel")


def test_layer_granularity():
    def body(x):
        a = L.Conv2D(2, 1, name="a")(x)
        b = L.Conv2D(2, 1, name="b")(x)
        return L.Flatten(name="flat")(L.Add(name="add")([a, b]))

    model = functional((3, 3, 1), body)
    graph = walk(model)
    p = plan(graph, granularity="layer")
    assert p.nodes == len(graph.layers) == 5
    assert p.edges == 5  # input->a, input->b, a->add, b->add, add->flat
    res = extract(graph, None, granularity="layer")
    assert (res.nodes, res.edges) == (p.nodes, p.edges)


def test_extract_writes_parquet_with_kernel_column(tmp_path):
    model = sequential((6, 6, 3), [L.Conv2D(4, 3, name="conv"), L.Flatten(), L.Dense(2, name="fc")])
    graph = walk(model)
    res = extract(graph, tmp_path / "ch", granularity="channel", aggregate="l2")
    manifest = json.loads((tmp_path / "ch" / schema.MANIFEST).read_text())
    assert manifest["granularity"] == "channel" and manifest["aggregate"] == "l2"
    p = plan(graph, granularity="channel")
    assert (res.nodes, res.edges) == (p.nodes, p.edges) == (3 + 4 + 2, 12 + 8)
    entry = next(e for e in manifest["layers"] if e["name"] == "conv")
    table = pq.read_table(tmp_path / "ch" / entry["edge_files"][0])
    assert table.schema.names == [*schema.EDGE_COLUMNS, schema.KERNEL]
    kernel = model.get_layer("conv").get_weights()[0]
    row = table.to_pylist()[0]
    i, o = row["source"], row["target"] - entry["id_start"]  # the input's channels are ids 0..2
    np.testing.assert_allclose(row["kernel"], kernel[:, :, i, o].reshape(-1))
    assert row["weight"] == pytest.approx(float(np.sqrt((kernel[:, :, i, o].astype(np.float64) ** 2).sum())), rel=1e-6)
    nodes = pq.read_table(tmp_path / "ch" / entry["node_files"][0])
    assert nodes.schema.names == list(schema.NODE_COLUMNS)
    np.testing.assert_allclose(nodes.column(schema.BIAS).to_numpy(), model.get_layer("conv").get_weights()[1])

    res = extract(graph, tmp_path / "ly", granularity="layer")
    manifest = json.loads((tmp_path / "ly" / schema.MANIFEST).read_text())
    assert manifest["granularity"] == "layer"
    entry = next(e for e in manifest["layers"] if e["name"] == "fc")
    node = pq.read_table(tmp_path / "ly" / entry["node_files"][0]).to_pylist()[0]
    assert node[schema.OUTPUT_SHAPE] == [2] and node[schema.PARAMS] == 64 * 2 + 2
    assert json.loads(node[schema.CONFIG])["units"] == 2
    edge = pq.read_table(tmp_path / "ly" / entry["edge_files"][0]).to_pylist()
    assert [(e["source"], e["target"], e["kind"], e["shape"]) for e in edge] == [(2, 3, "tensor", [64])]


def test_cli_plan_and_extract_take_granularity(tmp_path):
    from pipeline.cli import cli

    path = tmp_path / "m.keras"
    sequential((6, 6, 3), [L.Conv2D(4, 3, name="conv"), L.Flatten(), L.Dense(2, name="fc")]).save(path)
    runner = CliRunner()
    res = runner.invoke(cli, ["plan", str(path), "--granularity", "channel", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output[res.output.index("{"):])
    assert (data["nodes"], data["edges"]) == (9, 20)
    out = tmp_path / "out"
    res = runner.invoke(cli, ["extract", str(path), "--out", str(out), "--granularity", "channel", "--aggregate", "max_abs", "-s"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / schema.MANIFEST).read_text())["aggregate"] == "max_abs"
    res = runner.invoke(cli, ["plan", str(path), "--granularity", "bogus"])
    assert res.exit_code == 2


def test_ops_layernorm_and_layerscale_at_channel_level():
    from keras.src.applications.convnext import LayerScale

    def body(x):
        a = L.Conv2D(3, 1, name="a")(x)
        s = a * 0.5 + 1.0
        n = L.LayerNormalization(name="ln")(s)
        return LayerScale(0.3, 3, name="ls")(n) + a

    model = functional((2, 2, 2), body)
    graph = walk(model)
    p = plan(graph, granularity="channel")
    ln = model.get_layer("ln").get_weights()[0]
    edges = channel_table(model, "ln", "sum")
    assert len(edges) == 9
    for (i, o), (w, _, kind) in edges.items():
        assert kind == "layernorm" and w == pytest.approx(ln[o] * ((i == o) - 1 / 3), rel=1e-6)
    edges = channel_table(model, "ls", "sum")
    assert {k: v[0] for k, v in edges.items()} == pytest.approx({(c, c): 0.3 for c in range(3)})
    ops = [s.name for s in graph.layers if s.type.startswith("keras.ops.")]
    assert len(ops) == 3 and p.edges == 6 + 3 + 3 + 9 + 3 + 6
