"""``cnngraph diff``: two checkpoints of one architecture compared edge by edge.

The models are small Keras models built here (branches, an Add, a Concatenate, max and average
pooling); B is A saved and loaded, with a few known kernel entries and one bias changed. The
expected changed edges are derived in the test from the data contract (id = tensor offset +
row-major flat index; a conv kernel entry (ky, kx, ci, co) links input (oh + ky - pad, ow + kx - pad, ci)
to output (oh, ow, co) wherever that input position exists).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipeline.analyze import diff as diff_module
from pipeline.analyze.diff import DEFAULT_TOP, diff
from pipeline.cli import cli
from pipeline.cli import diff as diff_cli
from pipeline.errors import OutputError, UsageError
from pipeline.extract import extract
from pipeline.model import randomize_biases, walk
from tests.helpers import keras

#: (layer, kernel index, added value) of B's kernel changes; B's bias change: c1's channel 1.
KERNEL_CHANGES = [("c2a", (1, 2, 0, 3), 0.5), ("c2a", (0, 0, 1, 0), -0.3), ("c3", (0, 0, 3, 1), -0.25),
                  ("fc", (17, 2), 0.875)]
BIAS_CHANGE = ("c1", 1, 0.1)


def body(x, c2b_kernel: int = 1, c3_filters: int = 2):
    L = keras().layers
    c1 = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(x)
    a = L.Conv2D(4, 3, padding="same", name="c2a")(c1)
    b = L.Conv2D(4, c2b_kernel, padding="same", name="c2b")(c1)
    s = L.Add(name="add")([a, b])
    p = L.MaxPooling2D(2, name="pool")(s)
    c3 = L.Conv2D(c3_filters, 3, padding="same", name="c3")(p)
    q = L.AveragePooling2D(2, strides=1, padding="same", name="avg")(p)
    cat = L.Concatenate(name="cat")([q, c3])
    return L.Dense(5, name="fc")(L.Flatten(name="flat")(cat))


def model_a(**kw):
    """A seeded model of ``body``; every name given, so each build has the same layer names."""
    k = keras()
    k.utils.set_random_seed(1)
    inp = k.Input((8, 8, 3), name="inp")
    model = k.Model(inp, body(inp, **kw), name="net")
    randomize_biases(model, 1)
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(model A, model B, A's file, B's file): B is A with KERNEL_CHANGES and BIAS_CHANGE."""
    k = keras()
    root = tmp_path_factory.mktemp("diff-models")
    a = model_a()
    a.save(root / "a.keras")
    b = k.models.load_model(root / "a.keras")
    for name, index, add in KERNEL_CHANGES:
        w = b.get_layer(name).get_weights()
        w[0][index] += add
        b.get_layer(name).set_weights(w)
    name, channel, add = BIAS_CHANGE
    w = b.get_layer(name).get_weights()
    w[1][channel] += add
    b.get_layer(name).set_weights(w)
    b.save(root / "b.keras")
    return a, b, root / "a.keras", root / "b.keras"


def tables(out) -> dict[str, pd.DataFrame]:
    """The three tables, dictionary columns as plain strings (comparable across runs)."""
    frames = {}
    for name in ("layers", "neurons", "edges"):
        df = pq.read_table(out / f"{name}.parquet").to_pandas()
        frames[name] = df.astype({c: str for c in df.columns if isinstance(df[c].dtype, pd.CategoricalDtype)})
    return frames


def expected_edges(a, b, graph) -> pd.DataFrame:
    """Every edge a changed kernel entry produces, with both weights, computed from the contract."""
    rows = []
    for name, index, _ in KERNEL_CHANGES:
        spec = graph.layer(name)
        ka, kb = a.get_layer(name).get_weights()[0], b.get_layer(name).get_weights()[0]
        src0, tgt0 = spec.inputs[0].offset, spec.output.offset
        if name == "fc":  # Dense: input unit i -> unit j
            pairs = [(src0 + index[0], tgt0 + index[1])]
        else:  # 'same' 3x3 conv, stride 1: pad 1 before
            (ih, iw, cin), (oh, ow, cout) = spec.inputs[0].shape, spec.output.shape
            ky, kx, ci, co = index
            pairs = [(src0 + ((y + ky - 1) * iw + (x + kx - 1)) * cin + ci, tgt0 + (y * ow + x) * cout + co)
                     for y in range(oh) for x in range(ow) if 0 <= y + ky - 1 < ih and 0 <= x + kx - 1 < iw]
        rows += [(s, t, ka[index], kb[index], float(kb[index]) - float(ka[index]), name) for s, t in pairs]
    return pd.DataFrame(rows, columns=["source", "target", "weight_a", "weight_b", "delta", "layer"])


