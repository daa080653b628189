"""Nothing of the user's is ever lost: cnngraph reuses or removes only folders that carry its own
marker (or an older version's own manifest), never writes a file over another unless asked, never
over its source, and states an export's size before any work, refusing one over the limit before
anything is written."""

from __future__ import annotations

import hashlib
import json

import pytest
from click.testing import CliRunner

from pipeline import errors, export, schema, storage
from pipeline.cli import cli
from pipeline.extract import extract
from pipeline.model import walk
from pipeline.neo4j import bulk
from tests.helpers import keras, tiny_cnn

L = keras().layers


@pytest.fixture(scope="module")
def model():
    return tiny_cnn()


@pytest.fixture(scope="module")
def graph(model):
    return walk(model)


@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def folder(graph, tmp_path_factory):
    out = tmp_path_factory.mktemp("ext") / "ext"
    extract(graph, out)
    return out


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(root) -> dict[str, str]:
    """Every file below root with its content's sha256."""
    return {str(p.relative_to(root)): digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


def user_folder(tmp_path, name: str, files: dict[str, str]):
    root = tmp_path / name
    root.mkdir()
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


# -- folders named like ours are not ours ---------------------------------------------------------


@pytest.mark.parametrize("files", [
    {schema.MANIFEST: '{"my": "notes"}', "nodes/keep.txt": "mine", "edges/keep.txt": "mine"},
    {".partial": "my own partial file", "thesis.tex": "precious"},
    {storage.OWNER_FILE: '{"tool": "somebody-else"}', "thesis.tex": "precious"},
    {storage.OWNER_FILE: "not json at all", "thesis.tex": "precious"},
])
def test_extract_refuses_marker_named_user_files(graph, tmp_path, files):
    root = user_folder(tmp_path, "user", files)
    before = snapshot(root)
    with pytest.raises(errors.OutputError, match="is not a cnngraph extraction folder.*nothing in it was changed"):
        extract(graph, root)
    assert snapshot(root) == before


def test_extract_reuses_only_its_own_folders(graph, tmp_path):
    out = tmp_path / "ext"
    extract(graph, out)
    assert storage.owner(out)["kind"] == "extraction"
    (out / "my-notes.txt").write_text("mine")  # a user's file inside our folder stays
    assert extract(graph, out).edges > 0 and (out / "my-notes.txt").read_text() == "mine"
    # a folder written before the marker existed (our manifest, no marker) is still ours
    (out / storage.OWNER_FILE).unlink()
    assert extract(graph, out).edges > 0 and storage.owner(out)["kind"] == "extraction"
    # another kind of cnngraph folder is not an extraction folder
    other = tmp_path / "other"
    export.write_parquet(graph, other)
    with pytest.raises(errors.OutputError, match="not a cnngraph extraction folder"):
        extract(graph, other)


def test_import_files_refuse_a_users_import_sh(folder, tmp_path):
    root = user_folder(tmp_path, "user", {"import.sh": "#!/bin/sh\necho my own script\n", "data.csv": "1,2"})
    before = snapshot(root)
    with pytest.raises(errors.OutputError, match="is not a cnngraph import-files folder"):
        bulk.write_server_files(folder, root, "m")
    assert snapshot(root) == before
    ours = tmp_path / "imp"
    bulk.write_server_files(folder, ours, "m")
    assert bulk.write_server_files(folder, ours, "m").script.exists()  # a rerun replaces our own files


def test_parquet_export_refuses_a_users_folder_and_leaves_siblings(graph, tmp_path):
    root = user_folder(tmp_path, "user", {"selection.json": '{"chosen": 1}', "thesis.tex": "precious"})
    sibling = user_folder(tmp_path, "pq.tmp", {"keep.txt": "mine"})
    before, before_sibling = snapshot(root), snapshot(sibling)
    with pytest.raises(errors.OutputError, match="is not a cnngraph export folder"):
        export.write_parquet(graph, root)
    assert snapshot(root) == before
    out = tmp_path / "pq"
    first = export.write_parquet(graph, out)
    again = export.write_parquet(graph, out, layers="fc:fc")  # our own export is replaced
    assert first.edges > again.edges > 0
    assert json.loads((out / "selection.json").read_text())["edges"] == again.edges
    assert snapshot(sibling) == before_sibling
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pq", "pq.tmp", "user"]  # no temporary left


def test_refused_parquet_export_leaves_nothing(graph, tmp_path):
    with pytest.raises(export.ExportTooLarge):
        export.write_parquet(graph, tmp_path / "pq", limit=10)
    assert list(tmp_path.iterdir()) == []


# -- files: never over another file unless asked, never over the source -----------------------------


def test_graphml_never_overwrites_unless_asked(graph, tmp_path):
    path = tmp_path / "g.graphml"
    path.write_text("my own graph")
    (tmp_path / "g.graphml.tmp").write_text("mine too")
    with pytest.raises(errors.OutputError, match="already exists; it was left as it is.*--overwrite"):
        export.write_graphml(graph, path)
    assert path.read_text() == "my own graph"
    result = export.write_graphml(graph, path, overwrite=True)
    assert result.edges > 0 and path.read_text().startswith("<?xml")
    assert (tmp_path / "g.graphml.tmp").read_text() == "mine too"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.graphml", "g.graphml.tmp"]


def test_graphml_refuses_a_symlink(graph, tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("precious")
    link = tmp_path / "g.graphml"
    link.symlink_to(target)
    with pytest.raises(errors.OutputError, match="already exists"):
        export.write_graphml(graph, link, overwrite=True)
    assert target.read_text() == "precious"


def test_export_never_writes_over_its_source(model_file, folder, tmp_path):
    before = digest(model_file)
    res = CliRunner().invoke(cli, ["export", str(model_file), "--out", str(model_file), "--overwrite", "-s"])
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1] == (
        f"Error: {model_file} would write over the source {model_file.resolve()}; nothing was written; "
        "choose another --out")
    assert digest(model_file) == before
    manifest = folder / schema.MANIFEST
    before = digest(manifest)
    res = CliRunner().invoke(cli, ["export", str(folder), "--out", str(manifest), "--overwrite", "-s"])
    assert res.exit_code == 1 and "would write over the source" in res.output
    assert digest(manifest) == before
    res = CliRunner().invoke(cli, ["export", str(folder), "--out", str(folder), "--format", "parquet", "-s"])
    assert res.exit_code == 1 and "would write over the source" in res.output
    assert digest(manifest) == before


# -- size before work ----------------------------------------------------------------------------------


class Recorder:
    """A Progress that keeps what it was told, in order."""

    def __init__(self):
        self.events: list[tuple[str, object]] = []

    def start(self, total, unit, desc):
        self.events.append(("start", desc))

    def advance(self, n):
        pass

    def finish(self):
        pass

    def message(self, text):
        self.events.append(("message", text))


def test_filtered_export_over_the_limit_refused_before_writing(graph, tmp_path, monkeypatch):
    from pipeline.sinks import graphml

    opened = []

    init = graphml.GraphMLWriter.__init__

    def spy(self, *args, **kwargs):
        opened.append(args)
        init(self, *args, **kwargs)

    monkeypatch.setattr(graphml.GraphMLWriter, "__init__", spy)
    rec = Recorder()
    with pytest.raises(export.ExportTooLarge, match="more than 50 edges"):
        export.write_graphml(graph, tmp_path / "g.graphml", min_abs_weight=0.01, limit=50, progress=rec)
    assert opened == [] and list(tmp_path.iterdir()) == []  # counted first, nothing written
    assert ("start", "size graphml (at most)") in rec.events
    # under the limit: the exact count is said before the work starts
    rec = Recorder()
    res = export.write_graphml(graph, tmp_path / "g.graphml", min_abs_weight=0.01, limit=10_000, progress=rec)
    assert rec.events[0] == ("message", f"exporting at most {graph_edges(graph):,} edges (about "
                             f"{export.human_bytes(graph_edges(graph) * export.BYTES_PER_EDGE['graphml'])} as graphml)")
    assert res.edges > 0


def graph_edges(graph) -> int:
    from pipeline.plan import plan

    return plan(graph).edges


def test_cone_size_is_said_before_the_work(graph):
    rec = Recorder()
    G = export.to_networkx(graph, upstream_of="fc:1", depth=2, progress=rec)
    said = [text for kind, text in rec.events if kind == "message"]
    assert said and said[0].startswith("exporting at most ") and G.number_of_edges() > 0


# -- one error line for what users meet ------------------------------------------------------------------


def test_damaged_folder_is_named_and_no_check_reaches_the_parquet_error(graph, tmp_path):
    out = tmp_path / "ext"
    extract(graph, out)
    part = next((out / schema.EDGES_DIR).rglob("*.parquet"))
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    res = CliRunner().invoke(cli, ["export", str(out), "--out", str(tmp_path / "g.graphml"), "-s"])
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1] == (
        f"Error: {part} has changed since it was written (sha256 differs from the manifest): the extraction "
        f"folder {out} is damaged; rerun `cnngraph extract` into it (--no-check skips this check)")
    res = CliRunner().invoke(cli, ["export", str(out), "--out", str(tmp_path / "g.graphml"), "--no-check", "-s"])
    assert res.exit_code == 1
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("Error: a Parquet file could not be read or written (Arrow") and "rerun `cnngraph extract`" in last
    part.unlink()
    res = CliRunner().invoke(cli, ["export", str(out), "--out", str(tmp_path / "g.graphml"), "-s"])
    assert res.output.strip().splitlines()[-1].startswith(f"Error: {part} is missing: the extraction folder")
    assert not (tmp_path / "g.graphml").exists()


