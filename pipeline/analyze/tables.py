"""The analysis tables built from the passes' arrays, and their files: each written to a temporary
name beside its final one and renamed when complete."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.analyze import columns as col
from pipeline.analyze.accumulate import FINE_BINS, FINE_SHIFT, Stats
from pipeline.analyze.passes import State
from pipeline.export.base import LayerInfo
from pipeline.storage import temp_sibling

#: Neuron rows per Parquet row group.
NEURON_ROWS = 1_000_000
#: Fine bins per bin of the stored |w| histogram (16: 8 bins per octave).
COARSE = 16


def write_table(path: Path, tables: Iterator[pa.Table], schema: pa.Schema) -> None:
    """Write tables as one Parquet file, atomically (temporary name, then rename)."""
    tmp = temp_sibling(path)
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for t in tables:
                writer.write_table(t)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def neuron_schema(with_influence: bool) -> pa.Schema:
    fields = [pa.field(col.ID, pa.int64()), pa.field(col.LAYER, pa.dictionary(pa.int32(), pa.string())),
              *(pa.field(p, pa.int32()) for p in (col.D, col.H, col.W, col.C)),
              pa.field(col.IN_DEGREE, pa.int64()), pa.field(col.OUT_DEGREE, pa.int64()),
              pa.field(col.IN_STRENGTH, pa.float64()), pa.field(col.OUT_STRENGTH, pa.float64()),
              pa.field(col.PAGERANK, pa.float64())]
    if with_influence:
        fields.append(pa.field(col.INFLUENCE, pa.float64()))
    return pa.schema(fields)


def positions(la: LayerInfo, local: np.ndarray) -> list[np.ndarray]:
    """d, h, w, c of flat indexes into a layer's tensor (the last axes filled, the others -1)."""
    shape = la.shape or (1,)
    coords = np.unravel_index(local, shape) if len(shape) > 1 else (local,)
    coords = [np.asarray(x, np.int32) for x in coords][-4:]
    missing = 4 - len(coords)
    return [np.full(len(local), -1, np.int32)] * missing + coords


def neuron_tables(state: State, layers: list[LayerInfo]) -> Iterator[pa.Table]:
    schema = neuron_schema(state.infl is not None)
    for la in layers:
        for lo in range(la.offset, la.stop, NEURON_ROWS):
            hi = min(lo + NEURON_ROWS, la.stop)
            ids = np.arange(lo, hi, dtype=np.int64)
            layer = pa.DictionaryArray.from_arrays(pa.array(np.zeros(hi - lo, np.int32)), pa.array([la.name]))
            cols = [pa.array(ids), layer, *map(pa.array, positions(la, ids - la.offset)),
                    pa.array(state.in_deg[lo:hi].astype(np.int64)), pa.array(state.out_deg[lo:hi].astype(np.int64)),
                    pa.array(state.in_str[lo:hi]), pa.array(state.out_str[lo:hi]), pa.array(state.pagerank[lo:hi])]
            if state.infl is not None:
                cols.append(pa.array(state.infl[lo:hi]))
            yield pa.Table.from_arrays(cols, schema=schema)


def bin_lows(bins: np.ndarray) -> np.ndarray:
    """The lower edge of fine |w| bins (float32 values whose top bits are the bin)."""
    return (bins.astype(np.uint32) << FINE_SHIFT).view(np.float32).astype(np.float64)


def quantiles(st: Stats) -> list[float]:
    """|w| quantiles read from the fine histogram (linear within a bin: relative error < 2^-7)."""
    if st.edges == 0:
        return [float("nan")] * len(col.QUANTILES)
    cum = np.cumsum(st.hist)
    out = []
    for q in col.QUANTILES:
        rank = q * (st.edges - 1)
        b = int(np.searchsorted(cum, rank, side="right"))
        b = min(b, FINE_BINS - 1)
        before = cum[b - 1] if b else 0
        lo, hi = bin_lows(np.array([b, b + 1]))
        frac = (rank - before) / st.hist[b] if st.hist[b] else 0.0
        out.append(float(np.clip(lo + (hi - lo) * frac, st.amin, st.amax)))
    return out