@pytest.fixture(scope="module")
def graphs(models):
    a, b, _, _ = models
    return walk(a), walk(b)


@pytest.fixture(scope="module")
def result(graphs, tmp_path_factory):
    out = tmp_path_factory.mktemp("diff") / "out"
    return diff(graphs[0], graphs[1], out, top=10_000), tables(out)


def test_diff_with_itself_is_all_zeros(graphs, tmp_path):
    res = diff(graphs[0], graphs[0], tmp_path / "d")
    t = tables(tmp_path / "d")
    assert res.changed_edges == 0 and res.changed_bias_neurons == 0 and res.edges > 0
    assert len(t["edges"]) == 0
    layers = t["layers"]
    assert (layers["changed_edges"] == 0).all() and (layers["max_abs_delta"] == 0).all()
    assert (layers["changed_bias_neurons"] == 0).all()
    convs = layers[layers["layer_type"].isin(["Conv2D", "Dense"])]
    assert len(convs) == 5 and np.allclose(convs["correlation"], 1.0) and (convs["relative_change"] == 0).all()
    assert layers.loc[layers["layer"] == "pool", "correlation"].isna().all()  # constant weights: undefined
    neurons = t["neurons"]
    assert len(neurons) == res.neurons == sum(s.output.size for s in graphs[0].layers if s.makes_neurons)
    assert (neurons["in_strength_delta"] == 0).all() and (neurons["bias_delta"] == 0).all()
    assert (neurons["in_strength_a"] == neurons["in_strength_b"]).all()


def test_perturbed_copy_finds_exactly_the_changed_edges(models, graphs, result):
    a, b, _, _ = models
    res, t = result
    want = expected_edges(a, b, graphs[0])
    assert len(want) == 56 + 49 + 9 + 1  # (8x7), (7x7) and (3x3) valid positions, one Dense entry
    got = t["edges"]
    assert set(zip(got["source"], got["target"], strict=True)) == set(zip(want["source"], want["target"], strict=True))
    assert len(got) == len(want) == res.changed_edges == res.top
    merged = got.merge(want, on=["source", "target"], suffixes=("", "_want"))
    assert (merged["layer"] == merged["layer_want"]).all()
    assert (merged["weight_a"] == merged["weight_a_want"]).all() and (merged["weight_b"] == merged["weight_b_want"]).all()
    assert (merged["delta"] == merged["delta_want"]).all()
    assert (np.diff(got["delta"].abs().to_numpy()) <= 0).all()  # largest |delta| first
    assert set(got["kind"]) == {"conv", "dense"}


def test_layer_statistics(models, graphs, result):
    a, b, _, _ = models
    res, t = result
    layers = t["layers"].set_index("layer")
    want = expected_edges(a, b, graphs[0])
    counts = want.groupby("layer").size()
    assert layers["changed_edges"][layers["changed_edges"] > 0].to_dict() == counts.to_dict()
    assert [la.layer for la in res.changed_layers] == ["c2a", "c3", "fc"]
    for name, group in want.groupby("layer"):
        row = layers.loc[name]
        assert row["max_abs_delta"] == group["delta"].abs().max()
        assert np.isclose(row["l2_delta"], np.sqrt((group["delta"] ** 2).sum()))
        assert np.isclose(row["mean_abs_delta"], group["delta"].abs().sum() / row["edges"])
    # Dense: one edge per kernel entry, so the edge weights are the kernel
    ka, kb = a.get_layer("fc").get_weights()[0].ravel(), b.get_layer("fc").get_weights()[0].ravel()
    fc = layers.loc["fc"]
    assert fc["edges"] == ka.size
    assert np.isclose(fc["l2_a"], np.linalg.norm(ka.astype(np.float64)))
    assert np.isclose(fc["relative_change"], np.linalg.norm(kb.astype(np.float64) - ka) / np.linalg.norm(ka.astype(np.float64)))
    assert np.isclose(fc["correlation"], np.corrcoef(ka, kb)[0, 1])
    # the bias change: every c1 neuron of channel 1, and nothing else
    name, channel, _ = BIAS_CHANGE
    db = float(b.get_layer(name).get_weights()[1][channel]) - float(a.get_layer(name).get_weights()[1][channel])
    assert layers["changed_bias_neurons"][layers["changed_bias_neurons"] > 0].to_dict() == {name: 8 * 8}
    assert layers.loc[name, "changed_bias_channels"] == 1 and layers.loc[name, "max_abs_bias_delta"] == abs(db)
    neurons = t["neurons"]
    changed = neurons[neurons["bias_delta"] != 0]
    assert (changed["layer"] == name).all() and (changed["c"] == channel).all() and len(changed) == 64
    assert (changed["bias_delta"] == db).all()


