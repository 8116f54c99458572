"""Thresholds from a reference set of scores, never a hard-coded constant.

Input: reference scores (n,) and, optionally, per-column scores (n, T) (one column per
timestep or denoising step), from samples taken to be non-memorized (a held-out set, or the
scored set itself when memorized pairs are a small minority). Methods:

- `fpr`: level in (0, 1): the threshold lets at most `level` of the reference through
  (flagged = score >= threshold); the target false-positive rate on the reference.
- `percentile`: level in (0, 100): the threshold is that percentile of the reference.

Output: a Calibration, stored with the run (memorization_runs table) and read back by the
training-time filter. An empty reference is an error, not a default threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

METHODS = ("fpr", "percentile")


@dataclass(frozen=True)
class Calibration:
    method: str
    level: float
    threshold: float
    reference: str                      # what the reference set was (a path, or 'scored set')
    reference_count: int
    column_thresholds: tuple[float, ...] = ()   # same rule per column (timestep / step)

    def flag(self, scores) -> np.ndarray:
        return np.asarray(scores, float) >= self.threshold

    def as_dict(self) -> dict:
        return asdict(self)


def _cut(values: np.ndarray, method: str, level: float) -> float:
    v = np.sort(np.asarray(values, float))
    if method == "percentile":
        return float(np.percentile(v, level, method="higher"))
    k = int(np.floor(level * len(v)))      # reference scores allowed at or above the threshold
    return float(np.nextafter(v[len(v) - 1 - k], np.inf)) if k < len(v) else float(v[0])


def calibrate(reference_scores, method: str, level: float, reference: str,
              reference_columns=None) -> Calibration:
    """Threshold (and per-column thresholds) of `reference_scores` by `method` at `level`."""
    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {METHODS}, not {method!r}")
    if method == "fpr" and not 0 < level < 1:
        raise ValueError(f"fpr level must be in (0, 1), got {level}")
    if method == "percentile" and not 0 < level < 100:
        raise ValueError(f"percentile level must be in (0, 100), got {level}")
    ref = np.asarray(reference_scores, float)
    ref = ref[np.isfinite(ref)]
    if len(ref) == 0:
        raise ValueError(f"no reference scores to calibrate on ({reference}); a threshold needs a reference set")
    cols: tuple[float, ...] = ()
    if reference_columns is not None:
        rc = np.asarray(reference_columns, float)
        rc = rc[np.isfinite(rc).all(1)]
        cols = tuple(_cut(rc[:, j], method, level) for j in range(rc.shape[1]))
    return Calibration(method, float(level), _cut(ref, method, level), reference, int(len(ref)), cols)
