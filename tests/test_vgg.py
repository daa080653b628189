"""VGG end to end: exact analytic counts, counts produced by extraction, and replay against Keras."""

from __future__ import annotations

import pytest

from pipeline.extract import extract
from pipeline.model import ModelSpec, build, walk
from pipeline.plan import plan
from pipeline.replay import verify
from tests.helpers import TOL, keras


@pytest.fixture(scope="module")
def vgg16_32():
    return build(ModelSpec("vgg16", (32, 32, 3), include_top=False))


def test_vgg16_32_plan_totals(vgg16_32):
    _, graph = vgg16_32
    the_plan = plan(graph)
    assert the_plan.nodes == 310_784
    assert the_plan.edges == 247_433_984
    assert the_plan.layer("block1_conv1").edges == (3 * 32 - 2) ** 2 * 3 * 64  # 'same': border rows lose members
    assert the_plan.layer("block5_pool").nodes == 512


def test_vgg16_32_extracted_counts_equal_plan(vgg16_32):
    _, graph = vgg16_32
    the_plan = plan(graph)
    result = extract(graph, None, workers=2)
    assert result.nodes == the_plan.nodes and result.edges == the_plan.edges
    for entry in result.manifest["layers"]:
        lp = the_plan.layer(entry["name"])
        assert (entry["nodes"], entry["edges"]) == (lp.nodes, lp.edges), entry["name"]


def test_vgg16_32_parquet_size_is_close_to_the_plan(vgg16_32, tmp_path):
    """The plan's Parquet estimate is what extract's disk check and the CLI tell the user."""
    _, graph = vgg16_32
    layers = "block3_conv1:block5_pool"  # 3x3 convs from 8x8 down to 2x2 outputs, and pooling
    result = extract(graph, tmp_path / "out", layers, workers=2)
    size = sum(f.stat().st_size for f in (tmp_path / "out").rglob("*.parquet"))
    estimate = plan(graph, layers).bytes["parquet"]
    assert 0.7 < size / estimate < 1.3, (size, estimate, result.edges)


def test_vgg16_32_replays(vgg16_32):
    model, graph = vgg16_32
    result = verify(model, graph, samples=1)
    assert len(result.errors) == 18  # 13 convs + 5 pools
    assert result.ok and result.worst < TOL, result.errors


def test_vgg16_224_with_top_plan():
    k = keras()
    model = k.applications.VGG16(weights=None, include_top=True)
    the_plan = plan(walk(model))
    assert the_plan.nodes == 15_237_608
    assert the_plan.edges == 14_975_945_472
    assert the_plan.layer("fc1").edges == 7 * 7 * 512 * 4096
    assert the_plan.layer("predictions").activation == "softmax"


def test_vgg19_32_plan_totals():
    _, graph = build(ModelSpec("vgg19", (32, 32, 3), include_top=False))
    assert plan(graph).nodes == 310_784 + 8 * 8 * 256 + 4 * 4 * 512 + 2 * 2 * 512


@pytest.mark.slow
def test_vgg19_32_replays():
    """VGG16's layer types, three convs more: test_vgg16_32_replays covers them in the default suite."""
    model, graph = build(ModelSpec("vgg19", (32, 32, 3), include_top=False))
    assert plan(graph).nodes == 310_784 + 8 * 8 * 256 + 4 * 4 * 512 + 2 * 2 * 512
    result = verify(model, graph, samples=1)
    assert len(result.errors) == 21  # 16 convs + 5 pools
    assert result.ok and result.worst < TOL, result.errors
