"""The extract stage on disk: Parquet layout and schema, node columns, the manifest and its
guarantees (written last, refused folders, disk space), layer ranges, workers and chunk sizes."""

from __future__ import annotations

import shutil
from collections import namedtuple
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipeline import schema
from pipeline.errors import OutputError
from pipeline.extract import edge_checksum, extract, read_manifest
from pipeline.model import walk
from pipeline.plan import human_bytes, plan
from pipeline.replay import verify
from tests.helpers import keras, sequential

L = keras().layers


@pytest.fixture(scope="module")
def small():
    """(model, graph): input 6x5x2 -> conv (relu) -> max pool -> flatten -> dense (softmax)."""
    model = sequential((6, 5, 2), [
        L.Conv2D(3, 3, padding="same", activation="relu", name="conv"),
        L.MaxPooling2D(2, padding="same", name="pool"),
        L.Flatten(name="flat"),
        L.Dense(4, activation="softmax", name="fc"),
    ])
    return model, walk(model)


@pytest.fixture(scope="module")
def extracted(small, tmp_path_factory):
    """A complete extraction of the small model, with many small tasks and chunks."""
    out = tmp_path_factory.mktemp("extract") / "out"
    result = extract(small[1], out, task_size=40, max_edges=17)
    return out, result


def _fields(s) -> list[tuple[str, object]]:
    return [(f.name, f.type) for f in s]


def _read_edges(folder: Path):
    return ds.dataset(folder / schema.EDGES_DIR).to_table()


def _read_nodes(folder: Path):
    return ds.dataset(folder / schema.NODES_DIR).to_table()


