"""From test results to verdicts: thresholds, affected classes, located samples, the sanitizer.

Input: `CheckResult`s of `audit.perturbations.probes` on the data, and the same tests on
bootstrap subsamples of a clean reference (or nothing: default bounds). Output: thresholds,
perturbation_tests rows, the per-sample location scores and cuts, and the ordered sanitizers to
try for the failing tests. A test whose result is skipped gets verdict 'skipped', never 'pass'.

Thresholds. With a reference, each test's threshold is mean + z * sd of its statistic over the
reference subsamples (for probe accuracies sd also holds the binomial error p(1-p)/n of the
held-out estimate on the data, which subsamples of one reference understate), and at least mean + the test's minimum margin (so a reference whose
bootstrap barely varies cannot make every tiny difference a failure). Without one, the
default bounds below apply: Zhu et al. (2024) flag data whose simple-model accuracy is over 0.7;
they are meaningful for natural images, not for data that is linearly easy when clean (MNIST:
configure a reference). The audit uses them only for locating samples: without a reference its
verdict is the screening one (`screening_verdicts`: audit.perturbations.screening's p-values,
Holm's step-down at the configured family-wise level); tests without a data-derived null are
then reported as 'context' (their statistic, no verdict).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from audit.perturbations.probes import CheckResult
from audit.perturbations.screening import holm

DEFAULT_BOUNDS = {
    "linear_probe_pixels": 0.7, "mlp_probe_pixels": 0.7, "linear_probe_residual": 0.7,
    "mlp_probe_residual": 0.7, "linear_probe_spectrum": 0.7, "template_snr": 0.1, "one_pixel": 0.8,
    "pixel_minus_embedding_probe": 0.1,
}
MIN_MARGIN = {"template_snr": 0.01, "one_pixel": 0.2, "learning_speed": 0.02}
ACCURACY_MARGIN = 0.03
NO_VERDICT = {"linear_probe_embedding",  # context for the gap test, not evidence itself
              "reference_accuracy"}     # what the data teaches on the clean reference: ranks sanitizers

# Sanitizers to try, in order, per failing test (most specific evidence first).
SANITIZERS_FOR = {
    "one_pixel": ["median_filter", "class_deconvolution"],
    "linear_probe_spectrum": ["class_deconvolution", "sharpen_lowpass", "jpeg"],
    "template_snr": ["orthogonal_projection", "jpeg"],
    "linear_probe_residual": ["jpeg", "orthogonal_projection"],
    "mlp_probe_residual": ["jpeg", "median_filter"],
    "linear_probe_pixels": ["orthogonal_projection", "jpeg"],
    "mlp_probe_pixels": ["jpeg", "orthogonal_projection"],
    "pixel_minus_embedding_probe": ["jpeg", "orthogonal_projection"],
    "learning_speed": ["jpeg", "class_deconvolution", "sharpen_lowpass", "grayscale"],
    "feature_shift": ["jpeg", "median_filter", "bit_depth"],  # pixel statistics moved: squeeze them
    "removed_vs_kept": ["bit_depth", "median_filter", "jpeg"],  # the screening tests: what the kept view keeps
    "removed_spectrum_vs_kept": ["jpeg", "sharpen_lowpass", "median_filter"],
}
PRIORITY = list(SANITIZERS_FOR)


@dataclass
class Threshold:
    value: float
    source: str                 # 'reference' or 'default'
    class_value: float          # for per-class statistics
    sample_cut: float | None    # per-sample score cut (tests that locate)


@dataclass
class Verdict:
    result: CheckResult
    threshold: Threshold | None
    verdict: str
    affected: list[int] = field(default_factory=list)
    located: np.ndarray | None = None   # bool per sample, for tests that locate
    p_adjusted: float = float("nan")    # screening: Holm-adjusted p-value (family of the screening tests)


def margin(test: str) -> float:
    return MIN_MARGIN.get(test, ACCURACY_MARGIN)


def calibrate(reference_runs: list[list[CheckResult]], z: float = 3.0, sample_fpr: float = 0.01) -> dict[str, Threshold]:
    """Thresholds from the same tests run on clean reference subsamples (see module doc)."""
    by_test: dict[str, list[CheckResult]] = {}
    for run in reference_runs:
        for r in run:
            if not r.skipped and not math.isnan(r.statistic):
                by_test.setdefault(r.test, []).append(r)
    out = {}
    for test, results in by_test.items():
        stats = np.array([r.statistic for r in results])
        classes = np.array([v for r in results for v in r.per_class.values()]) if results[0].per_class else stats
        sd = stats.std(ddof=1 if len(stats) > 1 else 0)
        n_heldout = results[0].details.get("n_heldout")
        if n_heldout:  # an accuracy: add the data's own binomial error, which overlapping subsamples miss
            p = float(np.clip(stats.mean(), 0.0, 1.0))
            sd = math.sqrt(sd ** 2 + p * (1 - p) / n_heldout)
        value = float(max(stats.mean() + z * sd, stats.mean() + margin(test)))
        class_value = float(max(classes.mean() + z * classes.std(), classes.mean() + margin(test)))
        scores = [r.sample_scores for r in results if r.sample_scores is not None]
        cut = float(np.quantile(np.concatenate(scores), 1 - sample_fpr)) if scores else None
        if test == "one_pixel" and cut is not None:
            cut = max(cut, 0.5)  # a binary score: only a real match locates
        out[test] = Threshold(value, "reference", max(class_value, value), cut)
    return out


def default_thresholds(n_dims: int) -> dict[str, Threshold]:
    """Bounds without a reference. The template score's cut is 4 standard deviations of the
    cosine of independent residuals (1/sqrt(dims))."""
    cuts = {"template_snr": 4 / math.sqrt(max(n_dims, 1)), "one_pixel": 0.5}
    return {t: Threshold(v, "default", v, cuts.get(t)) for t, v in DEFAULT_BOUNDS.items()}


def shift_threshold(n_features: int, n_classes: int, alpha: float = 0.001) -> Threshold:
    """The feature-shift test's bounds from Kolmogorov's distribution: the dataset statistic at
    family-wise false-positive rate alpha over the features (Bonferroni), each class at alpha over
    features x classes. No bootstrap: the data is compared with the reference itself."""
    from scipy.special import kolmogi
    value = float(kolmogi(alpha / max(n_features, 1)))
    return Threshold(value, "kolmogorov", float(kolmogi(alpha / max(n_features * n_classes, 1))), None)


def judge(results: list[CheckResult], thresholds: dict[str, Threshold]) -> list[Verdict]:
    out = []
    for r in results:
        th = thresholds.get(r.test)
        if r.skipped or r.test in NO_VERDICT:
            out.append(Verdict(r, th, "skipped" if r.skipped else "pass"))
            continue
        if th is None:
            r.skipped = "no threshold: configure reference_shards (no default bound for this test)"
            out.append(Verdict(r, None, "skipped"))
            continue
        failed = r.statistic > th.value
        affected = sorted(c for c, v in r.per_class.items() if v > th.class_value) if failed else []
        located = None
        if r.sample_scores is not None and th.sample_cut is not None:
            located = r.sample_scores > th.sample_cut
        out.append(Verdict(r, th, "fail" if failed else "pass", affected, located))
    return out


def screening_verdicts(results: list[CheckResult], alpha: float, n_dims: int) -> list[Verdict]:
    """Verdicts without a reference: tests with a p-value (audit.perturbations.screening) fail when
    Holm's step-down rejects them at family-wise level `alpha`; affected classes: those whose own
    (Bonferroni over classes) p-value is <= alpha. Tests without a p-value are 'context': their
    statistic and, once a screening test fails, their located samples at the default cuts."""
    cuts = default_thresholds(n_dims)
    tested = {r.test: r.p_value for r in results if not r.skipped and not math.isnan(r.p_value)}
    adjusted = holm(tested, alpha)
    out = []
    for r in results:
        th = Threshold(float("nan"), "screening", float("nan"), cuts[r.test].sample_cut if r.test in cuts else None)
        located = r.sample_scores > th.sample_cut if r.sample_scores is not None and th.sample_cut is not None else None
        if r.skipped:
            out.append(Verdict(r, th, "skipped"))
        elif r.test not in adjusted:
            out.append(Verdict(r, th, "context", located=located))
        else:
            p_adj, rejected = adjusted[r.test]
            class_p = r.details.get("class_p_values", {})
            affected = sorted(int(c) for c, p in class_p.items() if p <= alpha) if rejected else []
            out.append(Verdict(r, th, "fail" if rejected else "pass", affected, located, p_adj))
    return out


def failing(verdicts: list[Verdict]) -> list[str]:
    return [v.result.test for v in verdicts if v.verdict == "fail"]


def sanitizer_order(failed: list[str]) -> list[str]:
    """Sanitizers to try for these failing tests, most specific evidence first, no repeats."""
    order: list[str] = []
    for test in sorted(failed, key=lambda t: PRIORITY.index(t) if t in PRIORITY else len(PRIORITY)):
        for name in SANITIZERS_FOR.get(test, ["jpeg"]):
            if name not in order:
                order.append(name)
    return order


def located_samples(verdicts: list[Verdict], y: np.ndarray) -> dict[str, np.ndarray]:
    """Once any test fails, every test that can locate (a per-sample score and a cut) names
    the samples over its cut, within the classes the failing tests point at (all classes when
    they point at none). Clean verdicts locate nothing."""
    if not failing(verdicts):
        return {}
    affected = sorted({c for v in verdicts if v.verdict == "fail" for c in v.affected})
    out = {}
    for v in verdicts:
        if v.located is None:
            continue
        out[v.result.test] = v.located & np.isin(y, affected) if affected else v.located.copy()
    return out


def verdict_rows(verdicts: list[Verdict], *, run_id: str, data: str, label_source: str, labels: dict[int, str],
              n_samples: int) -> list[dict]:
    """perturbation_tests rows: one dataset row per test plus one row per class."""
    rows = []
    for v in verdicts:
        r, th = v.result, v.threshold
        details = {k: val for k, val in r.details.items() if k not in ("null", "class_p_values")}
        if r.skipped:
            details["skipped"] = r.skipped
        screening = th is not None and th.source == "screening"
        class_p = {int(c): p for c, p in r.details.get("class_p_values", {}).items()}
        base = {"run_id": run_id, "data": data, "test": r.test, "label_source": label_source,
                "n_samples": n_samples, "threshold_source": th.source if th else None,
                "mode": "screening" if screening else "reference"}
        rows.append({**base, "scope": "dataset", "label": None, "statistic": _num(r.statistic),
                     "threshold": _num(th.value) if th else None, "verdict": v.verdict,
                     "p_value": _num(r.p_value), "p_adjusted": _num(v.p_adjusted), "null_model": r.details.get("null"),
                     "affected_classes": [labels.get(c, str(c)) for c in v.affected],
                     "n_located": int(v.located.sum()) if v.located is not None else None,
                     "details_json": json.dumps(details, sort_keys=True, default=str)})
        for c, stat in sorted(r.per_class.items()):
            verdict = v.verdict if v.verdict in ("skipped", "context") else ("fail" if c in v.affected else "pass")
            rows.append({**base, "scope": "class", "label": labels.get(c, str(c)), "statistic": _num(stat),
                         "threshold": _num(th.class_value) if th else None, "verdict": verdict,
                         "p_value": _num(class_p.get(c, float("nan"))), "p_adjusted": None, "null_model": None,
                         "affected_classes": None, "n_located": None, "details_json": None})
    return rows


def _num(v: float) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


# ---- per-sample feature flags -------------------------------------------------------------

def feature_cuts(reference: dict[str, np.ndarray], fpr: float) -> dict[str, tuple[float, float]]:
    """Two-sided cuts per feature from clean reference values: each side flags fpr/2 of them
    (blur lowers high-frequency features, noise raises them)."""
    return {name: (float(np.quantile(v, fpr / 2)), float(np.quantile(v, 1 - fpr / 2)))
            for name, v in reference.items() if len(v)}


def robust_cuts(values: dict[str, np.ndarray], z: float = 6.0) -> dict[str, tuple[float, float]]:
    """Cuts from the data's own distribution when there is no reference: median +- z robust
    standard deviations (1.4826 MAD). Finds a perturbed minority, not a perturbed whole."""
    out = {}
    for name, v in values.items():
        if not len(v):
            continue
        med = float(np.median(v))
        sd = 1.4826 * float(np.median(np.abs(v - med))) or float(np.std(v)) or 1e-12
        out[name] = (med - z * sd, med + z * sd)
    return out


def feature_outliers(values: dict[str, np.ndarray], cuts: dict[str, tuple[float, float]]) -> list[list[str]]:
    """Per sample: 'name=value' for each feature outside its cuts."""
    n = len(next(iter(values.values()))) if values else 0
    out: list[list[str]] = [[] for _ in range(n)]
    for name, (lo, hi) in cuts.items():
        v = values[name]
        for i in np.flatnonzero((v < lo) | (v > hi)):
            out[i].append(f"{name}={v[i]:.4g}")
    return out