def test_neuron_in_strength(models, graphs, result):
    a, b, _, _ = models
    _, t = result
    neurons = t["neurons"].set_index("id")
    want = expected_edges(a, b, graphs[0])
    per_target = (want["weight_b"].abs() - want["weight_a"].abs()).groupby(want["target"]).sum()
    moved = neurons[neurons["in_strength_delta"] != 0]
    assert set(moved.index) == set(per_target.index)
    assert np.allclose(moved["in_strength_delta"], per_target.loc[moved.index], rtol=0, atol=1e-6)
    # absolute in-strengths of the Dense units: column sums of |kernel|; positions as in the node table
    fc = neurons[neurons["layer"] == "fc"]
    assert np.allclose(fc["in_strength_a"], np.abs(a.get_layer("fc").get_weights()[0]).sum(axis=0), atol=1e-5)
    assert (fc["c"] == np.arange(5)).all() and (fc["h"] == -1).all()
    c1 = neurons[neurons["layer"] == "c1"]
    assert (c1["h"].to_numpy() == np.repeat(np.arange(8), 8 * 4)).all() and (c1["c"].to_numpy() == np.tile(np.arange(4), 64)).all()


def test_top_n_is_exact_across_chunks(graphs, result, tmp_path):
    """Chunks of 7 edges (heaps merged thousands of times) keep the same top as one chunk; a cut
    through a tie keeps the earliest edges in stream order."""
    _, t = result
    full = t["edges"]
    for top in (1, 50, 115):  # 50 cuts through c2a's 0.5 group
        out = tmp_path / f"top{top}"
        diff(graphs[0], graphs[1], out, top=top, chunk=7)
        got = tables(out)["edges"]
        assert len(got) == top
        assert (got["delta"].abs().to_numpy() == full["delta"].abs().to_numpy()[:top]).all()
        pd.testing.assert_frame_equal(got, full.iloc[:top].reset_index(drop=True))
        pd.testing.assert_frame_equal(tables(out)["layers"], t["layers"])  # sums in another order: close


def test_folders_and_models_give_the_same_tables(models, graphs, result, tmp_path):
    _, _, file_a, file_b = models
    _, want = result
    extract(graphs[0], tmp_path / "fa")
    extract(graphs[1], tmp_path / "fb")
    for k, (x, y) in enumerate([(tmp_path / "fa", tmp_path / "fb"), (tmp_path / "fa", graphs[1]), (str(file_a), str(tmp_path / "fb"))]):
        diff(x, y, tmp_path / f"d{k}", top=10_000, chunk=13)
        got = tables(tmp_path / f"d{k}")
        for name in want:
            pd.testing.assert_frame_equal(got[name], want[name], obj=f"{name} of pair {k}")
    summary = json.loads((tmp_path / "d0" / "diff.json").read_text())
    assert summary["counts"]["changed_edges"] == len(want["edges"])
    assert summary["sources"]["a"]["folder"] == str((tmp_path / "fa").resolve())


def test_different_architectures_are_refused(graphs, tmp_path):
    for kw, what in (({"c3_filters": 3}, "layer 7 (c3) has output shape (4, 4, 2) in A and (4, 4, 3) in B"),
                     ({"c2b_kernel": 3}, "layer 3 (c2b) has edge count 1024 in A and 7744 in B")):
        with pytest.raises(UsageError) as err:
            diff(graphs[0], walk(model_a(**kw)), tmp_path / "d")
        assert what in str(err.value) and "not one architecture" in str(err.value)
    assert not (tmp_path / "d").exists()  # refused before anything was written


