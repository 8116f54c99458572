"""benchmarks/chart_set.py on a tiny count: shapes and labels, distinct pixels, white background
with coloured marks, the same pixels for the same seed whatever is drawn before, another seed
giving other charts, and the size check."""

import hashlib

import numpy as np
import pytest

from benchmarks import chart_set as cs


@pytest.fixture(scope="module")
def charts():
    return cs.charts(size=32, per_class=3, seed=0)


def test_shapes_labels_and_distinct_pixels(charts):
    x, y, names = charts
    assert names == list(cs.KINDS) and len(names) == 10
    assert x.dtype == np.uint8 and x.shape == (30, 32, 32, 3) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [3] * 10
    assert len({hashlib.sha1(a.tobytes()).digest() for a in x}) == len(x)


def test_white_background_and_marks(charts):
    x = charts[0].astype(int)
    white = (x.min(3) >= 250).mean(axis=(1, 2))
    assert (white > 0.1).all() and np.median(white) > 0.3  # charts on a white figure (a filled area covers most)
    sat = x.max(3) - x.min(3)
    assert ((sat > 60).mean(axis=(1, 2)) > 0.01).mean() > 0.7  # most draw coloured marks (tab10's grey and black boxes do not)


def test_deterministic_and_order_free(charts):
    x = charts[0]
    k = cs.KINDS.index("scatter")
    again = cs.ChartRenderer(32)
    again.render("pie", np.random.default_rng(7))  # an unrelated chart first: no state carried over
    assert np.array_equal(again.render("scatter", np.random.default_rng((0, k, 0))), x[3 * k])
    other = cs.charts(size=32, per_class=3, seed=1)[0]
    assert not any(np.array_equal(a, b) for a, b in zip(x, other))


def test_other_size_and_too_small():
    x, y, _ = cs.charts(size=48, per_class=1, seed=0)
    assert x.shape == (10, 48, 48, 3)
    with pytest.raises(ValueError, match="size"):
        cs.ChartRenderer(8)
