"""The report's pictures, drawn with matplotlib's object API on the Agg canvas (no pyplot, no global
backend switch, no display) and saved as PNG under a temporary name, then renamed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.report.layers import MERGES, LayerTable
from pipeline.report.layout import Layout
from pipeline.storage import temp_sibling

#: Pixels per inch of the saved pictures.
DPI = 90
#: Box size and spacing of the layer graph, in inches.
SLOT_W, ROW_H, BOX_W, BOX_H = 2.9, 0.62, 2.6, 0.48
#: Box colours by layer family (matched on the type name).
FAMILY = (("Input", "#eeeeee"), ("Conv", "#cfe2f3"), ("Dense", "#fce5cd"), ("Pool", "#d9ead3"),
          ("Normalization", "#e4d7f5"), ("Activation", "#f3f3f3"), ("ReLU", "#f3f3f3"))
MERGE_COLOUR = "#f4cccc"


def figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save(fig: Any, path: Path, dpi: int = DPI) -> Path:
    """Write the figure as PNG at ``path`` (temporary name, then renamed)."""
    tmp = temp_sibling(path)
    try:
        fig.savefig(tmp, format="png", dpi=dpi)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def colour(kind: str) -> str:
    if kind in MERGES:
        return MERGE_COLOUR
    return next((c for key, c in FAMILY if key in kind), "#ffffff")


def layer_graph(layers: LayerTable, layout: Layout, path: Path, highlight: list[tuple[str, str]] | None = None) -> Path:
    """One box per layer (name, type, output shape, neurons, edges), arrows along the layout's
    polylines; ``highlight``: (layer, label) of a path drawn through the boxes in red."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    slots, rows = max(layout.slots, 1), max(layout.rows, 1)
    extra = 1.3 if highlight else 0.0  # room for the path's labels
    fig = figure(slots * SLOT_W + 0.3 + extra, rows * ROW_H + 0.3)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-SLOT_W / 2 - 0.15, (slots - 0.5) * SLOT_W + 0.15 + extra)
    ax.set_ylim(-(rows - 0.5) * ROW_H - 0.15, ROW_H / 2 + 0.15)
    ax.axis("off")

    def xy(p: tuple[float, float]) -> tuple[float, float]:
        return p[0] * SLOT_W, -p[1] * ROW_H

    for _, _, pts in layout.edges:
        xs = [xy(p) for p in pts]
        xs[0] = (xs[0][0], xs[0][1] - BOX_H / 2)
        xs[-1] = (xs[-1][0], xs[-1][1] + BOX_H / 2)
        if len(xs) > 2:
            ax.plot([x for x, _ in xs[:-1]], [y for _, y in xs[:-1]], color="#666666", lw=0.8, zorder=1)
        ax.add_patch(FancyArrowPatch(xs[-2], xs[-1], arrowstyle="-|>", mutation_scale=7, color="#666666",
                                     lw=0.8, zorder=1, shrinkA=0, shrinkB=0))
    for r in layers.layers:
        if r.name not in layout.position:
            continue
        x, y = xy(layout.position[r.name])
        merge = r.type in MERGES
        ax.add_patch(FancyBboxPatch((x - BOX_W / 2, y - BOX_H / 2), BOX_W, BOX_H,
                                    boxstyle="round,pad=0,rounding_size=0.12" if merge else "square,pad=0",
                                    fc=colour(r.type), ec="#b00000" if merge else "#444444", lw=0.8, zorder=2))
        counts = f"{r.nodes:,} neurons, {r.edges:,} edges" if r.nodes else f"re-indexes its input; {r.edges:,} edges"
        ax.text(x, y + 0.1, r.name, ha="center", va="center", fontsize=6.5, weight="bold", zorder=3, clip_on=True)
        ax.text(x, y - 0.02, f"{r.type} {r.shape_text}", ha="center", va="center", fontsize=5.8, zorder=3)
        ax.text(x, y - 0.14, counts, ha="center", va="center", fontsize=5.6, color="#333333", zorder=3)
    if highlight:
        shown = [(name, label) for name, label in highlight if name in layout.position]
        pts = [(x + BOX_W / 2 - 0.12, y) for x, y in (xy(layout.position[name]) for name, _ in shown)]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color="#d00000", lw=2.2, alpha=0.75, zorder=4,
                marker="o", ms=4)
        for (_, label), p in zip(shown, pts, strict=True):
            ax.text(p[0] + 0.15, p[1], label, fontsize=5.6, color="#d00000", va="center", zorder=5)
    return save(fig, path)


def _strip_axes(ax: Any, labels: list[str]) -> None:
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=6 if len(labels) < 40 else 4.5)
    ax.tick_params(axis="x", labelsize=7)


