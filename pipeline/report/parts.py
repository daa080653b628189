"""The parts of a report: each reads what the analysis wrote (or the plan), saves the data behind
its picture in ``data/``, draws the picture and fills a :class:`~pipeline.report.page.Section`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from pipeline.analyze import columns as col
from pipeline.report import draw
from pipeline.report.layers import LayerTable
from pipeline.report.layout import layered
from pipeline.report.page import Section, plan_tables, rows_table, write_json, write_parquet
from pipeline.report.stats import BINS_PER_DECADE, NeuronStats, pagerank_hist, read_neurons

#: Folder of the data files, beside the page.
DATA = "data"
#: Layers whose influence is drawn as a map (besides the input), spread over the model's depth.
INFLUENCE_LAYERS = 4
#: The measures' titles on the page.
TITLES = {col.IN_DEGREE: "in-degree", col.OUT_DEGREE: "out-degree", col.IN_STRENGTH: "in-strength (sum of |w|)",
          col.OUT_STRENGTH: "out-strength (sum of |w|)", col.PAGERANK: "PageRank (on |w|)",
          col.INFLUENCE: "influence on the target"}


def data_file(out: Path, name: str) -> tuple[Path, str]:
    return out / DATA / name, f"{DATA}/{name}"


def plan_part(out: Path, layers: LayerTable) -> Section:
    s = Section("Size: the plan's exact counts")
    f, rel = data_file(out, "plan.json")
    write_json(f, layers.to_json())
    s.data.append(rel)
    s.note(f"{layers.nodes:,} neurons and {layers.edges:,} edges (one per multiplication); estimated size in "
           "each sink (the formula of cnngraph plan).")
    s.body.append(plan_tables(layers))
    return s


def graph_part(out: Path, layers: LayerTable) -> tuple[Section, Any]:
    s = Section("Layer graph")
    layout = layered([r.name for r in layers.layers], {r.name: r.inbound for r in layers.layers})
    f, rel = data_file(out, "layer_graph.json")
    write_json(f, layout.to_json())
    draw.layer_graph(layers, layout, out / "layers.png")
    s.note(f"{len(layers.layers)} layers in {layout.rows} rows; red rounded boxes merge several inputs, a layer "
           "with several arrows out is a branch point.")
    s.picture("layers.png", "the layer graph", scroll=True)
    s.data.append(rel)
    return s, layout


def weights_part(out: Path, analysis: Path) -> Section:
    s = Section("Weights: |w| histogram and quantiles per layer")
    t = pq.read_table(analysis / col.LAYERS_FILE).to_pylist()
    rows = [r for r in t if r[col.EDGES]]
    data = [{"layer": r[col.LAYER], "type": r[col.LAYER_TYPE], "edges_total": r[col.EDGES],
             "edges": r[col.HIST_EDGES], "counts": r[col.HIST_COUNTS],
             **{k: r[k] for k in (col.WEIGHT_MIN, col.WEIGHT_MAX, col.WEIGHT_MEAN, col.WEIGHT_STD, col.ABS_MEAN,
                                  *col.ABS_QUANTILE)}} for r in rows]
    f, rel = data_file(out, "weights.json")
    write_json(f, data)
    s.data.append(rel)
    if not rows:
        s.note("No layer has edges.")
        return s
    marks = (col.ABS_QUANTILE[0], col.ABS_QUANTILE[len(col.ABS_QUANTILE) // 2], col.ABS_QUANTILE[-1])
    draw.weights(data, marks, out / "weights.png")
    s.picture("weights.png", "per-layer |w| histograms")
    header = ["layer", "edges", "w min", "w max", "w mean", "w std", *(f"|w| {k[-3:]}" for k in col.ABS_QUANTILE)]
    s.body.append(rows_table("quantiles", header, [
        [d["layer"], f"{d['edges_total']:,}", *(f"{d[k]:.3g}" for k in (col.WEIGHT_MIN, col.WEIGHT_MAX, col.WEIGHT_MEAN,
                                                                       col.WEIGHT_STD, *col.ABS_QUANTILE))]
        for d in data]))
    return s


def influence_inputs(layers: LayerTable, target: int | None) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """(input layers with a 3-D output, a few layers before the target's spread over the depth) to
    keep influence maps of."""
    if target is None:
        return {}, {}
    inputs = {r.name: tuple(r.output_shape) for r in layers.inputs() if len(r.output_shape) == 3}
    last = next((r.index for r in layers.layers if r.nodes and r.id_start <= target < r.id_start + r.nodes),
                layers.layers[-1].index)
    maps = [r for r in layers.layers if r.nodes and r.edges and len(r.output_shape) == 3 and r.name not in inputs
            and r.index <= last]
    if not maps:
        return inputs, {}
    pick = sorted(set(np.linspace(0, len(maps) - 1, min(INFLUENCE_LAYERS, len(maps))).round().astype(int).tolist()))
    return inputs, {maps[k].name: tuple(maps[k].output_shape) for k in pick}


def distributions_part(out: Path, stats: NeuronStats, gds: dict | None = None) -> Section:
    s = Section("Degree, strength and PageRank per layer")
    dist = {m: {name: h.to_json() for name, h in by_layer.items()} for m, by_layer in stats.hist.items()}
    f, rel = data_file(out, "distributions.json")
    write_json(f, {"bins_per_decade": BINS_PER_DECADE, "layers": stats.layers, "measures": dist})
    s.data.append(rel)
    s.note("Each row is a layer's neurons: the share of them in each bin (10 per decade; the first column "
           "counts zeros). Strength and PageRank are on |w|.")
    names = stats.layers
    empty = {"zeros": 0, "edges": [], "counts": [], "first_bin": 0}

    def panel(m: str, source: dict) -> tuple[str, list[str], list[dict]]:
        return TITLES[m], names, [source.get(n, empty) for n in names]

    for pic, pair in (("degree.png", (col.IN_DEGREE, col.OUT_DEGREE)), ("strength.png", (col.IN_STRENGTH, col.OUT_STRENGTH))):
        draw.log_strips([panel(m, dist[m]) for m in pair], out / pic, "neuron")
        s.picture(pic, " and ".join(TITLES[m] for m in pair))
    pr = [panel(col.PAGERANK, dist[col.PAGERANK])]
    if gds is not None and "layers" in gds:
        pr.append(("GDS PageRank (Neo4j, on |w|)", names, [gds["layers"].get(n, empty) for n in names]))
    if col.INFLUENCE in dist:
        pr.append(panel(col.INFLUENCE, dist[col.INFLUENCE]))
    draw.log_strips(pr, out / "pagerank.png", "neuron")
    s.picture("pagerank.png", "PageRank per layer")
    return s


def gds_part(out: Path, model: str, conn: Any, layers: LayerTable, progress: Any) -> tuple[Section, dict]:
    """GDS PageRank of a model loaded into Neo4j, projected under a temporary name, dropped after."""
    import uuid

    from pipeline.errors import Neo4jError
    from pipeline.neo4j import gds

    s = Section("GDS PageRank (Neo4j)")
    name = f"cnngraph_report_{uuid.uuid4().hex[:12]}"
    try:
        info = gds.project(conn, model, name, progress=progress)
    except Neo4jError as err:  # the projection would not fit the heap: say so, draw the rest
        s.note(f"GDS PageRank was not computed: {err}")
        return s, {"error": str(err)}
    try:
        ids, scores = gds.pagerank(conn, name)
    finally:
        gds.drop(conn, name)
    spans = [(r.name, r.id_start, r.id_start + r.nodes) for r in layers.layers if r.nodes]
    hist = pagerank_hist(ids, scores, spans)
    data = {"projection": name, "nodes": int(info["nodes"]), "relationships": int(info["relationships"]),
            "bins_per_decade": BINS_PER_DECADE, "layers": {k: h.to_json() for k, h in hist.items()}}
    f, rel = data_file(out, "gds_pagerank.json")
    write_json(f, data)
    s.data.append(rel)
    s.note(f"gds.pageRank on a projection of {info['nodes']:,} neurons and {info['relationships']:,} relationships "
           f"(weights |w|, damping 0.85), under the temporary name {name}, dropped afterwards; drawn beside "
           "cnngraph's exact PageRank in the section above.")
    return s, data


def thresholds_part(out: Path, analysis: Path) -> Section:
    s = Section("Threshold sweep: edges kept against |w| >= t")
    thr = pq.read_table(analysis / col.THRESHOLDS_FILE).to_pandas()
    totals = {r[col.LAYER]: r[col.EDGES] for r in pq.read_table(analysis / col.LAYERS_FILE).to_pylist() if r[col.EDGES]}
    values = sorted(thr[col.THRESHOLD].unique().tolist())
    names = [n for n in dict.fromkeys(thr[col.LAYER]) if n in totals]
    kept = np.zeros((len(names), len(values)), np.int64)
    for row in thr[thr[col.LAYER].isin(names)].itertuples(index=False):
        kept[names.index(getattr(row, col.LAYER)), values.index(getattr(row, col.THRESHOLD))] = getattr(row, col.EDGES)
    data = {"thresholds": values, "layers": names, "edges": kept.tolist(), "totals": [totals[n] for n in names]}
    f, rel = data_file(out, "thresholds.json")
    write_json(f, data)
    s.data.append(rel)
    if names:
        draw.thresholds(names, values, kept, np.array(data["totals"], np.int64), out / "thresholds.png")
        s.picture("thresholds.png", "edges kept against the threshold")
        s.body.append(rows_table("sweep", ["t", "edges kept", "share"], [
            [f"{t:g}", f"{int(kept[:, j].sum()):,}", f"{kept[:, j].sum() / max(sum(data['totals']), 1):.2%}"]
            for j, t in enumerate(values)]))
    return s


def influence_part(out: Path, analysis: Path, stats: NeuronStats, layout: Any, layers: LayerTable) -> list[Section]:
    summary = json.loads((analysis / col.SUMMARY_FILE).read_text())
    given = summary["target"]["given"]
    steps = pq.read_table(analysis / col.PATH_FILE).to_pylist()
    s1 = Section(f"Influence of the input on {given}")
    start = (steps[0][col.H], steps[0][col.W]) if steps and steps[0][col.H] >= 0 else None
    for name, grid in stats.input_map.items():
        h, w, c = (a.ravel() for a in np.indices(grid.shape))
        f, rel = data_file(out, f"input_influence_{name}.parquet")
        write_parquet(f, {col.H: h.astype(np.int32), col.W: w.astype(np.int32), col.C: c.astype(np.int32),
                          col.INFLUENCE: grid.ravel()})
        s1.data.append(rel)
        pic = f"input_influence_{name}.png"
        on_input = start if steps and steps[0][col.LAYER] == name else None
        draw.input_influence(grid, out / pic, on_input)
        s1.note(f"{name}: sum over every path from each input value to the target of the product of |w| "
                "(the circle: where the strongest path starts).")
        s1.picture(pic, f"influence of {name}")
    if not stats.input_map:
        s1.note("The model's input is not an image (H x W x C): no map drawn; see neurons.parquet.")
    s2 = Section("Influence per layer (summed over channels)")
    if stats.layer_maps:
        cols: dict[str, list] = {col.LAYER: [], col.H: [], col.W: [], col.INFLUENCE: []}
        for name, grid in stats.layer_maps.items():
            h, w = (a.ravel() for a in np.indices(grid.shape))
            cols[col.LAYER] += [name] * grid.size
            cols[col.H].append(h.astype(np.int32))
            cols[col.W].append(w.astype(np.int32))
            cols[col.INFLUENCE].append(grid.ravel())
        f, rel = data_file(out, "layer_influence.parquet")
        write_parquet(f, {k: v if k == col.LAYER else np.concatenate(v) for k, v in cols.items()})
        s2.data.append(rel)
        draw.layer_influence(stats.layer_maps, out / "layer_influence.png")
        s2.picture("layer_influence.png", "influence per layer")
    s3 = Section(f"Strongest path into {given}")
    f, rel = data_file(out, "path.json")
    write_json(f, [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in steps])
    s3.data.append(rel)
    if steps:
        labels = [(r[col.LAYER], f"({r[col.H]},{r[col.W]},{r[col.C]}) {r[col.SCORE]:.3g}") for r in steps]
        draw.layer_graph(layers, layout, out / "path.png", labels)
        draw.path_scores(steps, out / "path_scores.png")
        s3.note(f"{len(steps)} neurons; product of |w| along it {steps[-1][col.SCORE]:.4g}.")
        s3.picture("path_scores.png", "the product of |w| along the strongest path")
        s3.picture("path.png", "the strongest path through the layers", scroll=True)
        s3.body.append(rows_table("path", ["step", "layer", "h", "w", "c", "weight", "product"], [
            [r[col.STEP], r[col.LAYER], r[col.H], r[col.W], r[col.C], f"{r[col.PATH_WEIGHT]:.4g}", f"{r[col.SCORE]:.4g}"]
            for r in steps], numeric_from=2))
    else:
        s3.note("No path reaches the target.")
    return [s1, s2, s3]


def neuron_stats(analysis: Path, layers: LayerTable, target: int | None) -> NeuronStats:
    inputs, maps = influence_inputs(layers, target)
    return read_neurons(analysis / col.NEURONS_FILE, inputs, maps)
