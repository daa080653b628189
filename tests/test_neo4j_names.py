"""Any layer name Keras allows (commas, quotes, line breaks) loads by bulk, online and import
files, and comes back unchanged; model names and labels must match the name pattern in full."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline import errors, schema
from pipeline.neo4j import bulk, db, loader
from pipeline.neo4j.server import driver
from tests.neo4j_plugin import run_import_script
from tests.test_neo4j_load import MANAGED, assert_round_trip, duplicate_relationships

#: Layer names with the importer's delimiter, its quote, line breaks and shell metacharacters;
#: the ReLU's activation name (relu(max_value=6,...)) has commas too.
NAMES = ['conv,a "b"', "relu\r\n6", "fl\nat", "fc\nnew,'x' $(echo hi) `x` \\"]


def extract_names(out: Path) -> Path:
    from pipeline.extract import extract
    from pipeline.model import walk
    from tests.helpers import keras, sequential

    conv, relu, flat, fc = NAMES
    k = keras()
    model = sequential((5, 5, 2), [
        k.layers.Conv2D(2, 3, name=conv),
        k.layers.ReLU(max_value=6, negative_slope=0.1, name=relu),
        k.layers.Flatten(name=flat),
        k.layers.Dense(3, activation="softmax", name=fc),
    ], seed=4)
    assert [la.name for la in model.layers] == NAMES  # Keras takes them as they are
    extract(walk(model), out)
    return out


@pytest.fixture(scope="module")
def names_dir(tmp_path_factory) -> Path:
    return extract_names(tmp_path_factory.mktemp("ext") / "names")


def assert_names(drv, dir: Path, model: str) -> None:
    """The round trip, and every ``:Layer {name}`` equals the Keras layer's name."""
    assert_round_trip(drv, dir, model)
    assert duplicate_relationships(drv, model) == 0
    records, _, _ = drv.execute_query("MATCH (l:Layer {model: $m}) RETURN l.name AS name ORDER BY l.index",
                                      m=model)
    assert [r["name"] for r in records][1:] == NAMES
    manifest = json.loads((dir / schema.MANIFEST).read_text())
    assert db.verify_counts(drv, manifest, model)


def test_csv_quoting_is_decided_per_part():
    plain = pa.table({"layer": pa.array(["conv"] * 3).dictionary_encode(), "x": [1, 2, 3],
                      "kernel:float[]": ["1;2", "3;4", "5;6"]})
    assert bulk.csv_quoting(plain) == (False, False)
    for name, want in (('conv,a "b"', (True, False)), ("a\nb", (True, True)), ("a\rb", (True, True)),
                       ('q"', (True, False)), ("x y;z'", (False, False))):
        table = pa.table({"layer": pa.array([name]).dictionary_encode(), "config:string": ["{}"]})
        assert bulk.csv_quoting(table) == want, name
    assert bulk.csv_quoting(pa.table({"config:string": ['{"a": 1}']})) == (True, False)


@pytest.mark.parametrize("input_type", ["csv", "csv.gz", "parquet"])
def test_import_arguments_name_the_multiline_parts(names_dir, tmp_path, input_type):
    manifest = loader.read_manifest(names_dir)
    args = bulk.write_import_files(names_dir, manifest, "names", tmp_path / "imp", input_type)
    multiline = [a for a in args if a.startswith("--multiline-fields=")]
    if input_type == "parquet":
        assert not multiline
    else:  # only the two node groups whose layer names have line breaks
        (arg,) = multiline
        assert sorted(p.split("/")[-2] for p in arg.split("=", 1)[1].split(",")) == ["nodes-0002", "nodes-0004"]