def histogram(st: Stats) -> tuple[list[float], list[int]]:
    """The |w| histogram at 8 bins per octave over the non-empty range: (edges, counts)."""
    nz = np.flatnonzero(st.hist)
    if not len(nz):
        return [], []
    g0, g1 = int(nz[0]) // COARSE, int(nz[-1]) // COARSE + 1
    counts = st.hist[g0 * COARSE : g1 * COARSE].reshape(-1, COARSE).sum(axis=1)
    edges = bin_lows(np.arange(g0, g1 + 1) * COARSE)
    return edges.tolist(), counts.astype(np.int64).tolist()


def layer_table(state: State, layers: list[LayerInfo]) -> pa.Table:
    rows: dict[str, list] = {k: [] for k in (
        col.LAYER, col.LAYER_INDEX, col.LAYER_TYPE, col.EDGES, col.WEIGHT_MIN, col.WEIGHT_MAX, col.WEIGHT_MEAN,
        col.WEIGHT_STD, col.ABS_MEAN, *col.ABS_QUANTILE, col.HIST_EDGES, col.HIST_COUNTS)}
    for la in layers:
        st = state.stats.get(la.index)
        if st is None:
            continue
        n = st.edges
        mean = st.wsum / n if n else float("nan")
        var = max(0.0, st.wsq / n - mean * mean) if n else float("nan")
        edges, counts = histogram(st)
        values = [la.name, la.index, la.type, n, st.wmin if n else float("nan"), st.wmax if n else float("nan"),
                  mean, float(np.sqrt(var)), st.asum / n if n else float("nan"), *quantiles(st), edges, counts]
        for k, v in zip(rows, values, strict=True):
            rows[k].append(v)
    types = {col.LAYER_INDEX: pa.int32(), col.EDGES: pa.int64(), col.HIST_EDGES: pa.list_(pa.float64()),
             col.HIST_COUNTS: pa.list_(pa.int64())}
    return pa.table({k: pa.array(v, types.get(k)) for k, v in rows.items()})


def threshold_table(state: State, layers: list[LayerInfo]) -> pa.Table:
    rows: dict[str, list] = {k: [] for k in (col.LAYER, col.THRESHOLD, col.EDGES, col.NEURONS,
                                               col.NEURONS_WITH_IN, col.NEURONS_WITH_OUT)}
    for la in layers:
        st = state.stats.get(la.index)
        kept = st.kept() if st is not None else np.zeros(len(state.thresholds), np.int64)
        s = slice(la.offset, la.stop)
        mi, mo = state.max_in[s], state.max_out[s]
        both = np.minimum(mi, mo)
        for j, t in enumerate(state.thresholds.tolist()):
            t32 = np.float32(t)  # |w| is float32: compared as export's --min-abs-weight is
            for k, v in zip(rows, (la.name, t, int(kept[j]), int(np.count_nonzero(both >= t32)),
                                   int(np.count_nonzero(mi >= t32)), int(np.count_nonzero(mo >= t32))), strict=True):
                rows[k].append(v)
    return pa.table({k: pa.array(v, pa.float64() if k == col.THRESHOLD else None) for k, v in rows.items()})


def path_table(steps: list[tuple[int, float]], layers: list[LayerInfo]) -> pa.Table:
    starts = np.array([la.offset for la in layers], np.int64)
    rows: dict[str, list] = {k: [] for k in col.PATH_COLUMNS}
    score = 1.0
    for k, (nid, w) in enumerate(steps):
        la = layers[int(np.searchsorted(starts, nid, side="right")) - 1]
        _, h, wpos, c = (int(x[0]) for x in positions(la, np.array([nid - la.offset])))
        if k:
            score *= abs(w)
        for name, v in zip(col.PATH_COLUMNS, (k, nid, la.name, h, wpos, c, w, score), strict=True):
            rows[name].append(v)
    types = {col.STEP: pa.int32(), col.ID: pa.int64(), col.LAYER: pa.string(), col.H: pa.int32(),
             col.W: pa.int32(), col.C: pa.int32(), col.PATH_WEIGHT: pa.float64(), col.SCORE: pa.float64()}
    return pa.table({k: pa.array(v, types[k]) for k, v in rows.items()})
