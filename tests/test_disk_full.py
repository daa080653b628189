"""A disk that fills up mid-job: a clear error that says what to do, nothing presented as complete,
and a rerun that works. The full disk is injected as the OSError the OS raises (ENOSPC) at the
lowest write each job does."""

from __future__ import annotations

import errno
from collections import namedtuple

import pytest

from pipeline import errors, schema, storage
from pipeline.export import write_graphml, write_parquet
from pipeline.extract import extract
from pipeline.extract import folder as extract_folder
from pipeline.model import walk
from pipeline.neo4j import bulk
from pipeline.sinks import graphml
from tests.helpers import keras, tiny_cnn

L = keras().layers


DiskUsage = namedtuple("DiskUsage", "total used free")


def _full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


class FullFile:
    def __init__(self, fh):
        self.fh = fh

    def write(self, data):
        _full()

    def close(self):
        self.fh.close()


@pytest.fixture(scope="module")
def graph():
    return walk(tiny_cnn())


def test_extraction(graph, tmp_path, monkeypatch):
    out = tmp_path / "ext"
    with monkeypatch.context() as m:
        m.setattr(extract_folder, "write_part", _full)
        with pytest.raises(errors.OutputError, match=r"filled up during the extraction.*marked incomplete.*run again"):
            extract(graph, out)
    assert not (out / schema.MANIFEST).exists() and (out / ".partial").exists()
    assert extract(graph, out).edges > 0 and (out / schema.MANIFEST).exists()


def test_export_graphml_and_parquet(graph, tmp_path, monkeypatch):
    path, folder = tmp_path / "g.graphml", tmp_path / "pq"
    with monkeypatch.context() as m:
        init = graphml.GraphMLWriter.__init__

        def full_file(self, *args, **kwargs):  # the real file, whose writes find the disk full
            init(self, *args, **kwargs)
            self._fh = FullFile(self._fh)

        m.setattr(graphml.GraphMLWriter, "__init__", full_file)
        with pytest.raises(errors.OutputError, match=r"filled up during the GraphML export.*no file was left"):
            write_graphml(graph, path)
    assert list(tmp_path.iterdir()) == []
    with monkeypatch.context() as m:
        m.setattr("pyarrow.parquet.ParquetWriter.write_table", _full)
        with pytest.raises(errors.OutputError, match=r"filled up during the Parquet export.*nothing new"):
            write_parquet(graph, folder)
    assert list(tmp_path.iterdir()) == []
    assert write_graphml(graph, path).edges == write_parquet(graph, folder).edges > 0


def test_import_files(graph, tmp_path, monkeypatch):
    ext, out = tmp_path / "ext", tmp_path / "imp"
    extract(graph, ext)
    with monkeypatch.context() as m:  # too little space: refused before anything is written
        m.setattr(storage.shutil, "disk_usage", lambda path: DiskUsage(10_000, 9_990, 10))
        with pytest.raises(errors.OutputError, match=r"import files need about .* only 10 B is free"):
            bulk.write_server_files(ext, out, "full")
    assert [p.name for p in out.iterdir()] == [storage.OWNER_FILE]  # only our claim on the folder
    with monkeypatch.context() as m:
        m.setattr(bulk, "_write_part", _full)
        with pytest.raises(errors.OutputError, match=r"filled up during writing import files.*no import.sh"):
            bulk.write_server_files(ext, out, "full")
    assert not (out / bulk.SCRIPT).exists()
    assert bulk.write_server_files(ext, out, "full").script.exists()