def test_csv_gz_parts_are_the_csv_parts_compressed(names_dir, tmp_path):
    """So neo4j-admin reads the same text from either: the names reach it as csv.gz in
    test_import_script_names, and the loader's own bulk path runs csv in test_neo4j_load."""
    manifest = loader.read_manifest(names_dir)
    plain = bulk.write_import_files(names_dir, manifest, "names", tmp_path / "csv", "csv")
    packed = bulk.write_import_files(names_dir, manifest, "names", tmp_path / "gz", "csv.gz")
    unzipped = [a.replace(str(tmp_path / "gz"), "").replace("\\.gz", "").replace(".gz", "") for a in packed]
    assert unzipped == [a.replace(str(tmp_path / "csv"), "") for a in plain]  # the same groups and options
    parts = sorted(p.relative_to(tmp_path / "csv") for p in (tmp_path / "csv").rglob("*.csv"))
    assert len(parts) > 8 and any(b"\n6" in (tmp_path / "csv" / p).read_bytes() for p in parts)
    for part in parts:
        text = (tmp_path / "csv" / part).read_bytes()
        if part.name.startswith("header"):  # headers stay plain
            assert (tmp_path / "gz" / part).read_bytes() == text
        else:
            assert gzip.decompress((tmp_path / "gz" / part).with_suffix(".csv.gz").read_bytes()) == text, part
    assert len(list((tmp_path / "gz").rglob("*.csv*"))) == len(parts)


# Each bulk load restarts the server (seconds). Parquet runs here; csv and csv.gz write the same
# text (test above), which neo4j-admin imports in test_import_script_names: their runs are slow-only.
@pytest.mark.parametrize("input_type", [pytest.param("csv", marks=pytest.mark.slow),
                                        pytest.param("csv.gz", marks=pytest.mark.slow), "parquet"])
def test_bulk_names(neo4j_conn, names_dir, input_type):
    if not MANAGED:
        return  # bulk needs the managed server; the online test covers the rest
    loader.load(names_dir, "bulk", "names", replace=True, conn=neo4j_conn, input_type=input_type)
    with driver(neo4j_conn) as drv:
        assert_names(drv, names_dir, "names")


def test_online_names(neo4j_conn, neo4j_driver, names_dir):
    loader.load(names_dir, "online", "nameso", replace=True, conn=neo4j_conn, batch_size=7)
    assert_names(neo4j_driver, names_dir, "nameso")
    assert loader.load(names_dir, "online", "nameso", conn=neo4j_conn).skipped
    loader.drop(neo4j_conn, "nameso")
    assert not db.layer_counts(neo4j_driver, "nameso")


def test_import_script_names(neo4j_conn, names_dir, tmp_path):
    """import.sh in a folder whose path has spaces, quotes and a '$' runs with sh and imports the
    names; a folder with ',' is refused (neo4j-admin separates files with it)."""
    with pytest.raises(errors.UsageError, match="','"):
        bulk.write_server_files(names_dir, tmp_path / "a,b", "namesf")
    assert not (tmp_path / "a,b").exists()
    files = bulk.write_server_files(names_dir, tmp_path / "it's a \"$HOME\" dir", "namesf", "csv.gz")
    text = files.script.read_text()
    assert "--multiline-fields-format=v2" in text and '"$D"/' in text
    (multiline,) = [line for line in text.splitlines() if "--multiline-fields=" in line]
    assert "nodes-0002" in multiline and "nodes-0004" in multiline and r"part-.*\.csv\.gz" in multiline
    assert bulk.import_options("csv.gz")[0] in text  # the loader's own options for the file type
    dry = subprocess.run(["sh", "-n", str(files.script)], capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    if not MANAGED:
        return
    run_import_script(files.script, tmp_path)
    bulk.after_import(names_dir, "namesf", conn=neo4j_conn)
    with driver(neo4j_conn) as drv:
        assert_names(drv, names_dir, "namesf")


@pytest.mark.parametrize("name", ["abc\n", "abc\r\n", "a" * 64 + "\n", "\nabc"])
def test_names_match_in_full(name):
    with pytest.raises(errors.UsageError, match="invalid model name"):
        db.validate_name(name)
    with pytest.raises(errors.UsageError, match="invalid layer type label"):
        db.neuron_labels(name)
    assert db.validate_name(name.strip()[:64]) == name.strip()[:64]