def test_os_errors_are_one_line_and_debug_shows_the_traceback(model_file, folder, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    args = ["export", str(folder), "--out", str(blocker / "g.graphml"), "-s"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1] == (
        f"Error: cannot write {blocker / 'g.graphml'}: folder {blocker} does not exist")
    res = CliRunner().invoke(cli, ["--debug", *args])
    assert isinstance(res.exception, errors.OutputError)  # raised, not printed
    res = CliRunner().invoke(cli, ["extract", str(model_file), "--out", str(blocker / "ext"), "-s"])
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1] == (
        f"Error: cannot write to {blocker / 'ext'}: Not a directory; choose another --out")


def test_cone_seed_of_the_wrong_rank(graph):
    with pytest.raises(errors.UsageError) as err:
        export.to_networkx(graph, upstream_of="conv:0,0")
    assert str(err.value) == ("position 0,0 has 2 coordinates but layer conv of shape (6, 5, 3) has 3 axes; "
                              "give h,w,c or one unit number")


def test_folder_files_are_checked_layer_by_layer_as_read(graph, tmp_path):
    """A damaged file is named before it is read, and only the layers an export reads are hashed."""
    out = tmp_path / "ext"
    extract(graph, out)
    conv = next(e for e in json.loads((out / schema.MANIFEST).read_text())["layers"] if e["name"] == "conv")
    part = out / conv["edge_files"][0]
    part.write_bytes(part.read_bytes()[:-8])
    assert export.to_networkx(out, layers="fc:fc").number_of_edges() > 0  # conv's edges are not read
    with pytest.raises(errors.OutputError, match=f"{part} has changed since it was written"):
        export.to_networkx(out)


@pytest.mark.parametrize("action", ["install", "start"])
def test_managed_server_refuses_a_home_that_is_not_ours(tmp_path, action):
    """CNNGRAPH_HOME pointed at a real Neo4j installation: nothing in it is touched."""
    from pipeline.neo4j.server import ManagedServer

    home = user_folder(tmp_path, "neo4j", {"lib/neo4j-kernel.jar": "jar", "data/databases/neo4j/store": "db",
                                           "conf/neo4j.conf": "mine"})
    before = snapshot(home)
    with pytest.raises(errors.Neo4jError, match="is not a cnngraph managed Neo4j home.*nothing in it was changed"):
        getattr(ManagedServer(home, port=9), action)()
    assert snapshot(home) == before and oct(home.stat().st_mode & 0o777) != "0o700"
