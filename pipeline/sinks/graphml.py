"""A streaming GraphML writer that renders column arrays with numpy, never a Python loop per edge.

Lines are built in bulk: rows of a chunk are grouped by the text width of every variable field
(digits of each id, length of each formatted float or string), so inside a group every line has
the same layout and is one row of a ``uint8`` matrix filled column block by column block (integers
through 4-digit lookup tables, floats and strings through small tables of their distinct values).
Each matrix is written as it is; edge order is not meaningful in GraphML.

Floats are written in the shortest form that reads back to the same float32 (Arrow's formatter,
double-conversion ``ToShortestSingle``), so ``float(text)`` cast to float32 is bit-exact. Float
columns (``weight``, and the export's optional ``abs_weight``) get ``attr.type="double"`` keys,
which NetworkX and igraph read as Python floats.

The file is written once, in order, to a fresh temporary name beside ``PATH`` and renamed to
``PATH`` when complete (never over an existing file unless asked): the header and keys, the edges
as they stream in, then the nodes (their set is known only after the edges), then the footer. GraphML allows nodes and edges in any order inside ``<graph>``;
``networkx.read_graphml`` and ``igraph.Graph.Read_GraphML`` read nodes that follow their edges
(tested).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import storage
from pipeline.errors import OutputError, is_disk_full

HEADER = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<graphml xmlns="http://graphml.graphdrawing.org/xmlns" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xsi:schemaLocation="http://graphml.graphdrawing.org/xmlns '
    'http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd">\n'
)
#: Rows rendered per numpy pass (bounds the text matrix to ~16 MB).
RENDER_ROWS = 131_072


def graphml_type(dtype: pa.DataType) -> str:
    """The GraphML ``attr.type`` of an Arrow type."""
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_integer(dtype):
        return "long"
    if pa.types.is_floating(dtype):
        return "double"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "string"
    raise OutputError(f"GraphML cannot hold a column of type {dtype}")


#: Characters XML 1.0 cannot hold at all, even as references (C0 controls but tab, newline and
#: carriage return; U+FFFE, U+FFFF).
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def escape(text: str) -> str:
    """``text`` as XML character data; tab, newline and CR as references so they read back as is.

    Raises OutputError for characters no XML 1.0 document can hold (a layer named with a control
    character): GraphML cannot carry them; Parquet can.
    """
    bad = _ILLEGAL_XML.search(text)
    if bad:
        raise OutputError(f"{text!r} holds the control character U+{ord(bad.group()):04X}, which GraphML "
                          "(XML 1.0) cannot hold; rename it in the model or export with --format parquet")
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
        .replace("\t", "&#9;").replace("\n", "&#10;").replace("\r", "&#13;")
    )


# ---------------------------------------------------------------------------------------------
# Text parts: a line is a sequence of constants and columns


def _digit_table(k: int) -> np.ndarray:
    return np.frombuffer(
        "".join(f"{i:0{k}d}" for i in range(10**k)).encode(), np.uint8
    ).reshape(10**k, k)


_TABLES = {k: _digit_table(k) for k in range(1, 5)}
_POW10 = 10 ** np.arange(19, dtype=np.int64)


class Const:
    def __init__(self, text: bytes):
        self.text = np.frombuffer(text, np.uint8)


class Ints:
    """An int64 column, rendered in decimal."""

    def __init__(self, values: np.ndarray):
        self.values = np.asarray(values, dtype=np.int64)

    def keys(self) -> np.ndarray:
        a = np.abs(self.values)
        digits = np.maximum(np.searchsorted(_POW10, a, side="right"), 1)
        return digits * 2 + (self.values < 0)

    @staticmethod
    def width(key: int) -> int:
        return key // 2 + key % 2

    def fill(self, out: np.ndarray, rows: np.ndarray, key: int) -> None:
        digits, neg = key // 2, key % 2
        a = self.values[rows]
        if neg:
            out[:, 0] = ord("-")
            a = -a
        if digits <= 9:
            a = a.astype(np.uint32)  # faster division
        end = out.shape[1]
        while digits > 0:
            k = min(4, digits)
            unit = a.dtype.type(10**k)
            out[:, end - k : end] = np.take(_TABLES[k], a % unit, axis=0)
            a = a // unit
            end -= k
            digits -= k


class Texts:
    """Strings from a table of distinct values (``table[index[row]]``), already escaped."""

    def __init__(self, values: Sequence[bytes] | np.ndarray, index: np.ndarray):
        lens = np.array([len(v) for v in values], dtype=np.int64)
        mat = np.zeros((len(values), max(1, int(lens.max(initial=0)))), np.uint8)
        for i, v in enumerate(values):  # one per distinct value
            mat[i, : len(v)] = np.frombuffer(v, np.uint8)
        self.mat, self.lens, self.index = mat, lens, np.asarray(index)

    @classmethod
    def from_matrix(cls, mat: np.ndarray, lens: np.ndarray, index: np.ndarray) -> Texts:
        self = cls.__new__(cls)
        self.mat, self.lens, self.index = mat, lens, np.asarray(index)
        return self

    def keys(self) -> np.ndarray:
        return self.lens[self.index]

    @staticmethod
    def width(key: int) -> int:
        return key

    def fill(self, out: np.ndarray, rows: np.ndarray, key: int) -> None:
        out[:, :] = np.take(self.mat, self.index[rows], axis=0)[:, :key]


def _arrow_strings(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A NUL-padded byte matrix and the lengths of an Arrow string array (no Python per value)."""
    arr = pa.concat_arrays(arr.chunks) if isinstance(arr, pa.ChunkedArray) else arr
    bufs = arr.buffers()
    off = np.frombuffer(bufs[1], np.int32, len(arr) + 1, arr.offset * 4).astype(np.int64)
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(1, np.uint8)
    lens = np.diff(off)
    width = max(1, int(lens.max(initial=0)))
    mat = np.zeros((len(arr), width), np.uint8)
    starts = off[:-1]
    for j in range(width):  # width is ~10: one pass per character position
        ok = lens > j
        mat[ok, j] = data[starts[ok] + j]
    return mat, lens


