"""The diff of two checkpoints of one architecture: what changed, edge by edge, neuron by neuron.

Two models of one architecture have the same neuron ids and the same edges in the same order
(DESIGN.md section 4: the layer translators are deterministic), so the diff walks both edge streams
side by side, layer by layer, in bounded chunks, and compares weights position by position; a
source, target or kind that differs means the graphs differ, and the diff stops and says where.
Memory is O(largest layer's neurons + top), never the whole graph.

Sources are what :func:`pipeline.export.open_source` opens, except Neo4j: keras.applications
names, ``.keras``/``.h5`` files, ModelSpec or ModelGraph objects, extraction folders (neuron
granularity). A model is read in extraction order (:func:`pipeline.extract.layer_tasks`: the
layer's tasks at the default task size, generated in the same chunks), which is the order of a
folder written by ``cnngraph extract``.

Output folder (claimed with :func:`pipeline.storage.claim_folder`, kind ``diff``; each file written
to a temporary name and renamed; ``diff.json`` last, so its presence says the folder is complete):

* ``layers.parquet``: one row per layer: edges, changed edges, mean and max |delta w| (over all
  edges), ||delta w||_2, ||w_A||_2, relative change (their ratio), Pearson correlation of w_A and
  w_B (NaN where either is constant, e.g. pooling), and the layer's bias changes (neurons and
  channels whose bias changed, mean and max |delta b|).
* ``neurons.parquet``: one row per neuron: id, layer, positions as in the node table, in-strength
  (sum of |w| into it) of A and of B and their difference (B minus A), and the bias difference.
* ``edges.parquet``: the ``top`` changed edges by |delta w| (exact over the whole graph; ties: the
  earlier edge in stream order first), with both weights, delta (B minus A, exact in float64),
  layer and kind.
* ``diff.json``: where A and B came from, counts, seconds.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import schema, storage
from pipeline.errors import OutputError, UsageError, disk_full_as
from pipeline.export import check_out
from pipeline.export.base import LayerInfo, Source
from pipeline.export.edges import CHUNK_EDGES, Edges, kind_array
from pipeline.export.sources import NEO4J_PREFIX, FolderSource, ModelSource, open_source
from pipeline.extract import CACHE_EDGES, CHUNK_NODES, layer_tasks, task_edges
from pipeline.extract import CHUNK_EDGES as EXTRACT_CHUNK_EDGES
from pipeline.extract.folder import write_json_atomic, write_part
from pipeline.progress import NULL, Progress

__all__ = ["DEFAULT_TOP", "DIFF_KIND", "DiffResult", "LayerDiff", "diff"]

#: Kind of folder a diff is (pipeline.storage ownership marker) and its format tag.
DIFF_KIND = "diff"
DIFF_FORMAT = "cnngraph-diff/1"
#: Changed edges kept in edges.parquet by default.
DEFAULT_TOP = 1000
LAYERS_FILE, NEURONS_FILE, EDGES_FILE, SUMMARY_FILE = "layers.parquet", "neurons.parquet", "edges.parquet", "diff.json"

# Columns of the diff tables beyond pipeline.schema's (which spells id, layer, positions, source, ...).
INDEX, EDGES, CHANGED = "index", "edges", "changed_edges"
MEAN_ABS_DELTA, MAX_ABS_DELTA, L2_DELTA, L2_A = "mean_abs_delta", "max_abs_delta", "l2_delta", "l2_a"
RELATIVE, CORRELATION, NEURONS = "relative_change", "correlation", "neurons"
BIAS_NEURONS, BIAS_CHANNELS = "changed_bias_neurons", "changed_bias_channels"
MEAN_ABS_BIAS, MAX_ABS_BIAS = "mean_abs_bias_delta", "max_abs_bias_delta"
STRENGTH_A, STRENGTH_B, STRENGTH_DELTA, BIAS_DELTA = "in_strength_a", "in_strength_b", "in_strength_delta", "bias_delta"
WEIGHT_A, WEIGHT_B, DELTA = "weight_a", "weight_b", "delta"
#: Keras's type of input layers (whose names alone may differ between the two sides).
INPUT_LAYER = "InputLayer"

_STR = pa.dictionary(pa.int32(), pa.string())
LAYER_SCHEMA = pa.schema([
    pa.field(INDEX, pa.int32()), pa.field(schema.LAYER, pa.string()), pa.field(schema.LAYER_TYPE, pa.string()),
    pa.field(EDGES, pa.int64()), pa.field(CHANGED, pa.int64()),
    *(pa.field(c, pa.float64()) for c in (MEAN_ABS_DELTA, MAX_ABS_DELTA, L2_DELTA, L2_A, RELATIVE, CORRELATION)),
    pa.field(NEURONS, pa.int64()), pa.field(BIAS_NEURONS, pa.int64()), pa.field(BIAS_CHANNELS, pa.int64()),
    pa.field(MEAN_ABS_BIAS, pa.float64()), pa.field(MAX_ABS_BIAS, pa.float64()),
])
NEURON_SCHEMA = pa.schema([
    pa.field(schema.ID, pa.int64()), pa.field(schema.LAYER, _STR),
    *(pa.field(p, pa.int32()) for p in schema.POSITION),
    *(pa.field(c, pa.float64()) for c in (STRENGTH_A, STRENGTH_B, STRENGTH_DELTA, BIAS_DELTA)),
])
EDGE_DIFF_SCHEMA = pa.schema([
    pa.field(schema.SOURCE, pa.int64()), pa.field(schema.TARGET, pa.int64()),
    pa.field(WEIGHT_A, pa.float32()), pa.field(WEIGHT_B, pa.float32()), pa.field(DELTA, pa.float64()),
    pa.field(schema.LAYER, _STR), pa.field(schema.KIND, _STR),
])


@dataclass
class LayerDiff:
    """One row of layers.parquet (see the module docstring)."""

    index: int
    layer: str
    layer_type: str
    edges: int = 0
    changed_edges: int = 0
    mean_abs_delta: float = 0.0
    max_abs_delta: float = 0.0
    l2_delta: float = 0.0
    l2_a: float = 0.0
    relative_change: float = math.nan
    correlation: float = math.nan
    neurons: int = 0
    changed_bias_neurons: int = 0
    changed_bias_channels: int = 0
    mean_abs_bias_delta: float = 0.0
    max_abs_bias_delta: float = 0.0


@dataclass
class DiffResult:
    """What a diff wrote: where, per-layer rows, counts and time."""

    out: Path | storage.RemotePath
    layers: list[LayerDiff]
    neurons: int
    edges: int
    changed_edges: int
    changed_bias_neurons: int
    top: int  # rows in edges.parquet
    seconds: float
    sources: dict[str, Any] = field(default_factory=dict)

    @property
    def changed_layers(self) -> list[LayerDiff]:
        """The layers with at least one changed edge."""
        return [la for la in self.layers if la.changed_edges]


def diff(a, b, out: str | os.PathLike, *, top: int = DEFAULT_TOP, progress: Progress = NULL,
         check: bool = True, chunk: int = CHUNK_EDGES) -> DiffResult:
    """Compare two checkpoints ``a`` and ``b`` of one architecture; write the tables into ``out``.

    Parameters
    ----------
    a, b : a keras.applications name, a ``.keras``/``.h5`` file, a ModelSpec, a ModelGraph, an
        extraction folder (neuron granularity), or a model or folder Source.
    out : the output folder (created; an earlier diff folder of ours is rewritten).
    top : how many changed edges (largest |delta w|) edges.parquet keeps.
    check : verify a folder's files against their sha256 before reading them.
    chunk : edges per chunk generated from a model (memory bound).

    Raises
    ------
    UsageError when the two layer graphs differ (says the first difference) or a source cannot be
    diffed; OutputError when ``out`` is not ours to write or would write over a source.
    """
    if top < 0:
        raise UsageError(f"top must be 0 or more, not {top}")
    t0 = time.perf_counter()
    root = storage.location(out)
    if isinstance(root, Path):
        for source in (a, b):
            check_out(source, root)
    sa, sb = _open(a, "A", check), _open(b, "B", check)
    with sa, sb:
        _same_architecture(sa, sb)
        storage.claim_folder(root, DIFF_KIND, "choose another --out")
        (root / SUMMARY_FILE).unlink(missing_ok=True)  # an earlier diff is incomplete from here on
        run = _Run(sa, sb, top, chunk, progress)
        with disk_full_as(root, "the diff", "the folder has no diff.json (incomplete); free some space and "
                          "run again"):
            progress.start(sum(la.edges for la in sa.layers), "edges", "diff")
            try:
                write_part(root / NEURONS_FILE, run.neuron_tables(), NEURON_SCHEMA, CHUNK_NODES)
            finally:
                progress.finish()
            write_part(root / LAYERS_FILE, iter([_layer_table(run.rows)]), LAYER_SCHEMA, CHUNK_NODES)
            write_part(root / EDGES_FILE, iter([run.top.table(sa.layers)]), EDGE_DIFF_SCHEMA, CHUNK_NODES)
            seconds = time.perf_counter() - t0
            result = DiffResult(
                root, run.rows, sum(r.neurons for r in run.rows), sum(r.edges for r in run.rows),
                sum(r.changed_edges for r in run.rows), sum(r.changed_bias_neurons for r in run.rows),
                run.top.count, seconds, {"a": _describe(sa), "b": _describe(sb)},
            )
            write_json_atomic(root / SUMMARY_FILE, {
                "format": DIFF_FORMAT, "sources": result.sources, "top": top,
                "counts": {"layers": len(result.layers), "changed_layers": len(result.changed_layers),
                           "neurons": result.neurons, "edges": result.edges, "changed_edges": result.changed_edges,
                           "changed_bias_neurons": result.changed_bias_neurons, "top_edges": result.top},
                "seconds": round(seconds, 3), "files": [LAYERS_FILE, NEURONS_FILE, EDGES_FILE],
            })
    return result


# Sources ---------------------------------------------------------------------------------------
def _open(x, side: str, check: bool) -> Source:
    """A model or folder Source for one side; refuses Neo4j and coarse-granularity folders."""
    if isinstance(x, (str, os.PathLike)) and str(x).startswith(NEO4J_PREFIX):
        raise UsageError(f"{side} is {x}: diff compares models or extraction folders, not models in Neo4j; "
                         "pass the model or its extraction folder")
    src = open_source(x, check=check)
    if isinstance(src, FolderSource) and src.granularity != schema.NEURON:
        raise UsageError(f"{side} ({src.folder}) is a {src.granularity}-granularity extraction; diff compares "
                         "neuron-level graphs: extract it with --granularity neuron")
    if not isinstance(src, (FolderSource, ModelSource)):
        raise UsageError(f"{side}: diff compares models or extraction folders, not {type(src).__name__}")
    return src


def _describe(src: Source) -> dict[str, Any]:
    """Where a side came from (for diff.json)."""
    if isinstance(src, FolderSource):
        return {"folder": str(src.folder.resolve()), "model": src.manifest.get("model", {})}
    from pipeline.model_files import model_record

    return {"model": model_record(src.graph)}


def _inputs(src: Source, la: LayerInfo) -> list[int]:
    """The indexes of the layers feeding ``la`` (as walked, or as the manifest records them).

    Indexes, not names: two builds of one application in one process name the input layer
    ``input_layer`` and ``input_layer_1``.
    """
    if isinstance(src, FolderSource):
        names = src.entries[la.index].get("inbound", [])
    else:
        names = src.graph.layers[la.index].inbound
    index = {x.name: x.index for x in src.layers}
    return [index.get(n, -1) for n in names]


def _same_architecture(sa: Source, sb: Source) -> None:
    """UsageError naming the first difference between the two layer graphs (the input layers'
    names aside: Keras numbers them per process; the tables use A's names)."""
    def refuse(what: str) -> None:
        raise UsageError(f"A ({sa.name}) and B ({sb.name}) are not one architecture: {what}; diff compares two "
                         "checkpoints of the same layer graph")

    if len(sa.layers) != len(sb.layers):
        refuse(f"A has {len(sa.layers)} layers, B {len(sb.layers)}")
    for la, lb in zip(sa.layers, sb.layers, strict=True):
        name_a, name_b = (la.name, lb.name) if la.type != INPUT_LAYER or lb.type != INPUT_LAYER else ("", "")
        for what, va, vb in (("name", name_a, name_b), ("type", la.type, lb.type),
                             ("output shape", la.shape, lb.shape),
                             ("input layers (by index)", _inputs(sa, la), _inputs(sb, lb)),
                             ("first neuron id", la.offset, lb.offset), ("edge count", la.edges, lb.edges)):
            if va != vb:
                refuse(f"layer {la.index} ({la.name}) has {what} {va} in A and {vb} in B")


def _chunks(src: Source, la: LayerInfo, chunk: int) -> Iterator[Edges]:
    """A layer's edges in extraction order, in batches of ``chunk`` edges.

    A model's are generated exactly as ``extract`` generates them (its tasks, in generation chunks
    of CACHE_EDGES: a translator's order depends on both), then gathered into batches.
    """
    if isinstance(src, ModelSource):
        spec = src.graph.layers[la.index]
        gen = min(EXTRACT_CHUNK_EDGES, CACHE_EDGES)
        edges = (Edges.of(c.source, c.target, c.weight, c.kind)
                 for task in layer_tasks(spec) for c in task_edges(src.graph, task, gen))
    else:
        edges = src.edges(la)
    cursor = _Cursor(edges)
    while cursor.ready():
        parts, room = [], chunk
        while room and cursor.ready():
            parts.append(cursor.take(min(room, cursor.left)))
            room -= len(parts[-1])
        yield parts[0] if len(parts) == 1 else Edges.concat(parts)


def _aligned(ia: Iterator[Edges], ib: Iterator[Edges]) -> Iterator[tuple[Edges | None, Edges | None]]:
    """The two streams cut into pairs of equally long batches (each side's chunks may differ); when
    one stream ends first, a last pair holds the other's rest and None."""
    a, b = _Cursor(ia), _Cursor(ib)
    while a.ready() and b.ready():
        n = min(a.left, b.left)
        yield a.take(n), b.take(n)
    if a.ready() or b.ready():
        yield (a.take(a.left) if a.ready() else None), (b.take(b.left) if b.ready() else None)


class _Cursor:
    """A position in a stream of edge batches."""

    def __init__(self, it: Iterator[Edges]):
        self.it, self.batch, self.at = it, None, 0

    @property
    def left(self) -> int:
        return len(self.batch) - self.at

    def ready(self) -> bool:
        """Whether edges are left (the next non-empty batch is fetched when needed)."""
        while self.batch is None or self.left == 0:
            self.batch, self.at = next(self.it, None), 0
            if self.batch is None:
                return False
        return True

    def take(self, n: int) -> Edges:
        part = self.batch.take(slice(self.at, self.at + n))
        self.at += n
        return part


# The pass ----------------------------------------------------------------------------------------
class _Run:
    """One pass over both sources: per-layer statistics, in-strengths, biases and the top edges."""

    def __init__(self, sa: Source, sb: Source, top: int, chunk: int, progress: Progress):
        self.sa, self.sb, self.chunk, self.progress = sa, sb, chunk, progress
        self.top = _Top(top)
        self.rows: list[LayerDiff] = []
        self.seen = 0  # edges before the current chunk (stream position, the top's tie-break)

    def neuron_tables(self) -> Iterator[pa.Table]:
        """neurons.parquet's tables, layer by layer; fills ``rows`` and ``top`` on the way."""
        for la, lb in zip(self.sa.layers, self.sb.layers, strict=True):
            row = LayerDiff(la.index, la.name, la.type, edges=la.edges)
            strength = self._edges(la, lb, row)
            if la.owns:
                yield from self._nodes(la, row, strength)
            self.rows.append(row)

    def _edges(self, la: LayerInfo, lb: LayerInfo, row: LayerDiff) -> np.ndarray:
        """Compare a layer's edges; its in-strengths (2 x neurons: A, B)."""
        strength = np.zeros((2, la.size))
        moments = _Moments()
        count = 0
        for ea, eb in _aligned(_chunks(self.sa, la, self.chunk), _chunks(self.sb, lb, self.chunk)):
            if ea is None or eb is None:
                longer = "A" if eb is None else "B"
                raise UsageError(f"layer {la.name}: {longer} has more than the {count:,} edges the other has; "
                                 "the two are not one architecture")
            _check_same(la, ea, eb, count)
            wa, wb = ea.weight.astype(np.float64), eb.weight.astype(np.float64)
            delta = wb - wa
            ad = np.abs(delta)
            row.changed_edges += int(np.count_nonzero(delta))
            row.max_abs_delta = max(row.max_abs_delta, float(ad.max()))
            moments.add(wa, wb, delta, ad)
            lo, hi = int(ea.target.min()) - la.offset, int(ea.target.max()) + 1 - la.offset
            if lo < 0 or hi > la.size:
                raise OutputError(f"internal error: layer {la.name} has edges into neurons it does not own; "
                                  "please report this")
            local = ea.target - (la.offset + lo)
            for k, w in enumerate((ea.weight, eb.weight)):
                strength[k, lo:hi] += np.bincount(local, weights=np.abs(w), minlength=hi - lo)
            self.top.offer(ad, self.seen, ea, wb, la.index)
            self.seen += len(ea)
            count += len(ea)
            self.progress.advance(len(ea))
        moments.fill(row, count)
        return strength

    def _nodes(self, la: LayerInfo, row: LayerDiff, strength: np.ndarray) -> Iterator[pa.Table]:
        """A layer's neuron rows (nodes read from both sides in chunks) and its bias statistics."""
        row.neurons = la.size
        channels = np.zeros(la.shape[-1] if la.shape else 1, bool)
        total = 0.0
        for lo in range(0, la.size, CHUNK_NODES):
            ids = np.arange(la.offset + lo, la.offset + min(lo + CHUNK_NODES, la.size), dtype=np.int64)
            na, nb = self.sa.nodes(ids), self.sb.nodes(ids)
            if not (np.array_equal(na.column(schema.ID).to_numpy(), ids)
                    and np.array_equal(nb.column(schema.ID).to_numpy(), ids)):
                raise UsageError(f"layer {la.name}: the node tables of A and B do not hold the same neurons; "
                                 "an extraction folder may be damaged (rerun `cnngraph extract` into it)")
            bias = nb.column(schema.BIAS).to_numpy().astype(np.float64) - na.column(schema.BIAS).to_numpy()
            changed = bias != 0
            row.changed_bias_neurons += int(changed.sum())
            channels[na.column(schema.C).to_numpy()[changed]] = True
            ab = np.abs(bias)
            total += float(ab.sum())
            row.max_abs_bias_delta = max(row.max_abs_bias_delta, float(ab.max()))
            s = strength[:, lo: lo + len(ids)]
            yield pa.table({
                schema.ID: ids, schema.LAYER: na.column(schema.LAYER),
                **{p: na.column(p) for p in schema.POSITION},
                STRENGTH_A: s[0], STRENGTH_B: s[1], STRENGTH_DELTA: s[1] - s[0], BIAS_DELTA: bias,
            }, schema=NEURON_SCHEMA)
        row.changed_bias_channels = int(channels.sum())
        row.mean_abs_bias_delta = total / la.size if la.size else 0.0


def _check_same(la: LayerInfo, ea: Edges, eb: Edges, before: int) -> None:
    """UsageError at the first edge whose source, target or kind differs between A and B."""
    if np.array_equal(ea.source, eb.source) and np.array_equal(ea.target, eb.target) \
            and np.array_equal(ea.kind, eb.kind):
        return
    i = int(np.flatnonzero((ea.source != eb.source) | (ea.target != eb.target) | (ea.kind != eb.kind))[0])
    raise UsageError(
        f"layer {la.name}: edge {before + i:,} is {ea.source[i]} -> {ea.target[i]} in A but {eb.source[i]} -> "
        f"{eb.target[i]} in B; the two are not one architecture (or a folder was extracted with a non-default "
        "task size: re-extract it with `cnngraph extract`)")


class _Moments:
    """Streaming sums of a layer's weights (Chan's pairwise update: no cancellation in Pearson's r)."""

    def __init__(self):
        self.n = 0
        self.mean_a = self.mean_b = self.m2a = self.m2b = self.cab = 0.0
        self.abs_delta = self.sq_delta = self.sq_a = 0.0

    def add(self, wa: np.ndarray, wb: np.ndarray, delta: np.ndarray, ad: np.ndarray) -> None:
        """Add a chunk (float64 weights, their delta and |delta|): dot products, no temporaries."""
        n2 = len(wa)
        self.abs_delta += float(ad.sum())
        self.sq_delta += float(delta @ delta)
        saa, sbb, sab = float(wa @ wa), float(wb @ wb), float(wa @ wb)
        self.sq_a += saa
        sa, sb = float(wa.sum()), float(wb.sum())
        ma, mb = sa / n2, sb / n2
        # the chunk's own centred sums (weights are near zero-mean: no cancellation to speak of)
        m2a, m2b, cab = max(saa - sa * ma, 0.0), max(sbb - sb * mb, 0.0), sab - sa * mb
        n1, n = self.n, self.n + n2
        da, db = ma - self.mean_a, mb - self.mean_b
        self.mean_a += da * n2 / n
        self.mean_b += db * n2 / n
        self.m2a += m2a + da * da * n1 * n2 / n
        self.m2b += m2b + db * db * n1 * n2 / n
        self.cab += cab + da * db * n1 * n2 / n
        self.n = n

    def fill(self, row: LayerDiff, count: int) -> None:
        if not count:
            return
        row.mean_abs_delta = self.abs_delta / count
        row.l2_delta, row.l2_a = math.sqrt(self.sq_delta), math.sqrt(self.sq_a)
        row.relative_change = (row.l2_delta / row.l2_a if row.l2_a else
                               (0.0 if row.l2_delta == 0 else math.inf))
        # Relative to the weights' scale: below ~1e-12 a variance is rounding, the weights constant.
        scale = max(self.mean_a ** 2, self.mean_b ** 2, 1e-300) * self.n * 1e-12
        if self.m2a > scale and self.m2b > scale:
            row.correlation = max(-1.0, min(1.0, self.cab / math.sqrt(self.m2a * self.m2b)))


class _Top:
    """The ``n`` changed edges of largest |delta| seen so far (ties: earlier stream position first).

    Held in stream order; a chunk's candidates (only those beating the current n-th, once full)
    are appended and the union cut back to n with one partition: O(chunk + n) per chunk.
    """

    FIELDS = ("ad", "pos", "source", "target", "wa", "wb", "kind", "layer")

    def __init__(self, n: int):
        self.n = n
        self.cols: dict[str, np.ndarray] = {
            "ad": np.zeros(0), "pos": np.zeros(0, np.int64), "source": np.zeros(0, np.int64),
            "target": np.zeros(0, np.int64), "wa": np.zeros(0, np.float32), "wb": np.zeros(0, np.float32),
            "kind": np.zeros(0, np.uint8), "layer": np.zeros(0, np.int32),
        }

    @property
    def count(self) -> int:
        return len(self.cols["ad"])

    def offer(self, ad: np.ndarray, first: int, edges: Edges, wb: np.ndarray, layer: int) -> None:
        """Consider a chunk's edges (``ad``: their |delta|; ``first``: the first one's stream position)."""
        if self.n == 0:
            return
        bar = self.cols["ad"].min() if self.count == self.n else 0.0
        keep = np.flatnonzero(ad > bar)
        if len(keep) == 0:
            return
        new = {"ad": ad[keep], "pos": first + keep, "source": edges.source[keep], "target": edges.target[keep],
               "wa": edges.weight[keep], "wb": wb[keep].astype(np.float32), "kind": edges.kind[keep],
               "layer": np.full(len(keep), layer, np.int32)}
        cols = {k: np.concatenate([self.cols[k], new[k]]) for k in self.FIELDS}
        if len(cols["ad"]) > self.n:
            kth = len(cols["ad"]) - self.n
            cut = np.partition(cols["ad"], kth)[kth]  # the n-th largest
            mask = cols["ad"] > cut
            ties = np.flatnonzero(cols["ad"] == cut)[: self.n - int(mask.sum())]  # earliest first
            mask[ties] = True
            cols = {k: v[mask] for k, v in cols.items()}
        self.cols = cols

    def table(self, layers: list[LayerInfo]) -> pa.Table:
        """edges.parquet: largest |delta| first, ties in stream order."""
        c = self.cols
        order = np.lexsort((c["pos"], -c["ad"]))
        names = [la.name for la in layers]
        layer = pa.DictionaryArray.from_arrays(pa.array(c["layer"][order], pa.int32()), pa.array(names, pa.string()))
        return pa.table({
            schema.SOURCE: c["source"][order], schema.TARGET: c["target"][order],
            WEIGHT_A: c["wa"][order], WEIGHT_B: c["wb"][order],
            DELTA: c["wb"][order].astype(np.float64) - c["wa"][order], schema.LAYER: layer,
            schema.KIND: kind_array(c["kind"][order]),
        }, schema=EDGE_DIFF_SCHEMA)


def _layer_table(rows: list[LayerDiff]) -> pa.Table:
    return pa.Table.from_pylist([asdict(r) for r in rows], schema=LAYER_SCHEMA)
