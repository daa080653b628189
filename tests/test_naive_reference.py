"""The engine's edges against a deliberately naive reference, as exact sets.

The reference below shares no code with the engine: plain Python loops over output positions,
kernel offsets and channels, TensorFlow's padding worked out here again, and neuron ids assigned by
hand (input first, then each layer that owns neurons, row-major). Edges are compared as sets of
(source, target, float32 weight bits, kind): nothing missing, nothing extra, weights bit-exact.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.model import walk
from tests.helpers import f32_bits, keras, layer_edges, sequential

L = keras().layers


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def tf_padding(size: int, k: int, s: int, d: int, padding: str) -> tuple[int, int]:
    """(output size, padding before) along one axis, as TensorFlow computes them."""
    eff = (k - 1) * d + 1
    if padding == "valid":
        return (size - eff) // s + 1, 0
    out = (size + s - 1) // s
    total = max((out - 1) * s + eff - size, 0)
    return out, total // 2  # the smaller half first: odd totals pad more after


def windows(in_hw, kernel, strides, dilation, padding):
    """Yield (oh, ow, [(kh, kw, ih, iw) in-bounds members]) for every output position."""
    (ih_n, iw_n), (kh_n, kw_n), (sh, sw), (dh, dw) = in_hw, kernel, strides, dilation
    oh_n, top = tf_padding(ih_n, kh_n, sh, dh, padding)
    ow_n, left = tf_padding(iw_n, kw_n, sw, dw, padding)
    for oh in range(oh_n):
        for ow in range(ow_n):
            members = []
            for kh in range(kh_n):
                for kw in range(kw_n):
                    ih = oh * sh - top + kh * dh
                    iw = ow * sw - left + kw * dw
                    if 0 <= ih < ih_n and 0 <= iw < iw_n:
                        members.append((kh, kw, ih, iw))
            yield oh, ow, members


def out_hw(in_hw, kernel, strides, dilation, padding):
    return tuple(tf_padding(in_hw[a], kernel[a], strides[a], dilation[a], padding)[0] for a in range(2))


def naive_conv(kernel, in_off, in_shape, out_off, padding, strides, dilation):
    h, w, cin = in_shape
    kh_n, kw_n, _, cout = kernel.shape
    oh_n, ow_n = out_hw((h, w), (kh_n, kw_n), strides, dilation, padding)
    edges = set()
    for oh, ow, members in windows((h, w), (kh_n, kw_n), strides, dilation, padding):
        for kh, kw, ih, iw in members:
            for ci in range(cin):
                for co in range(cout):
                    src = in_off + (ih * w + iw) * cin + ci
                    tgt = out_off + (oh * ow_n + ow) * cout + co
                    edges.add((src, tgt, f32_bits(kernel[kh, kw, ci, co]), "conv"))
    return edges, (oh_n, ow_n, cout)


def naive_pool(kind, pool, in_off, in_shape, out_off, padding, strides):
    h, w, c = in_shape
    oh_n, ow_n = out_hw((h, w), pool, strides, (1, 1), padding)
    edges = set()
    for oh, ow, members in windows((h, w), pool, strides, (1, 1), padding):
        for _, _, ih, iw in members:
            for ch in range(c):
                weight = 1.0 if kind == "max_pool" else 1.0 / len(members)
                edges.add((in_off + (ih * w + iw) * c + ch, out_off + (oh * ow_n + ow) * c + ch, f32_bits(weight), kind))
    return edges, (oh_n, ow_n, c)


def naive_dense(kernel, in_off, in_shape, out_off):
    n_in, n_out = kernel.shape
    positions = math.prod(in_shape[:-1])
    edges = set()
    for p in range(positions):
        for i in range(n_in):
            for j in range(n_out):
                edges.add((in_off + p * n_in + i, out_off + p * n_out + j, f32_bits(kernel[i, j]), "dense"))
    return edges, (*in_shape[:-1], n_out)


CONV_CASES = [
    # (h, w, cin), filters, kernel, strides, dilation, padding
    ((5, 6, 2), 3, (3, 3), (1, 1), (1, 1), "valid"),
    ((5, 6, 2), 3, (3, 3), (1, 1), (1, 1), "same"),
    ((5, 6, 2), 2, (2, 2), (1, 1), (1, 1), "same"),  # total 1: 0 before, 1 after
    ((7, 5, 1), 2, (4, 2), (1, 1), (1, 1), "same"),  # total 3 rows: 1 before, 2 after
    ((7, 8, 2), 2, (3, 2), (2, 3), (1, 1), "same"),
    ((7, 8, 2), 2, (3, 3), (2, 2), (1, 1), "valid"),
    ((8, 7, 1), 3, (2, 4), (3, 2), (1, 1), "same"),
    ((7, 9, 2), 2, (3, 3), (1, 1), (2, 2), "same"),
    ((7, 9, 1), 2, (2, 3), (1, 1), (2, 3), "same"),
    ((9, 9, 2), 1, (3, 2), (1, 1), (3, 2), "valid"),
    ((3, 2, 2), 2, (5, 4), (2, 2), (1, 1), "same"),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[f"case{i}" for i in range(len(CONV_CASES))])
def test_conv2d_edges_equal_naive(case):
    in_shape, filters, kernel, strides, dilation, padding = case
    model = sequential(in_shape, [L.Conv2D(filters, kernel, strides=strides, dilation_rate=dilation,
                                           padding=padding, name="conv")])
    kern = model.get_layer("conv").get_weights()[0]
    expected, shape = naive_conv(kern, 0, in_shape, math.prod(in_shape), padding, strides, dilation)
    assert shape == tuple(model.outputs[0].shape[1:])
    got = layer_edges(walk(model), "conv")
    assert got == expected, f"missing {len(expected - got)}, extra {len(got - expected)}"


POOL_CASES = [
    # (h, w, c), pool, strides, padding
    ((6, 6, 2), (2, 2), (2, 2), "valid"),
    ((7, 5, 2), (2, 2), (2, 2), "same"),
    ((7, 8, 1), (3, 3), (2, 2), "same"),
    ((7, 8, 2), (3, 2), (1, 3), "same"),
    ((8, 7, 1), (2, 3), (3, 1), "valid"),
    ((5, 5, 3), (4, 4), (1, 1), "same"),  # total 3: 1 before, 2 after, windows of 4..16 members
]


@pytest.mark.parametrize("kind", ["max_pool", "avg_pool"])
@pytest.mark.parametrize("case", POOL_CASES, ids=[f"case{i}" for i in range(len(POOL_CASES))])
def test_pooling_edges_equal_naive(kind, case):
    in_shape, pool, strides, padding = case
    cls = L.MaxPooling2D if kind == "max_pool" else L.AveragePooling2D
    model = sequential(in_shape, [cls(pool, strides=strides, padding=padding, name="pool")])
    expected, shape = naive_pool(kind, pool, 0, in_shape, math.prod(in_shape), padding, strides)
    assert shape == tuple(model.outputs[0].shape[1:])
    got = layer_edges(walk(model), "pool")
    assert got == expected, f"missing {len(expected - got)}, extra {len(got - expected)}"
    if kind == "avg_pool" and padding == "same":
        assert len({w for _, _, w, _ in got}) > 1  # border windows really have fewer members


@pytest.mark.parametrize("in_shape, units", [((5,), 3), ((1,), 1), ((2, 3, 4), 2), ((3, 4), 5)])
def test_dense_edges_equal_naive(in_shape, units):
    model = sequential(in_shape, [L.Dense(units, name="fc")])
    kern = model.get_layer("fc").get_weights()[0]
    expected, shape = naive_dense(kern, 0, in_shape, math.prod(in_shape))
    assert shape == tuple(model.outputs[0].shape[1:])
    assert layer_edges(walk(model), "fc") == expected


def test_chain_ids_equal_naive():
    """Ids assigned by hand through conv -> pool -> flatten (alias) -> dense match the engine's."""
    in_shape = (7, 6, 2)
    model = sequential(in_shape, [
        L.Conv2D(3, (2, 3), strides=(2, 1), padding="same", name="conv"),
        L.AveragePooling2D(2, strides=1, padding="same", name="pool"),
        L.Flatten(name="flat"),
        L.Dense(4, name="fc"),
    ])
    graph = walk(model)
    off = math.prod(in_shape)
    conv_e, conv_shape = naive_conv(model.get_layer("conv").get_weights()[0], 0, in_shape, off, "same", (2, 1), (1, 1))
    pool_off = off + math.prod(conv_shape)
    pool_e, pool_shape = naive_pool("avg_pool", (2, 2), off, conv_shape, pool_off, "same", (1, 1))
    fc_off = pool_off + math.prod(pool_shape)
    fc_e, fc_shape = naive_dense(model.get_layer("fc").get_weights()[0], pool_off, (math.prod(pool_shape),), fc_off)
    assert graph.total_neurons == fc_off + math.prod(fc_shape)
    assert layer_edges(graph, "conv") == conv_e
    assert layer_edges(graph, "pool") == pool_e
    assert layer_edges(graph, "flat") == set()
    assert layer_edges(graph, "fc") == fc_e


def test_reference_padding_is_asymmetric():
    """The reference itself: TF pads the smaller half first (guards the test, not the engine)."""
    assert tf_padding(5, 2, 1, 1, "same") == (5, 0)
    assert tf_padding(5, 4, 1, 1, "same") == (5, 1)
    assert tf_padding(7, 3, 2, 1, "same") == (4, 1)
    assert tf_padding(8, 3, 2, 1, "same") == (4, 0)
    assert np.float32(1.0 / 3) == np.float32(np.float64(1) / 3)
