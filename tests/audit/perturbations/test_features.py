"""Per-sample perturbation features on real demo-shard JPEGs: what each poison family shifts."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from audit.perturbations.features import (
    FEATURE_COLUMNS,
    MAX_SIDE,
    central_crop,
    feature_batch,
    hf_energy_ratio,
    noise_sigma,
    sample_features,
)
from tests.demo_images import demo_images

JPEG_KEYS = ("jpeg_residual_q90", "jpeg_residual_q75", "jpeg_residual_q50")


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for _, data, _, _ in demo_images(24)]


@pytest.fixture(scope="module")
def detailed(images) -> list[np.ndarray]:
    """Demo images with real texture (not near-flat clipart) and no isolated corner pixels."""
    out = [im for im in images if sample_features(im)["hf_energy_ratio"] > 2e-3
           and sample_features(im)["n_isolated_extreme"] == 0]
    assert len(out) >= 5, "the demo sample should hold several textured images"
    return out


def uniform_noise(img: np.ndarray, seed: int = 0, amp: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img.astype(np.int16) + rng.integers(-amp, amp + 1, img.shape), 0, 255).astype(np.uint8)


def test_columns_types_and_determinism(images):
    f = sample_features(images[0])
    assert set(f) == set(FEATURE_COLUMNS) | {"extreme_positions"}
    for k in FEATURE_COLUMNS:
        assert type(f[k]) is (int if k == "n_isolated_extreme" else float), k
        assert np.isfinite(f[k]), k
    assert sample_features(images[0].copy()) == f
    assert feature_batch(images[:3]) == [sample_features(im) for im in images[:3]]


def test_additive_noise_raises_residual_and_noise_features(images):
    """Class-wise / error-minimizing noise is L-inf 8/255 additive: JPEG cannot keep it."""
    for img in images[:12]:
        clean, noisy = sample_features(img), sample_features(uniform_noise(img))
        for k in JPEG_KEYS:
            assert noisy[k] > clean[k] + 0.5, (k, clean[k], noisy[k])
        assert noisy["noise_sigma"] > clean["noise_sigma"] + 1.0
        assert noisy["hf_energy_ratio"] > clean["hf_energy_ratio"]
        assert noisy["laplacian_std"] > clean["laplacian_std"]
        assert noisy["jpeg_residual_q50"] >= noisy["jpeg_residual_q75"] >= noisy["jpeg_residual_q90"]


def test_blur_lowers_high_frequency_and_laplacian(detailed):
    """A 3x3 blur filter (CUDA's class-wise convolutions) removes high frequencies."""
    for img in detailed:
        clean, blurred = sample_features(img), sample_features(cv2.blur(img, (3, 3)))
        assert blurred["hf_energy_ratio"] < clean["hf_energy_ratio"] / 3
        assert blurred["laplacian_mean_abs"] < clean["laplacian_mean_abs"]
        assert blurred["laplacian_std"] < 0.7 * clean["laplacian_std"]


def test_hf_energy_ratio_matches_per_block_dct(images):
    luma = cv2.cvtColor(images[1], cv2.COLOR_RGB2GRAY).astype(np.float32)[:123, :250]
    energy = np.zeros((8, 8))
    for r in range(0, 120, 8):
        for c in range(0, 248, 8):
            energy += cv2.dct(np.ascontiguousarray(luma[r:r + 8, c:c + 8])).astype(np.float64) ** 2
    uv = np.add.outer(np.arange(8), np.arange(8))
    expected = energy[uv >= 8].sum() / (energy.sum() - energy[0, 0])
    assert hf_energy_ratio(luma) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("sigma", [2.0, 5.0, 10.0])
def test_noise_sigma_recovers_gaussian_noise(sigma):
    rng = np.random.default_rng(1)
    base = cv2.GaussianBlur(rng.uniform(60, 190, (256, 256)).astype(np.float32), (0, 0), 6)  # smooth content
    assert noise_sigma(base) < 0.5
    assert noise_sigma(base + rng.normal(0, sigma, base.shape).astype(np.float32)) == pytest.approx(sigma, rel=0.05)


def test_laplacian_stats_on_gaussian_noise():
    """Laplacian of i.i.d. N(0, s^2) pixels: N(0, 20 s^2) (kernel squares sum to 1+1+1+1+16),
    excess kurtosis 0, mean |L| = sqrt(2/pi) sqrt(20) s."""
    rng = np.random.default_rng(2)
    f = sample_features(np.clip(np.rint(rng.normal(128, 10, (256, 256))), 0, 255).astype(np.uint8))
    assert f["laplacian_std"] == pytest.approx(10 * np.sqrt(20), rel=0.03)
    assert f["laplacian_mean_abs"] == pytest.approx(np.sqrt(2 / np.pi) * 10 * np.sqrt(20), rel=0.03)
    assert abs(f["laplacian_kurtosis"]) < 0.1
    assert f["noise_sigma"] == pytest.approx(10, rel=0.05)


def test_extreme_fractions_exact():
    img = np.full((16, 16, 3), 100, np.uint8)
    img[:4] = 0  # 64 pixels x 3 channels
    img[4, :8, 0] = 255  # 8 values
    f = sample_features(img)
    assert f["extreme_low_fraction"] == 192 / 768
    assert f["extreme_high_fraction"] == 8 / 768


def test_one_pixel_shortcut_found_with_position_and_colour(detailed):
    img = detailed[0].copy()
    h, w = img.shape[:2]
    r, c = h // 2 + 3, w // 3 + 1
    img[r, c] = (255, 0, 0)
    f = sample_features(img)
    assert f["n_isolated_extreme"] >= 1
    first = f["extreme_positions"][0]
    assert (first["row"], first["col"], first["color"]) == (r, c, "#ff0000")
    assert first["contrast"] >= 64
    # in a dark neighbourhood a white pixel is found too, at the image border included
    img2 = np.full((40, 40, 3), 30, np.uint8)
    img2[0, 17] = 255
    img2[25, 5] = (0, 255, 255)
    pos = sample_features(img2)["extreme_positions"]
    assert [(p["row"], p["col"], p["color"]) for p in pos] == [(0, 17, "#ffffff"), (25, 5, "#00ffff")]
    assert [p["contrast"] for p in pos] == [225.0, 225.0]


@pytest.mark.parametrize("low, counted", [(126, True), (128, True), (129, False)])
def test_isolation_uses_median_of_8_neighbours_and_inclusive_threshold(low, counted):
    """Centre R=255 with 4 neighbours at R=254 and 4 at R=low: the median of the 8 neighbours is
    (low + 254) / 2, so the contrast is 64.5, 64.0, 63.5 (the 9-pixel or upper median would give
    contrast 1). G and B are 0 everywhere: the L-inf is taken over channels."""
    img = np.zeros((20, 20, 3), np.uint8)
    img[..., 0] = 128
    img[9:12, 9:12, 0] = low
    img[9, 9:12, 0] = 254
    img[10, 9, 0] = 254
    img[10, 10] = (255, 0, 0)
    f = sample_features(img)
    assert f["n_isolated_extreme"] == int(counted)
    if counted:
        assert f["extreme_positions"] == [{"row": 10, "col": 10, "color": "#ff0000", "contrast": 255 - (low + 254) / 2}]


def test_isolated_extremes_match_brute_force():
    rng = np.random.default_rng(3)
    img = rng.choice(np.array([0, 100, 255], np.uint8), size=(30, 41, 3), p=[0.35, 0.3, 0.35])
    pad = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="reflect").astype(float)  # reflect = OpenCV REFLECT_101
    expected = []
    for r in range(30):
        for c in range(41):
            if not np.all((img[r, c] == 0) | (img[r, c] == 255)):
                continue
            nb = [pad[r + 1 + dr, c + 1 + dc] for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc]
            contrast = np.abs(img[r, c] - np.median(nb, axis=0)).max()
            if contrast >= 64:
                expected.append((-contrast, r, c))
    f = sample_features(img)
    assert f["n_isolated_extreme"] == len(expected) > 8
    assert [(-p["contrast"], p["row"], p["col"]) for p in f["extreme_positions"]] == sorted(expected)[:8]