def floats(values: np.ndarray) -> Texts:
    """Float32 values as shortest round-trip text, formatting each distinct run or value once."""
    values = np.asarray(values, dtype=np.float32)
    n = len(values)
    if n == 0:
        return Texts.from_matrix(np.zeros((0, 1), np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64))
    change = np.empty(n, bool)
    change[0] = True
    np.not_equal(values[1:].view(np.uint32), values[:-1].view(np.uint32), out=change[1:])
    runs = int(change.sum())
    if runs <= n // 4:
        uniq, index = values[change], np.cumsum(change) - 1
    elif n > 4 * 65536:
        uniq, index = values, np.arange(n)
    else:
        bits, index = np.unique(values.view(np.uint32), return_inverse=True)
        uniq = bits.view(np.float32)
    mat, lens = _arrow_strings(pc.cast(pa.array(uniq, pa.float32()), pa.string()))
    return Texts.from_matrix(mat, lens, index)


def strings(arr: pa.Array | pa.ChunkedArray) -> Texts | Const:
    """A string or dictionary column (escaped); a Const when it holds one value."""
    if isinstance(arr, pa.ChunkedArray):
        arr = pa.concat_arrays(arr.chunks) if arr.num_chunks != 1 else arr.chunk(0)
    if not pa.types.is_dictionary(arr.type):
        arr = pc.dictionary_encode(arr)
    index = arr.indices.to_numpy(zero_copy_only=False)
    values = [escape(v).encode() for v in arr.dictionary.to_pylist()]
    used = np.unique(index)
    if len(used) == 1:
        return Const(values[int(used[0])])
    return Texts(values, index)


