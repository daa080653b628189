"""What the report's pictures show, read from the analysis tables in one streaming pass.

``neurons.parquet`` is read a batch of rows at a time (memory: one batch plus the maps kept), and
every per-neuron measure becomes a per-layer histogram on fixed logarithmic bins
(:data:`BINS_PER_DECADE`; zeros counted apart), exact counts whatever the batch size. Influence
is also kept as maps: the input's per pixel and channel, and a few layers' summed over channels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline.analyze import columns as col

#: Bins per decade of the logarithmic histograms: bin k holds [10^(k/B), 10^((k+1)/B)).
BINS_PER_DECADE = 10
#: Per-neuron measures drawn as distributions (influence too, with a target).
MEASURES = (col.IN_DEGREE, col.OUT_DEGREE, col.IN_STRENGTH, col.OUT_STRENGTH, col.PAGERANK)
#: Rows read at a time.
BATCH_ROWS = 1 << 20


def bin_edge(k: np.ndarray | int) -> np.ndarray:
    """The lower edge of logarithmic bin ``k``."""
    return np.power(10.0, np.asarray(k, np.float64) / BINS_PER_DECADE)


def log_bins(x: np.ndarray) -> np.ndarray:
    """The bin of every positive value: the k with bin_edge(k) <= x < bin_edge(k + 1), exactly."""
    k = np.floor(np.log10(x) * BINS_PER_DECADE).astype(np.int64)
    k -= x < bin_edge(k)
    k += x >= bin_edge(k + 1)
    return k


@dataclass
class Histogram:
    """Counts of one measure in one layer: zeros, and positive values on the log bins."""

    zeros: int = 0
    counts: dict[int, int] = field(default_factory=dict)

    def add(self, x: np.ndarray) -> None:
        pos = x[x > 0]
        self.zeros += int(len(x) - len(pos))
        if not len(pos):
            return
        k = log_bins(pos)
        lo = int(k.min())
        for b, n in enumerate(np.bincount(k - lo).tolist()):
            if n:
                self.counts[lo + b] = self.counts.get(lo + b, 0) + n

    def to_json(self) -> dict:
        """``zeros``, bin ``edges`` (len n + 1) and ``counts`` (len n) over the non-empty range."""
        if not self.counts:
            return {"zeros": self.zeros, "edges": [], "counts": [], "first_bin": 0}
        lo, hi = min(self.counts), max(self.counts) + 1
        return {"zeros": self.zeros, "first_bin": lo, "edges": bin_edge(np.arange(lo, hi + 1)).tolist(),
                "counts": [self.counts.get(k, 0) for k in range(lo, hi)]}


@dataclass
class NeuronStats:
    """Per layer (model order) and measure, a histogram; influence maps when there is a target."""

    layers: list[str] = field(default_factory=list)
    hist: dict[str, dict[str, Histogram]] = field(default_factory=dict)  # measure -> layer -> hist
    input_map: dict[str, np.ndarray] = field(default_factory=dict)  # input layer -> (h, w, c) influence
    layer_maps: dict[str, np.ndarray] = field(default_factory=dict)  # layer -> (h, w) influence summed over c
    rows: int = 0


def read_neurons(path: Path, inputs: dict[str, tuple[int, ...]], mapped: dict[str, tuple[int, ...]],
                 batch_rows: int = BATCH_ROWS) -> NeuronStats:
    """Histograms of every measure per layer and the influence maps, in one pass over ``path``.

    ``inputs``: input layers (3-D output shape) whose influence is kept per position and channel;
    ``mapped``: layers whose influence is kept summed over channels (their (h, w, c) shape).
    """
    pf = pq.ParquetFile(path)
    names = set(pf.schema_arrow.names)
    measures = [m for m in (*MEASURES, col.INFLUENCE) if m in names]
    out = NeuronStats(hist={m: {} for m in measures})
    with_infl = col.INFLUENCE in names
    for name, shape in inputs.items():
        out.input_map[name] = np.zeros(shape) if with_infl else np.zeros(0)
    for name, shape in mapped.items():
        out.layer_maps[name] = np.zeros(shape[:2]) if with_infl else np.zeros(0)
    wanted = [col.LAYER, col.H, col.W, col.C, *measures]
    for batch in pf.iter_batches(batch_size=batch_rows, columns=wanted):
        out.rows += batch.num_rows
        layer = batch.column(col.LAYER)
        codes = layer.indices.to_numpy(zero_copy_only=False)
        values = {m: batch.column(m).to_numpy(zero_copy_only=False) for m in measures}
        for code, name in _groups(codes, layer.dictionary.to_pylist()):
            mine = codes == code
            if name not in out.layers:
                out.layers.append(name)
            for m in measures:
                out.hist[m].setdefault(name, Histogram()).add(values[m][mine])
            if with_infl and (name in inputs or name in mapped):
                h, w, c = (batch.column(p).to_numpy(zero_copy_only=False)[mine] for p in (col.H, col.W, col.C))
                infl = values[col.INFLUENCE][mine]
                if name in inputs:
                    out.input_map[name][h, w, c] = infl
                if name in mapped:
                    grid = out.layer_maps[name]
                    grid += np.bincount(h * grid.shape[1] + w, infl, grid.size).reshape(grid.shape)
    return out


def _groups(codes: np.ndarray, dictionary: list[str]) -> Iterable[tuple[int, str]]:
    """(code, layer name) of the codes present in a batch, in the order they first appear."""
    present, first = np.unique(codes, return_index=True)
    for k in np.argsort(first, kind="stable"):
        yield int(present[k]), dictionary[int(present[k])]


def pagerank_hist(ids: np.ndarray, scores: np.ndarray, starts: list[tuple[str, int, int]]) -> dict[str, Histogram]:
    """Per layer ((name, first id, stop) of the layers owning neurons), a histogram of scores."""
    out: dict[str, Histogram] = {}
    for name, lo, hi in starts:
        a, b = np.searchsorted(ids, [lo, hi])
        if b > a:
            out.setdefault(name, Histogram()).add(scores[a:b])
    return out
