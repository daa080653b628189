"""The stage-folders layout: one folder-writing path for every granularity, the typed manifest and the
folder readers of pipeline.dataset, and the translators' own row and channel rules."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline import dataset, schema, storage
from pipeline.extract import extract
from pipeline.layers import registry
from pipeline.model import walk
from tests.helpers import keras, tiny_cnn

L = keras().layers


@pytest.fixture(scope="module")
def graph():
    return walk(tiny_cnn([L.Activation("tanh", name="act")]))


@pytest.mark.parametrize("granularity", ["channel", "layer"])
def test_coarse_extraction_to_a_url_writes_there_and_nothing_locally(graph, tmp_path, monkeypatch, granularity):
    import fsspec
    monkeypatch.chdir(tmp_path)
    url = f"memory://somewhere/{granularity}"
    res = extract(graph, url, granularity=granularity)
    fs = fsspec.filesystem("memory")
    root = f"/somewhere/{granularity}"
    manifest = json.loads(fs.cat(f"{root}/{schema.MANIFEST}"))
    assert manifest["granularity"] == granularity and manifest["edges"] == res.edges > 0
    assert fs.exists(f"{root}/{storage.OWNER_FILE}") and not fs.exists(f"{root}/.partial")
    for entry in manifest["layers"]:  # every file is listed with its sha256, as at neuron level
        assert len(entry["node_file_sha256"]) == len(entry["node_files"])
        assert len(entry["edge_file_sha256"]) == len(entry["edge_files"])
        for rel, digest in zip(entry["edge_files"], entry["edge_file_sha256"], strict=True):
            assert storage.sha256(storage.location(f"{url}/{rel}")) == digest
    assert list(tmp_path.iterdir()) == []  # no ./memory:/... folder
    fs.rm(root, recursive=True)


def test_coarse_folder_is_claimed_and_checked_like_a_neuron_one(graph, tmp_path):
    out = tmp_path / "ch"
    extract(graph, out, granularity="channel")
    assert storage.owner(out)["kind"] == "extraction"
    manifest = dataset.read_manifest(out)
    assert dataset.check_files(out, manifest) == len(dataset.listed_files(manifest)) > 0
    part = out / manifest["layers"][1]["edge_files"][0]
    part.write_bytes(part.read_bytes()[:-8])
    with pytest.raises(Exception, match="has changed since it was written"):
        dataset.check_files(out, manifest)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("mine")
    with pytest.raises(Exception, match="not a cnngraph extraction folder"):
        extract(graph, tmp_path / "foreign", granularity="layer")


def test_manifest_round_trips(graph, tmp_path):
    for granularity in schema.GRANULARITIES:
        out = tmp_path / granularity
        extract(graph, out, granularity=granularity)
        raw = dataset.read_manifest(out)
        typed = dataset.load_manifest(out)
        assert typed.to_json() == raw and typed.granularity == granularity
        assert dataset.Manifest.from_json(typed.to_json()) == typed
        assert typed.layer("fc").name == "fc"


def test_edge_batches_skip_row_groups_but_keep_every_wanted_edge(graph, tmp_path):
    out = tmp_path / "n"
    extract(graph, out, max_edges=16, task_size=40)  # many small row groups
    manifest = dataset.load_manifest(out)
    entry = manifest.layer("conv")
    every = np.concatenate([t.column(schema.TARGET).to_numpy() for t in dataset.edge_batches(out, entry)])
    wanted = np.unique(every)[:3]
    tables = list(dataset.edge_batches(out, entry, columns=[schema.TARGET], targets=wanted))
    got = np.concatenate([t.column(schema.TARGET).to_numpy() for t in tables])
    assert np.isin(every, wanted).sum() == np.isin(got, wanted).sum() > 0 and len(got) < len(every)
    assert all(t.column_names == [schema.TARGET] for t in tables)
    ids = np.array([entry.id_start + 1], np.int64)
    nodes = np.concatenate([t.column(schema.ID).to_numpy() for t in dataset.node_batches(out, entry, ids=ids)])
    assert ids[0] in nodes


@pytest.mark.parametrize("name", ["conv", "pool", "act", "fc"])
def test_rows_touched_covers_every_edge_of_the_wanted_ids(graph, name):
    spec = graph.layer(name)
    tr = registry.get(spec.type, spec.name)
    rows = tr.rows(spec)
    edges = [(lo, c) for lo in range(rows) for c in tr.edges(spec, lo, lo + 1, 1 << 20)]
    rng = np.random.default_rng(0)
    for side in ("targets", "sources"):
        pool = np.unique(np.concatenate([getattr(c, side[:-1]) for _, c in edges]))
        wanted = np.sort(rng.choice(pool, size=min(3, len(pool)), replace=False))
        runs = tr.rows_touched(spec, wanted if side == "targets" else None, wanted if side == "sources" else None)
        covered = {r for lo, hi in runs for r in range(lo, hi)}
        needed = {row for row, c in edges if np.isin(getattr(c, side[:-1]), wanted).any()}
        assert needed <= covered
        assert all(0 <= lo < hi <= rows for lo, hi in runs)
    assert tr.rows_touched(spec, None, None) == [(0, rows)]