def test_flat_corner_colour_regions_are_not_isolated(images):
    """White background and a solid black square are corner colours; only the square's 4 corner
    pixels (3 black and 5 white neighbours: median white) meet the definition, its edges do not."""
    img = np.full((64, 64, 3), 255, np.uint8)
    img[10:30, 10:30] = 0
    f = sample_features(img)
    assert f["n_isolated_extreme"] == 4
    assert {(p["row"], p["col"]) for p in f["extreme_positions"]} == {(10, 10), (10, 29), (29, 10), (29, 29)}
    img[:, :40] = 0  # half-plane: no pixel has a majority of other-coloured neighbours
    assert sample_features(img)["n_isolated_extreme"] == 0
    # adding noise that avoids 0/255 never creates corner pixels
    noisy = np.clip(uniform_noise(images[2]), 1, 254).astype(np.uint8)
    assert sample_features(noisy)["n_isolated_extreme"] == 0


def test_large_image_uses_central_crop_with_original_coordinates(images):
    big = cv2.resize(images[0], (900, 700), interpolation=cv2.INTER_NEAREST)  # test image only
    big = uniform_noise(big, amp=20)
    crop, r0, c0 = central_crop(big, MAX_SIDE)
    assert (r0, c0) == (88, 192) and crop.shape == (512, 512, 3)  # (700-512)//2=94 -> 88 on the 8-grid
    marked = big.copy()
    marked[r0 + 300, c0 + 400] = (0, 0, 255)  # inside the crop
    marked[5, 5] = (255, 0, 0)  # outside the crop: not analysed
    f = sample_features(marked)
    assert [(p["row"], p["col"], p["color"]) for p in f["extreme_positions"]] == [(r0 + 300, c0 + 400, "#0000ff")]
    g = sample_features(np.ascontiguousarray(marked[r0:r0 + 512, c0:c0 + 512]))
    assert {k: f[k] for k in FEATURE_COLUMNS} == {k: g[k] for k in FEATURE_COLUMNS}
    assert g["extreme_positions"][0]["row"] == 300 and g["extreme_positions"][0]["col"] == 400


