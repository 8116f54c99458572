import numpy as np
import pytest

from audit.memorization.score_calibration import calibrate


def test_fpr_threshold_flags_at_most_level_of_the_reference():
    ref = np.random.default_rng(0).normal(size=1000)
    cal = calibrate(ref, "fpr", 0.01, "held-out")
    assert cal.flag(ref).sum() <= 10
    assert cal.flag(ref).sum() >= 9  # and not far fewer: the cut sits at the quantile
    assert cal.reference_count == 1000 and cal.reference == "held-out"


def test_percentile_and_per_column_thresholds():
    ref = np.arange(1, 101, dtype=float)
    cols = np.stack([ref, ref * 10], axis=1)
    cal = calibrate(ref, "percentile", 90, "r", reference_columns=cols)
    assert cal.threshold == pytest.approx(np.percentile(ref, 90, method="higher"))
    assert cal.column_thresholds[1] == pytest.approx(10 * cal.column_thresholds[0])


@pytest.mark.parametrize("method,level", [("fpr", 0.0), ("fpr", 1.5), ("percentile", 100), ("zscore", 3)])
def test_bad_settings_are_errors(method, level):
    with pytest.raises(ValueError):
        calibrate([1.0, 2.0], method, level, "r")


def test_no_reference_is_an_error_not_a_default():
    with pytest.raises(ValueError, match="reference"):
        calibrate([], "fpr", 0.01, "nothing")
    with pytest.raises(ValueError):
        calibrate([float("nan")], "fpr", 0.01, "nothing")