def render(parts: list, n: int) -> list[np.ndarray]:
    """Render n lines made of parts; returns uint8 matrices whose rows are complete lines."""
    merged: list = []
    for p in parts:  # merge adjacent constants
        if isinstance(p, Const) and merged and isinstance(merged[-1], Const):
            merged[-1] = Const(merged[-1].text.tobytes() + p.text.tobytes())
        else:
            merged.append(p)
    var = [p for p in merged if not isinstance(p, Const)]
    if n == 0:
        return []
    if not var:
        line = np.concatenate([p.text for p in merged])
        return [np.broadcast_to(line, (n, len(line))).copy()]
    keys = [p.keys() for p in var]
    lows = [int(k.min()) for k in keys]
    spans = [int(k.max()) - lo + 1 for k, lo in zip(keys, lows, strict=True)]
    code = np.zeros(n, np.int64)
    for k, lo, span in zip(keys, lows, spans, strict=True):
        code = code * span + (k - lo)
    if int(np.prod(spans, dtype=np.float64)) < 65536:
        code = code.astype(np.uint16)  # radix sort
    order = np.argsort(code, kind="stable")
    sorted_code = code[order]
    bounds = np.flatnonzero(np.diff(sorted_code)) + 1
    out = []
    for rows in np.split(order, bounds):
        first = int(rows[0])
        group_keys = [int(k[first]) for k in keys]
        widths = [p.width(gk) for p, gk in zip(var, group_keys, strict=True)]
        width = sum(len(p.text) for p in merged if isinstance(p, Const)) + sum(widths)
        mat = np.empty((len(rows), width), np.uint8)
        c, v = 0, 0
        for p in merged:
            if isinstance(p, Const):
                mat[:, c : c + len(p.text)] = p.text
                c += len(p.text)
            else:
                p.fill(mat[:, c : c + widths[v]], rows, group_keys[v])
                c += widths[v]
                v += 1
        out.append(mat)
    return out


# ---------------------------------------------------------------------------------------------
# The writer