def test_gray_and_rgb(images):
    gray = cv2.cvtColor(images[3], cv2.COLOR_RGB2GRAY)
    fg = sample_features(gray)
    assert sample_features(gray[:, :, None]) == fg
    rgb = sample_features(np.repeat(gray[:, :, None], 3, axis=2))
    for k in FEATURE_COLUMNS:
        assert rgb[k] == pytest.approx(fg[k], rel=1e-4, abs=1e-6), k
    g = gray.copy()
    g[:] = np.clip(g, 20, 200)
    g[50, 60] = 0
    pos = sample_features(g)["extreme_positions"]
    assert pos[0]["row"] == 50 and pos[0]["col"] == 60 and pos[0]["color"] == "#000000"


def test_constant_image_is_valid_and_flat():
    f = sample_features(np.full((32, 48, 3), 128, np.uint8))
    assert f["hf_energy_ratio"] == 0.0 and f["laplacian_std"] == 0.0 and f["laplacian_kurtosis"] == 0.0
    assert f["noise_sigma"] == 0.0 and f["jpeg_residual_q50"] < 0.5


@pytest.mark.parametrize("bad", [
    np.zeros((1, 1, 3), np.uint8),
    np.zeros((0, 0, 3), np.uint8),
    np.zeros((5, 100, 3), np.uint8),
    np.zeros((64, 64, 3), np.float32),
    np.zeros((64, 64, 4), np.uint8),
    np.zeros((64,), np.uint8),
])
def test_invalid_images_raise_value_error(bad):
    with pytest.raises(ValueError):
        sample_features(bad)
    with pytest.raises(ValueError):
        feature_batch([np.zeros((16, 16, 3), np.uint8), bad])
