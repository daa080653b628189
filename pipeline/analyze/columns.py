"""Column names and file names of the analysis tables (``cnngraph analyze``): the one place that
spells them, so the report stage reads what this stage writes. Names shared with the node table
(``id``, ``layer``, positions) come from :mod:`pipeline.schema`."""

from __future__ import annotations

from pipeline import schema

# Files --------------------------------------------------------------------------------------
NEURONS_FILE = "neurons.parquet"
LAYERS_FILE = "layers.parquet"
THRESHOLDS_FILE = "thresholds.parquet"
PATH_FILE = "path.parquet"
SUMMARY_FILE = "analysis.json"
#: The ownership marker's kind (pipeline.storage.claim_folder).
FOLDER_KIND = "analysis"
FORMAT = "cnngraph-analysis/1"

# neurons.parquet ------------------------------------------------------------------------------
ID = schema.ID
LAYER = schema.LAYER
D, H, W, C = schema.POSITION
IN_DEGREE = "in_degree"
OUT_DEGREE = "out_degree"
IN_STRENGTH = "in_strength"  # sum of |w| over in-edges
OUT_STRENGTH = "out_strength"  # sum of |w| over out-edges
PAGERANK = "pagerank"
INFLUENCE = "influence"  # with a target only: sum over paths to it of the product of |w|
NEURON_COLUMNS = (ID, LAYER, D, H, W, C, IN_DEGREE, OUT_DEGREE, IN_STRENGTH, OUT_STRENGTH, PAGERANK)

# layers.parquet (one row per layer with edges; weights of the edges into it) ----------------------
LAYER_INDEX = "index"
LAYER_TYPE = schema.LAYER_TYPE
EDGES = "edges"
WEIGHT_MIN = "weight_min"
WEIGHT_MAX = "weight_max"
WEIGHT_MEAN = "weight_mean"
WEIGHT_STD = "weight_std"
ABS_MEAN = "abs_mean"
#: |w| quantiles, from the fine histogram (see pipeline.analyze.accumulate.FINE_BINS).
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
ABS_QUANTILE = tuple(f"abs_q{round(q * 100):02d}" for q in QUANTILES)
#: Histogram of |w|: bin edges (len n + 1, 8 bins per octave) and counts (len n).
HIST_EDGES = "abs_hist_edges"
HIST_COUNTS = "abs_hist_counts"

# thresholds.parquet ---------------------------------------------------------------------------
THRESHOLD = "threshold"
# EDGES (above): edges with |w| >= threshold, counted in the layer of their target
NEURONS = "neurons"  # neurons with an in-edge and an out-edge of |w| >= threshold
NEURONS_WITH_IN = "neurons_with_in"  # neurons with an in-edge of |w| >= threshold
NEURONS_WITH_OUT = "neurons_with_out"  # neurons with an out-edge of |w| >= threshold

# path.parquet -----------------------------------------------------------------------------------
STEP = "step"
PATH_WEIGHT = "weight"  # signed weight of the edge into this neuron (NaN for the first)
SCORE = "score"  # product of |w| from the first neuron up to this one
PATH_COLUMNS = (STEP, ID, LAYER, H, W, C, PATH_WEIGHT, SCORE)

#: PageRank's damping factor (GDS's default).
DAMPING = 0.85
#: Thresholds of the sweep when none are given.
DEFAULT_THRESHOLDS = (0.0, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1)