class GraphMLWriter:
    """Write a directed GraphML file from column chunks: ``edges(...)`` any number of times,
    then ``close(node_tables)``; ``abort()`` (or an exception inside ``with``) leaves nothing.

    ``node_attrs`` and ``edge_attrs`` are ``(name, arrow type)`` pairs: typed ``<key>`` elements
    (``long``, ``double``, ``string``) are declared for them, in that order.
    """

    def __init__(self, path: str | Path, node_attrs: list[tuple[str, pa.DataType]],
                 edge_attrs: list[tuple[str, pa.DataType]], overwrite: bool = False):
        self.path = Path(path)
        self.overwrite = overwrite
        check_target(self.path, overwrite)
        self.node_keys = {name: f"d{i}" for i, (name, _) in enumerate(node_attrs)}
        self.edge_keys = {name: f"d{i + len(node_attrs)}" for i, (name, _) in enumerate(edge_attrs)}
        self.keys = [("node", n, t, self.node_keys[n]) for n, t in node_attrs] + [
            ("edge", n, t, self.edge_keys[n]) for n, t in edge_attrs
        ]
        self.edge_count = 0
        self.node_count = 0
        self.bytes = 0
        head = [HEADER] + [
            f'<key id="{kid}" for="{for_}" attr.name="{escape(name)}" attr.type="{graphml_type(t)}"/>\n'
            for for_, name, t, kid in self.keys
        ] + ['<graph id="G" edgedefault="directed">\n']
        try:  # a fresh name of our own beside the target (never through a symlink)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        except OSError as err:
            raise OutputError(f"cannot write {self.path}: {err.strerror or err}") from err
        self.tmp = Path(tmp)
        os.fchmod(fd, 0o666 & ~storage.umask())  # mkstemp makes 0600; the result is an ordinary file
        self._fh = os.fdopen(fd, "wb", buffering=1 << 22)
        self._write([np.frombuffer("".join(head).encode(), np.uint8)])

    def __enter__(self) -> GraphMLWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def _write(self, mats: list[np.ndarray]) -> None:
        try:
            for m in mats:
                self._fh.write(m)
                self.bytes += m.nbytes
        except OSError as err:
            self._failed(err)

    def _failed(self, err: OSError) -> NoReturn:
        """Remove the partial file; a full disk goes up as is (pipeline.errors.disk_full_as says
        what to do), any other write error as an OutputError."""
        self.abort()
        if is_disk_full(err):
            raise err
        raise OutputError(f"cannot write {self.path}: {err}") from err

    def edges(self, source: np.ndarray, target: np.ndarray, attrs: dict[str, np.ndarray | pa.Array]) -> None:
        """Append edges; attrs maps each edge attribute name to a column (float32 or strings)."""
        n = len(source)
        for lo in range(0, n, RENDER_ROWS):
            hi = min(n, lo + RENDER_ROWS)
            parts: list = [Const(b'<edge source="'), Ints(source[lo:hi]), Const(b'" target="'),
                           Ints(target[lo:hi]), Const(b'">')]
            for name, col in attrs.items():
                parts += [Const(f'<data key="{self.edge_keys[name]}">'.encode()),
                          _column(col[lo:hi]), Const(b"</data>")]
            parts.append(Const(b"</edge>\n"))
            self._write(render(parts, hi - lo))
        self.edge_count += n

    def _nodes(self, table: pa.Table) -> None:
        ids = table.column(0).to_numpy()
        for lo in range(0, len(ids), RENDER_ROWS):
            part = table.slice(lo, RENDER_ROWS)
            parts: list = [Const(b'<node id="'), Ints(ids[lo : lo + RENDER_ROWS]), Const(b'">')]
            for name in self.node_keys:
                parts += [Const(f'<data key="{self.node_keys[name]}">'.encode()),
                          _column(part.column(name)), Const(b"</data>")]
            parts.append(Const(b"</node>\n"))
            self._write(render(parts, part.num_rows))
        self.node_count += len(ids)

    def close(self, node_tables) -> Path:
        """Write the nodes (tables whose first column is the node id) and the footer, and rename
        the finished file to its final name."""
        try:
            for table in node_tables:
                self._nodes(table)
            self._write([np.frombuffer(b"</graph>\n</graphml>\n", np.uint8)])
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            if self.overwrite:
                check_target(self.path, True)
                os.replace(self.tmp, self.path)
            else:  # a hard link never replaces a file that appeared meanwhile
                try:
                    os.link(self.tmp, self.path)
                except FileExistsError:
                    raise OutputError(f"{self.path} appeared while the export ran; it was left as it is "
                                      "(pass --overwrite to replace it)") from None
                except OSError:  # a filesystem without hard links
                    check_target(self.path, False)
                    os.replace(self.tmp, self.path)
                else:
                    self.tmp.unlink()
        except OSError as err:
            self._failed(err)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Remove the partial file (the final name is never created)."""
        try:
            self._fh.close()
        except OSError:
            pass
        self.tmp.unlink(missing_ok=True)


def check_target(path: Path, overwrite: bool) -> None:
    """Refuse a GraphML target that is a folder, a missing folder's file, or (unless
    ``overwrite``) any existing file or link."""
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name for the GraphML output")
    if not path.parent.is_dir():
        raise OutputError(f"cannot write {path}: folder {path.parent} does not exist")
    if path.is_symlink() or (path.exists() and not overwrite):
        raise OutputError(f"{path} already exists; it was left as it is (pass --overwrite to replace it, "
                          "or choose another --out)")


def graphml_value_type(dtype: pa.DataType) -> pa.DataType:
    """The type a column is written as: lists become text (GraphML has no list type)."""
    return pa.string() if pa.types.is_list(dtype) else dtype


def graphml_value(col: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A list column as JSON text (``[0.25, -1.5]``; float32 values in their shortest exact
    form); other columns unchanged."""
    if not pa.types.is_list(col.type):
        return col
    inner = pc.binary_join(col.cast(pa.list_(pa.string())), ", ")
    return pc.binary_join_element_wise("[", inner, "]", "")


def graphml_values(table: pa.Table) -> pa.Table:
    """``table`` with its list columns as JSON text (see :func:`graphml_value`)."""
    return pa.table({n: graphml_value(c) for n, c in zip(table.column_names, table.columns, strict=True)})


def _column(col) -> Texts | Ints | Const:
    if isinstance(col, np.ndarray):
        if col.dtype.kind == "f":
            return floats(col)
        if col.dtype.kind in "iu":
            return Ints(col)
        raise OutputError(f"GraphML writer: unsupported column dtype {col.dtype}")
    if isinstance(col, pa.ChunkedArray):
        col = pa.concat_arrays(col.chunks) if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_floating(col.type):
        return floats(col.to_numpy(zero_copy_only=False))
    if pa.types.is_integer(col.type):
        return Ints(col.to_numpy(zero_copy_only=False))
    return strings(col)