def _height(n: int) -> float:
    return max(2.6, 0.16 * n + 1.4)


def _margins(fig: Any, labels: list[str], bottom: float = 0.7, top: float = 0.35, wspace: float = 0.0) -> None:
    """Fixed margins that fit the layer names on the left (tight_layout costs seconds on tall figures)."""
    w, h = fig.get_size_inches()
    left = (0.3 + 0.055 * max((len(x) for x in labels), default=4)) / w
    fig.subplots_adjust(left=min(left, 0.4), right=0.97, bottom=min(bottom / h, 0.3), top=1 - min(top / h, 0.2),
                        wspace=wspace)


def log_strips(panels: list[tuple[str, list[str], list[dict]]], path: Path, unit: str = "count") -> Path:
    """Panels of per-layer histograms on shared log bins (rows: layers; columns: bins; the first
    column counts zeros). ``panels``: (title, layer names, histogram JSON of each layer)."""
    from matplotlib.colors import LogNorm

    n = max((len(names) for _, names, _ in panels), default=1)
    fig = figure(4.6 * len(panels), _height(n))
    for k, (title, names, hists) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        firsts = [h["first_bin"] for h in hists if h["counts"]]
        lo = min(firsts, default=0)
        hi = max((h["first_bin"] + len(h["counts"]) for h in hists if h["counts"]), default=lo + 1)
        grid = np.zeros((len(hists), hi - lo + 1))
        for i, h in enumerate(hists):
            total = h["zeros"] + sum(h["counts"])
            if not total:
                continue
            grid[i, 0] = h["zeros"] / total
            if h["counts"]:
                a = h["first_bin"] - lo + 1
                grid[i, a : a + len(h["counts"])] = np.asarray(h["counts"]) / total
        shown = np.ma.masked_equal(grid, 0)
        im = ax.imshow(shown, aspect="auto", interpolation="nearest", cmap="viridis",
                       norm=LogNorm(vmin=max(shown.min(), 1e-6), vmax=1) if shown.count() else None)
        decades = [d for d in range(lo // _bpd(), hi // _bpd() + 2) if lo <= d * _bpd() <= hi]
        step = max(1, len(decades) // 8)
        ax.set_xticks([0] + [d * _bpd() - lo + 1 for d in decades[::step]])
        ax.set_xticklabels(["0"] + [f"1e{d}" for d in decades[::step]])
        ax.axvline(0.5, color="white", lw=1)
        _strip_axes(ax, names)
        ax.set_title(title, fontsize=8)
        _colourbar(fig, im, ax, f"share of the layer's {unit}s")
    _margins(fig, [n for _, names, _ in panels for n in names], wspace=0.25 + 0.08 * max(
        (len(n) for _, names, _ in panels for n in names), default=4) / len(panels))
    return save(fig, path)


def _colourbar(fig: Any, mappable: Any, ax: Any, label: str) -> None:
    bar = fig.colorbar(mappable, ax=ax, shrink=0.6, pad=0.02)
    bar.ax.tick_params(labelsize=6)
    bar.ax.minorticks_off()
    if label:
        bar.set_label(label, fontsize=7)


def _bpd() -> int:
    from pipeline.report.stats import BINS_PER_DECADE

    return BINS_PER_DECADE


def weights(rows: list[dict], quantile_names: tuple[str, ...], path: Path) -> Path:
    """Per-layer |w| histograms as one strip per layer (fraction of the layer's edges per bin, log
    |w| axis), with the 1%, 50% and 99% quantiles marked."""
    from matplotlib.colors import LogNorm

    fig = figure(8.5, _height(len(rows)))
    ax = fig.add_subplot(1, 1, 1)
    grid_edges = sorted({e for r in rows for e in r["edges"]}) or [1e-3, 1.0]
    index = {e: k for k, e in enumerate(grid_edges)}
    grid = np.zeros((len(rows), max(len(grid_edges) - 1, 1)))
    for i, r in enumerate(rows):
        total = sum(r["counts"]) or 1
        for e, c in zip(r["edges"], r["counts"], strict=False):
            grid[i, index[e]] = c / total
    shown = np.ma.masked_equal(grid, 0)
    mesh = ax.pcolormesh(np.asarray(grid_edges), np.arange(len(rows) + 1) - 0.5, shown, cmap="viridis",
                         norm=LogNorm(vmin=max(shown.min(), 1e-6), vmax=1) if shown.count() else None)
    ax.set_xscale("log")
    for name, marker in zip(quantile_names, ("<", "|", ">"), strict=False):
        ax.plot([r[name] for r in rows], range(len(rows)), ls="none", marker=marker, color="#ff4040", ms=4,
                label=name)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    _strip_axes(ax, [r["layer"] for r in rows])
    ax.set_xlabel("|w| (8 bins per octave)", fontsize=8)
    ax.legend(fontsize=6, loc="upper left")
    _colourbar(fig, mesh, ax, "share of the layer's edges")
    _margins(fig, [r["layer"] for r in rows])
    return save(fig, path)


def thresholds(layer_names: list[str], values: list[float], kept: np.ndarray, totals: np.ndarray,
               path: Path) -> Path:
    """Edges kept against the |w| threshold: the total, and the fraction per layer (rows)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig = figure(11, _height(len(layer_names)))
    w, h = fig.get_size_inches()
    bottom, top = min(0.9 / h, 0.3), 1 - min(0.35 / h, 0.2)
    ax1 = fig.add_axes((0.8 / w, bottom, 3.6 / w, top - bottom))
    total = kept.sum(axis=0)
    ax1.plot(values, total, marker="o")
    ax1.set_xscale("symlog", linthresh=min([v for v in values if v > 0], default=1e-4))
    if total.min() > 0 and total.max() / total.min() > 100:
        ax1.set_yscale("log")
        ax1.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax1.set_ylim(0, total.max() * 1.05 + 1)
        ax1.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax1.tick_params(labelsize=7)
    ax1.set_xlabel("threshold t on |w|", fontsize=8)
    ax1.set_ylabel("edges with |w| >= t (all layers)", fontsize=8)
    ax1.grid(alpha=0.3)
    left = (4.9 + 0.3 + 0.055 * max((len(n) for n in layer_names), default=4)) / w
    ax2 = fig.add_axes((left, bottom, 0.93 - left, top - bottom))
    frac = np.divide(kept, totals[:, None], out=np.zeros(kept.shape), where=totals[:, None] > 0)
    im = ax2.imshow(frac, aspect="auto", interpolation="nearest", cmap="magma", vmin=0, vmax=1)
    ax2.set_xticks(range(len(values)))
    ax2.set_xticklabels([f"{v:g}" for v in values], rotation=45)
    _strip_axes(ax2, layer_names)
    ax2.set_xlabel("threshold t on |w|", fontsize=8)
    _colourbar(fig, im, ax2, "share of the layer's edges kept")
    return save(fig, path)


def _heat(fig: Any, ax: Any, grid: np.ndarray, title: str) -> None:
    from matplotlib.colors import LogNorm

    pos = grid[grid > 0]
    log = len(pos) and pos.max() / pos.min() > 1e3
    im = ax.imshow(np.ma.masked_less_equal(grid, 0) if log else grid, cmap="inferno", interpolation="nearest",
                   norm=LogNorm(vmin=pos.min(), vmax=pos.max()) if log else None)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)
    _colourbar(fig, im, ax, "")


def input_influence(maps: np.ndarray, path: Path, mark: tuple[int, int] | None = None,
                    max_channels: int = 4) -> Path:
    """The influence of every input pixel on the target: one map per channel (up to
    ``max_channels``) and their sum; ``mark``: the strongest path's start pixel."""
    chans = min(maps.shape[2], max_channels)
    fig = figure(3.4 * (chans + 1), 3.2)
    for k in range(chans + 1):
        ax = fig.add_subplot(1, chans + 1, k + 1)
        grid = maps.sum(axis=2) if k == chans else maps[:, :, k]
        _heat(fig, ax, grid, "summed over channels" if k == chans else f"channel {k}")
        if mark is not None:
            ax.plot([mark[1]], [mark[0]], marker="o", mfc="none", mec="#00e0ff", ms=8)
    fig.subplots_adjust(left=0.04, right=0.97, bottom=0.1, top=0.9, wspace=0.3)
    return save(fig, path)


def layer_influence(maps: dict[str, np.ndarray], path: Path) -> Path:
    """Influence on the target of a few layers' positions, summed over channels."""
    fig = figure(3.4 * max(len(maps), 1), 3.2)
    for k, (name, grid) in enumerate(maps.items()):
        _heat(fig, fig.add_subplot(1, len(maps), k + 1), grid, name)
    fig.subplots_adjust(left=0.06, right=0.97, bottom=0.1, top=0.9, wspace=0.3)
    return save(fig, path)


def path_scores(steps: list[dict], path: Path) -> Path:
    """The strongest path's running product of |w| at each step, labelled by layer."""
    fig = figure(8.5, 3.2)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([s["step"] for s in steps], [s["score"] for s in steps], marker="o", color="#d00000")
    ax.set_yscale("log")
    ax.set_xticks([s["step"] for s in steps])
    ax.set_xticklabels([s["layer"] for s in steps], rotation=60, ha="right", fontsize=6)
    ax.set_ylabel("product of |w| so far", fontsize=8)
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.4, top=0.95)
    return save(fig, path)
