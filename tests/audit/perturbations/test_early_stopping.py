"""Early stopping as a defence: the peak of the reference-accuracy curve as a recommendation,
and the per-epoch evaluation that records the curve without changing the training."""

import numpy as np

from audit.perturbations import early_stopping, small_cnn
from audit.perturbations.perturbation_audit import AuditOutcome, Trial
from audit.perturbations.probes import CheckResult
from audit.perturbations.verdicts import Verdict


def test_peak_is_the_maximum_and_the_earliest_on_ties():
    assert early_stopping.peak([0.2, 0.5, 0.4, 0.5]) == (2, 0.5)
    rec = early_stopping.recommendation({"epoch_accuracy": [0.3, 0.7, 0.6, 0.4]}, "original")
    assert (rec["stop_at_epoch"], rec["of_epochs"], rec["reference_accuracy_at_peak"], rec["final_reference_accuracy"]) \
        == (2, 4, 0.7, 0.4) and rec["gain_over_final"] == 0.3
    assert early_stopping.recommendation({"epochs": 8}, "original") is None  # no curve (older run, skipped test)
    assert early_stopping.recommendation(None, "original") is None


def _accuracy(curve: list[float] | None) -> list[Verdict]:
    details = {} if curve is None else {"epoch_accuracy": curve}
    return [Verdict(CheckResult("template_snr", 0.5), None, "fail"),
            Verdict(CheckResult("reference_accuracy", curve[-1] if curve else 0.0, details=details), None, "pass")]


def test_the_recommendation_follows_the_data_the_clean_job_writes():
    outcome = AuditOutcome(_accuracy([0.5, 0.6, 0.2]), {}, {}, np.zeros(3, bool), np.arange(3))
    assert early_stopping.for_outcome(outcome)["data"] == "original"
    outcome.chosen = Trial("jpeg", {}, _accuracy([0.4, 0.8, 0.7]), 0)
    rec = early_stopping.for_outcome(outcome)
    assert rec["data"] == "sanitized:jpeg" and rec["stop_at_epoch"] == 2
    outcome.chosen = Trial("jpeg", {}, _accuracy(None), 0)  # the trial has no curve: the original's
    assert early_stopping.for_outcome(outcome)["data"] == "original"


def test_evaluating_each_epoch_records_the_curve_and_leaves_training_unchanged():
    rng = np.random.default_rng(0)
    x = rng.random((96, 12, 12, 1), dtype=np.float32)
    y = (x[:, :6].mean((1, 2, 3)) > x[:, 6:].mean((1, 2, 3))).astype(np.int64)
    plain = small_cnn.train(x, y, 2, epochs=3, batch=32, seed=1, device="cpu", augment=True, flip=False)
    watched = small_cnn.train(x, y, 2, epochs=3, batch=32, seed=1, device="cpu", augment=True, flip=False,
                              evaluate=(x[:40], y[:40]))
    assert plain.epoch_accuracy == [] and len(watched.epoch_accuracy) == 3
    assert plain.batch_accuracy == watched.batch_accuracy
    assert (small_cnn.predict(plain.model, x) == small_cnn.predict(watched.model, x)).all()
    assert watched.epoch_accuracy[-1] == small_cnn.accuracy(watched.model, x[:40], y[:40])