class FailAfter:
    """A progress callback that raises on its n-th advance: simulates an interrupted run."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def start(self, total, unit, desc):
        pass

    def advance(self, k):
        self.calls += 1
        if self.calls >= self.n:
            raise KeyboardInterrupt("simulated interruption")

    def finish(self):
        pass

    def message(self, text):
        pass


def test_parquet_readable_with_schema(extracted, small):
    out, result = extracted
    edges, nodes = _read_edges(out), _read_nodes(out)
    assert _fields(edges.schema) == _fields(schema.EDGE_SCHEMA)
    assert _fields(nodes.schema) == _fields(schema.NODE_SCHEMA)
    assert edges.num_rows == result.edges == plan(small[1]).edges
    assert nodes.num_rows == result.nodes == small[1].total_neurons
    for f in (out / schema.EDGES_DIR).rglob("*.parquet"):
        assert _fields(pq.read_schema(f)) == _fields(schema.EDGE_SCHEMA)


def test_node_ids_dense_and_unique(extracted, small):
    out, _ = extracted
    ids = np.sort(_read_nodes(out).column(schema.ID).to_numpy())
    assert np.array_equal(ids, np.arange(small[1].total_neurons))
    edges = _read_edges(out)
    src, tgt = edges.column(schema.SOURCE).to_numpy(), edges.column(schema.TARGET).to_numpy()
    assert src.min() >= 0 and tgt.max() < small[1].total_neurons
    pairs = src * small[1].total_neurons + tgt
    assert len(np.unique(pairs)) == len(pairs)  # no duplicate edges across chunks and tasks


def test_node_columns_for_conv_and_dense(extracted, small):
    out, _ = extracted
    model, graph = small
    nodes = _read_nodes(out).to_pandas().set_index(schema.ID).sort_index()

    conv = graph.layer("conv").output
    rows = nodes.loc[conv.offset : conv.offset + conv.size - 1]
    assert len(rows) == conv.size and set(rows[schema.LAYER]) == {"conv"}
    assert set(rows[schema.LAYER_TYPE]) == {"Conv2D"} and set(rows[schema.ACTIVATION]) == {"relu"}
    h, w, c = np.unravel_index(np.arange(conv.size), conv.shape)
    assert (rows[schema.D] == -1).all()
    assert np.array_equal(rows[schema.H], h) and np.array_equal(rows[schema.W], w)
    assert np.array_equal(rows[schema.C], c)
    conv_bias = model.get_layer("conv").get_weights()[1]
    assert np.array_equal(rows[schema.BIAS].to_numpy(), conv_bias[c].astype(np.float32))
    assert (conv_bias != 0).all()

    fc = graph.layer("fc").output
    rows = nodes.loc[fc.offset : fc.offset + fc.size - 1]
    assert set(rows[schema.ACTIVATION]) == {"softmax"} and set(rows[schema.LAYER_TYPE]) == {"Dense"}
    for col in (schema.D, schema.H, schema.W):
        assert (rows[col] == -1).all()
    assert list(rows[schema.C]) == [0, 1, 2, 3]
    assert np.array_equal(rows[schema.BIAS].to_numpy(), model.get_layer("fc").get_weights()[1])

    inp = nodes.loc[0 : 6 * 5 * 2 - 1]
    assert set(inp[schema.LAYER_TYPE]) == {"InputLayer"} and (inp[schema.BIAS] == 0).all()
    assert set(inp[schema.ACTIVATION]) == {"linear"}
    pool = graph.layer("pool").output
    assert pool.offset == conv.offset + conv.size and fc.offset == pool.offset + pool.size
    assert "flat" not in set(nodes[schema.LAYER])


def test_manifest_fields(extracted, small):
    out, result = extracted
    graph = small[1]
    manifest = read_manifest(out)
    key = ("name", "type", "nodes", "edges", "edge_checksum", "node_checksum", "node_files", "edge_files")
    assert [[e[k] for k in key] for e in manifest["layers"]] == [[e[k] for k in key] for e in result.manifest["layers"]]
    assert manifest["model"]["name"] == graph.name and manifest["options"] == {"layers": None}
    assert manifest["format"] == schema.FORMAT and manifest["complete"] is True
    the_plan = plan(graph)
    assert manifest["nodes"] == the_plan.nodes and manifest["edges"] == the_plan.edges
    assert [e["name"] for e in manifest["layers"]] == [s.name for s in graph.layers]
    table = _read_edges(out)
    for entry in manifest["layers"]:
        lp = the_plan.layer(entry["name"])
        assert (entry["nodes"], entry["edges"]) == (lp.nodes, lp.edges), entry["name"]
        assert entry["boundary"] is False
        spec = graph.layer(entry["name"])
        assert entry["id_start"] == spec.output.offset
        assert entry["id_stop"] - entry["id_start"] == spec.output.size
        for rel in entry["node_files"] + entry["edge_files"]:
            assert (out / rel).is_file(), rel
        # The recorded checksum is the checksum of what is in the files.
        chk = 0
        n = 0
        for rel in entry["edge_files"]:
            t = pq.read_table(out / rel)
            kinds = t.column(schema.KIND).to_pylist()
            n += t.num_rows
            for kind in set(kinds):
                sel = np.array(kinds) == kind
                chk += edge_checksum(t.column(schema.SOURCE).to_numpy()[sel], t.column(schema.TARGET).to_numpy()[sel],
                                     t.column(schema.WEIGHT).to_numpy()[sel], kind)
        assert n == entry["edges"]
        assert f"{chk % (1 << 64):016x}" == entry["edge_checksum"]
    by = {e["name"]: e for e in manifest["layers"]}
    assert by["flat"]["nodes"] == 0 and by["flat"]["edges"] == 0 and by["flat"]["node_files"] == []
    assert len(by["conv"]["edge_files"]) > 1  # task_size=40 split it
    assert table.num_rows == sum(e["edges"] for e in manifest["layers"])
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*.parquet")}
    listed = {f for e in manifest["layers"] for f in e["node_files"] + e["edge_files"]}
    assert on_disk == listed
    assert not (out / ".partial").exists() and not list(out.rglob("*.tmp"))


def test_extracted_folder_replays(extracted, small):
    result = verify(small[0], small[1], folder=extracted[0], samples=2)
    assert result.ok and result.worst < 1e-4 and set(result.errors) == {"conv", "pool", "fc"}


def test_interrupted_run_leaves_no_manifest_and_rerun_replaces_it(small, tmp_path, extracted):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        extract(small[1], out, task_size=40, progress=FailAfter(3))
    assert not (out / schema.MANIFEST).exists()
    assert (out / ".partial").exists()
    assert list((out / schema.EDGES_DIR).rglob("*.parquet"))  # some work was written
    with pytest.raises(OutputError, match="not a complete extraction"):
        read_manifest(out)
    # A rerun into the same folder is allowed (it is ours), replaces everything and completes.
    result = extract(small[1], out, task_size=1000)
    manifest = read_manifest(out)
    assert manifest["edges"] == result.edges == plan(small[1]).edges
    assert not (out / ".partial").exists()
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*.parquet")}
    listed = {f for e in manifest["layers"] for f in e["node_files"] + e["edge_files"]}
    assert on_disk == listed
    assert _read_edges(out).num_rows == result.edges
    reference = {e["name"]: e["edge_checksum"] for e in read_manifest(extracted[0])["layers"]}
    assert {e["name"]: e["edge_checksum"] for e in manifest["layers"]} == reference


def test_interrupted_rerun_removes_stale_manifest(small, tmp_path):
    out = tmp_path / "out"
    extract(small[1], out)
    assert read_manifest(out)["complete"]
    with pytest.raises(KeyboardInterrupt):
        extract(small[1], out, task_size=40, progress=FailAfter(1))
    with pytest.raises(OutputError):
        read_manifest(out)


def test_corrupt_manifest_is_refused(small, tmp_path):
    out = tmp_path / "out"
    extract(small[1], out)
    (out / schema.MANIFEST).write_text('{"format": "cnngraph-extract/1"')
    with pytest.raises(OutputError, match="corrupt"):
        read_manifest(out)


def test_refuses_non_empty_foreign_folder(small, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(OutputError, match="not a cnngraph extraction folder"):
        extract(small[1], out)
    assert (out / "thesis.tex").read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_refuses_a_file_as_folder(small, tmp_path):
    out = tmp_path / "file"
    out.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        extract(small[1], out)


def test_empty_existing_folder_is_accepted(small, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert extract(small[1], out).edges == plan(small[1]).edges


def test_disk_space_refusal_names_the_plan(small, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10_000, 9_990, 10))
    the_plan = plan(small[1])
    out = tmp_path / "out"
    with pytest.raises(OutputError) as info:
        extract(small[1], out)
    text = str(info.value)
    assert f"{the_plan.nodes:,} nodes" in text and f"{the_plan.edges:,} edges" in text
    assert human_bytes(the_plan.bytes["parquet"]) in text and "10 B" in text
    assert not (out / schema.MANIFEST).exists()
    assert not list(out.rglob("*.parquet"))


def test_layer_range_slices_edges_and_flags_boundary(small, tmp_path):
    graph = small[1]
    out = tmp_path / "out"
    result = extract(graph, out, layers="pool:fc")
    manifest = read_manifest(out)
    by = {e["name"]: e for e in manifest["layers"]}
    assert set(by) == {"conv", "pool", "flat", "fc"}
    assert by["conv"]["boundary"] is True and by["conv"]["edges"] == 0 and by["conv"]["edge_files"] == []
    assert by["conv"]["nodes"] == graph.layer("conv").output.size
    assert not any(by[n]["boundary"] for n in ("pool", "flat", "fc"))
    full = plan(graph)
    assert result.edges == full.layer("pool").edges + full.layer("fc").edges
    edges = _read_edges(out)
    tgt = edges.column(schema.TARGET).to_numpy()
    pool, fc = graph.layer("pool").output, graph.layer("fc").output
    assert tgt.min() >= pool.offset and tgt.max() < fc.offset + fc.size
    assert set(edges.column(schema.KIND).to_pylist()) == {"max_pool", "dense"}
    layers_in_nodes = set(_read_nodes(out).column(schema.LAYER).to_pylist())
    assert layers_in_nodes == {"conv", "pool", "fc"}  # not the input layer


def test_layer_range_single_layer_by_index(small, tmp_path):
    graph = small[1]
    fc_index = graph.layer("fc").index
    result = extract(graph, tmp_path / "out", layers=f"{fc_index}:{fc_index}")
    by = {e["name"]: e for e in result.manifest["layers"]}
    assert set(by) == {"pool", "fc"}  # fc reads pool's neurons through the flatten alias
    assert by["pool"]["boundary"] and by["pool"]["edges"] == 0
    assert result.edges == plan(graph).layer("fc").edges == by["fc"]["edges"]
    assert _read_edges(tmp_path / "out").num_rows == result.edges


def test_two_workers_give_same_checksums(small, tmp_path):
    one = extract(small[1], tmp_path / "one", task_size=40, workers=1)
    two = extract(small[1], tmp_path / "two", task_size=40, workers=2)
    key = ("name", "nodes", "edges", "edge_checksum", "node_checksum", "edge_files")
    assert [[e[k] for k in key] for e in one.manifest["layers"]] == [[e[k] for k in key] for e in two.manifest["layers"]]
    assert len(two.manifest["layers"][1]["edge_files"]) > 1


@pytest.mark.parametrize("max_edges", [1, 7, 64, 10_000_000])
def test_checksums_independent_of_chunk_size(small, extracted, max_edges):
    result = extract(small[1], None, max_edges=max_edges)
    reference = read_manifest(extracted[0])
    key = ("name", "nodes", "edges", "edge_checksum", "node_checksum")
    assert [[e[k] for k in key] for e in result.manifest["layers"]] == [[e[k] for k in key] for e in reference["layers"]]
    assert result.edges == reference["edges"]


def test_checksums_detect_a_changed_weight(small, tmp_path):
    """The checksums are sensitive: a model differing in one kernel weight gets another checksum."""
    model, graph = small
    base = extract(graph, None).manifest
    changed = walk(model)
    changed.layer("conv").weights["kernel"] = changed.layer("conv").weights["kernel"].copy()
    changed.layer("conv").weights["kernel"][0, 0, 0, 0] += 1.0
    other = extract(changed, None).manifest
    b = {e["name"]: e["edge_checksum"] for e in base["layers"]}
    o = {e["name"]: e["edge_checksum"] for e in other["layers"]}
    assert b["conv"] != o["conv"] and b["fc"] == o["fc"]
