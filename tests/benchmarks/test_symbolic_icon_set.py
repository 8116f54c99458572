"""benchmarks/symbolic_icon_set.py on the real Adwaita package at 16 px: shapes, labels, no pixel
duplicates, thin dark strokes on white, seeded draws, the .symbolic.png colour decoding, and the
refusal to upscale. Skips (with the reason) when the package cannot be fetched: no network or no
apt-get (the .deb can be put in .cache/symbolic/debs by hand)."""

import hashlib

import numpy as np
import pytest

from benchmarks import symbolic_icon_set as sis


@pytest.fixture(scope="module")
def icons():
    try:
        sis.theme_root()
    except (RuntimeError, FileNotFoundError) as e:
        pytest.skip(f"adwaita-icon-theme not available: {e}")
    return sis._categories(16, 12, 20, 0, sis.CACHE)


def test_shapes_labels_and_distinct_pixels(icons):
    x, y, names, records = icons
    assert x.dtype == np.uint8 and x.shape[1:] == (16, 16, 3) and y.dtype == np.int64
    assert len(names) >= 5 and names == sorted(names)
    assert np.bincount(y, minlength=len(names)).tolist() == [12] * len(names)
    assert all(records[i]["context"] == names[y[i]] for i in range(len(y)))
    assert len({hashlib.sha1(a.tobytes()).digest() for a in x}) == len(x)
    assert not any("-rtl" in r["name"] for r in records)


def test_dark_strokes_on_white(icons):
    x = icons[0].astype(int)
    corners = np.concatenate([x[:, 0, 0], x[:, 0, -1], x[:, -1, 0], x[:, -1, -1]])
    assert np.median(corners) == 255  # white background
    assert (x.min(axis=(1, 2, 3)) < 255 - sis.BLANK_LEVEL).all()  # none blank on white
    assert (x.min(axis=(1, 2, 3)) < 100).mean() > 0.9  # nearly all drawn in the dark foreground (a few in grey)
    ink = (x.mean(3) < 128).mean(axis=(1, 2))
    assert np.median(ink) < 0.5  # line pictograms: mostly background


def test_seeded():
    try:
        a = sis.symbolic_icons(16, 5, 20, seed=3)
    except (RuntimeError, FileNotFoundError) as e:
        pytest.skip(f"adwaita-icon-theme not available: {e}")
    b = sis.symbolic_icons(16, 5, 20, seed=3)
    c = sis.symbolic_icons(16, 5, 20, seed=4)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_decode_symbolic_colours():
    px = np.array([[[0, 0, 0, 255], [255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255], [0, 0, 0, 0],
                    [0, 0, 0, 128]]], np.uint8)
    out = sis.decode_symbolic(px)[0]
    assert out[0].tolist() == list(sis.FOREGROUND)
    assert out[1].tolist() == list(sis.SUCCESS) and out[2].tolist() == list(sis.WARNING)
    assert out[3].tolist() == list(sis.ERROR) and out[4].tolist() == [255, 255, 255]
    assert (out[5] > out[0]).all() and (out[5] < 255).all()  # half coverage: between fg and white


def test_no_upscaling():
    with pytest.raises(ValueError, match="upscaling"):
        sis.symbolic_index(64)