def test_a_folder_in_another_edge_order_is_refused_not_misread(graphs, tmp_path):
    """A folder extracted with a non-default task size orders c2a's edges by row blocks: the
    diff names the first edge that differs instead of comparing the wrong weights."""
    extract(graphs[1], tmp_path / "fb", task_size=1000)
    with pytest.raises(UsageError, match=r"layer c1: edge [\d,]+ is \d+ -> \d+ in A but \d+ -> \d+ in B"):
        diff(graphs[0], tmp_path / "fb", tmp_path / "d")


def test_output_safety(graphs, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(OutputError, match="not a cnngraph diff folder"):
        diff(graphs[0], graphs[1], foreign)
    assert (foreign / "notes.txt").read_text() == "keep" and len(list(foreign.iterdir())) == 1
    extract(graphs[0], tmp_path / "fa")
    with pytest.raises(OutputError, match="would write over the source"):
        diff(tmp_path / "fa", graphs[1], tmp_path / "fa" / "diff")
    diff(graphs[0], graphs[1], tmp_path / "d", top=3)
    diff(graphs[0], graphs[1], tmp_path / "d", top=4)  # an earlier diff of ours is rewritten
    assert len(tables(tmp_path / "d")["edges"]) == 4
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [
        ".cnngraph.json", "diff.json", "edges.parquet", "layers.parquet", "neurons.parquet"]


def test_cli_end_to_end(models, tmp_path):
    _, _, file_a, file_b = models
    res = CliRunner().invoke(cli, ["diff", str(file_a), str(file_b), "--out", str(tmp_path / "d"), "--top", "20", "-s"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0].split()[:3] == ["layer", "type", "edges"]
    assert [line.split()[0] for line in lines[1:4]] == ["c2a", "c3", "fc"]
    assert lines[1].split()[3] == "105"  # changed edges of c2a
    assert lines[-1].startswith("115 of ") and "in 3 layers; biases changed in 1 layers" in lines[-1]
    assert len(tables(tmp_path / "d")["edges"]) == 20
    other = tmp_path / "other.keras"
    model_a(c3_filters=3).save(other)
    res = CliRunner().invoke(cli, ["diff", str(file_a), str(other), "--out", str(tmp_path / "e")])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        "Error: A (net) and B (net) are not one architecture: layer 7 (c3) has output shape "
        "(4, 4, 2) in A and (4, 4, 3) in B; diff compares two checkpoints of the same layer graph"]


def test_cli_default_top_is_the_librarys():
    assert diff_cli.DEFAULT_TOP == DEFAULT_TOP == diff_module.DEFAULT_TOP


@pytest.mark.slow
def test_cli_two_seeds_of_an_application(tmp_path):
    """Two seeds of one keras.applications model differ in every weight layer."""
    res = CliRunner().invoke(cli, ["diff", "mobilenet", "mobilenet", "--input-shape", "32,32,3", "--no-top",
                                   "--seed-b", "1", "--out", str(tmp_path / "d"), "-s"])
    assert res.exit_code == 0, res.output
    layers = tables(tmp_path / "d")["layers"]
    weighted = layers[layers["layer_type"].isin(["Conv2D", "DepthwiseConv2D"])]
    assert len(weighted) > 10 and (weighted["changed_edges"] == weighted["edges"]).all()


def test_two_builds_in_one_process_compare(tmp_path):
    """Keras numbers unnamed input layers per process (input_layer, input_layer_1): two seeds of
    one architecture built side by side still compare, under A's names."""
    from tests.helpers import tiny_cnn

    ga, gb = walk(tiny_cnn(seed=0)), walk(tiny_cnn(seed=1))
    assert ga.layers[0].name != gb.layers[0].name
    res = diff(ga, gb, tmp_path / "d")
    by_name = {la.layer: la for la in res.layers}
    assert by_name["conv"].changed_edges == by_name["conv"].edges > 0
    assert by_name["fc"].changed_edges == by_name["fc"].edges > 0 and by_name["pool"].changed_edges == 0
    assert set(tables(tmp_path / "d")["layers"]["layer"]) == {s.name for s in ga.layers}
