"""The perturbation audit of one labelled image set: tests, verdicts, sanitizer trial, re-test.

Input: an `ImageSet` (full decoded images as uint8 arrays, labels, optional embeddings) for the
data, optionally one for a clean reference, and a `PerturbationConfig`. Output: `AuditOutcome`
with the verdicts on the original data, each tried sanitizer's re-test, the chosen sanitizer
and the samples each failing test locates. Used by the Beam corpus step
(pipelines/perturbations.py) and by benchmarks/perturbations.py on in-memory data alike.

Without a reference the audit screens (`screening_audit`): the tests of
audit.perturbations.screening, whose nulls come from the data itself, give p-values and Holm's
step-down gives the verdict at family-wise level `alpha`; tests without such a null (probes
against fixed bounds, learning speed) are not run, the class template is kept as context (it
locates samples once a screening test fails). With pseudo-labels (`ImageSet.pseudo`) the
one-pixel test looks at the whole set as one group.

Tests look at an analysis crop: the central `crop` x `crop` pixels at native resolution
(never resampled: resampling erases pixel-level perturbations; smaller images are
reflect-padded). The one-pixel test looks at the whole image through its isolated
corner-colour pixels. With a reference, the feature-shift test compares the data's per-sample
features (whole images) with the reference's, and the reference-accuracy probe ranks sanitizers.
A sanitizer is applied to the whole images (orthogonal projection, which
is learned on the data, to the crops; class-wise deconvolution, whose kernels are fitted
against the reference's classes, only with a reference), then every test runs again against
thresholds calibrated on the reference sanitized the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from audit.perturbations import class_deconvolution, image_sanitizers, features as perturbation_features, probes
from audit.perturbations.config import PerturbationConfig
from audit.perturbations.screening import ScreeningData, screen
from audit.perturbations.verdicts import (Threshold, Verdict, calibrate, failing, feature_cuts, feature_outliers, judge,
                                         located_samples, robust_cuts, sanitizer_order, screening_verdicts,
                                         shift_threshold)

SANITIZER_PARAMS = {"jpeg": {"quality": 10}, "grayscale": {}, "bit_depth": {"bits": 2}, "median_filter": {"size": 3},
                    "sharpen_lowpass": {}, "orthogonal_projection": {}, "class_deconvolution": {"size": 3}}
NEEDS_REFERENCE = ("class_deconvolution",)  # fitted against the clean reference's classes


@dataclass
class ImageSet:
    images: list[np.ndarray]           # uint8 HxWxC, C the same for all
    labels: np.ndarray                 # int64 class ids
    embeddings: np.ndarray | None = None
    crops: np.ndarray | None = None    # filled by prepare(): float32 (N, crop, crop, C)
    candidates: list | None = None     # filled by prepare(): one-pixel candidates per sample
    features: dict | None = None       # filled by prepare(): scalar feature name -> values per sample
    pseudo: bool = False               # labels are k-means pseudo-labels, not classes the data came with

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: np.ndarray) -> "ImageSet":
        emb = None if self.embeddings is None else self.embeddings[idx]
        return ImageSet([self.images[i] for i in idx], self.labels[idx], emb,
                        None if self.crops is None else self.crops[idx],
                        None if self.candidates is None else [self.candidates[i] for i in idx],
                        None if self.features is None else {k: v[idx] for k, v in self.features.items()}, self.pseudo)


@dataclass
class Trial:
    sanitizer: str
    params: dict
    verdicts: list[Verdict]
    n_failed: int


@dataclass
class AuditOutcome:
    verdicts: list[Verdict]
    thresholds: dict[str, Threshold]
    located: dict[str, np.ndarray]
    feature_flags: np.ndarray          # per tested sample: a feature outside the calibrated range
    tested: np.ndarray                 # indices into the data that were tested (located is aligned with it)
    trials: list[Trial] = field(default_factory=list)
    chosen: Trial | None = None

    @property
    def failed(self) -> list[str]:
        return failing(self.verdicts)


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    if img.ndim == 2:
        img = img[:, :, None]
    h, w = img.shape[:2]
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        img = np.pad(img, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")
        h, w = img.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return img[top:top + size, left:left + size]


def features_of(img: np.ndarray) -> dict:
    return perturbation_features.sample_features(img[:, :, 0] if img.ndim == 3 and img.shape[2] == 1 else img)


def candidates_of(feats: dict) -> list[tuple]:
    """One-pixel candidates (row, col, color) from a sample's features."""
    return [(p["row"], p["col"], p["color"]) for p in feats["extreme_positions"]]


def one_pixel_candidates(img: np.ndarray) -> list[tuple]:
    return candidates_of(features_of(img))


def prepare(s: ImageSet, crop: int) -> ImageSet:
    """Fill the analysis crops, per-sample features and one-pixel candidates."""
    if s.crops is None:
        s.crops = np.stack([center_crop(im, crop) for im in s.images]).astype(np.float32) / 255.0
    if s.candidates is None or s.features is None:
        feats = [features_of(im) for im in s.images]
        s.candidates = [candidates_of(f) for f in feats]
        s.features = {c: np.array([f[c] for f in feats], np.float64) for c in perturbation_features.FEATURE_COLUMNS}
    return s


def feature_flags(data: ImageSet, reference: ImageSet | None, cfg: PerturbationConfig) -> np.ndarray:
    """Per sample: some feature outside the reference's two-sided range (each feature at
    feature_fpr / n_features), or, without a reference, a robust outlier of the data's own."""
    cols = perturbation_features.FEATURE_COLUMNS
    cuts = (feature_cuts(reference.features, cfg.feature_fpr / len(cols)) if reference is not None
            else robust_cuts(data.features))
    return np.array([bool(o) for o in feature_outliers(data.features, cuts)], bool)


def run_tests(s: ImageSet, cfg: PerturbationConfig, seed: int | None = None) -> list[probes.CheckResult]:
    prepare(s, cfg.crop)
    return probes.run_all(s.crops, s.labels, s.candidates, s.embeddings, seed=cfg.seed if seed is None else seed,
                          device=cfg.device, mlp=cfg.mlp)


def subsample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n indices, stratified by class (proportional), seeded, sorted."""
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    share = n / len(labels)
    out = np.concatenate([p[:max(1, int(round(len(p) * share)))] for p in picks])
    return np.sort(rng.permutation(out)[:n])


def bootstrap_thresholds(ref: ImageSet, n: int, cfg: PerturbationConfig) -> dict[str, Threshold]:
    """Run the tests on `cfg.bootstrap` random subsamples of the reference, each of the tested
    size (capped at 80% of the reference so subsamples differ), and calibrate."""
    size = min(n, int(0.8 * len(ref)))
    runs = []
    for b in range(cfg.bootstrap):
        idx = subsample(ref.labels, size, cfg.seed + 1 + b)
        runs.append(run_tests(ref.subset(idx), cfg, seed=cfg.seed + 100 + b))
    return calibrate(runs, cfg.z, cfg.sample_fpr)


def sanitized(s: ImageSet, name: str, params: dict, crop: int,
              reference: ImageSet | None = None) -> tuple[ImageSet, dict]:
    """(the set through sanitizer `name`, what was fitted: {} or, for class_deconvolution,
    {"kernels": {class id: (s, s) list}, "applied": [class ids]})."""
    if name == "orthogonal_projection":
        prepare(s, crop)
        crops, _ = image_sanitizers.orthogonal_projection(s.crops, s.labels, **params)
        return ImageSet(s.images, s.labels, s.embeddings, crops.astype(np.float32), s.candidates, s.features,
                        s.pseudo), {}
    if name == "class_deconvolution":
        return deconvolved(s, reference, params, crop)
    images = [image_sanitizers.sanitize_image(im, name, **params) for im in s.images]
    return ImageSet(images, s.labels, s.embeddings, pseudo=s.pseudo), {}


def deconvolved(s: ImageSet, reference: ImageSet | None, params: dict, crop: int) -> tuple[ImageSet, dict]:
    """Class-wise deconvolution: kernels fitted on the whole images when data and reference
    share one size (the poisoner's zero-padded border then counts), else on the analysis crops;
    each whole image deconvolved by its class's kernel."""
    if reference is None:
        raise ValueError("class_deconvolution needs a clean reference (perturbations.reference_shards)")
    shapes = {im.shape for im in s.images} | {im.shape for im in reference.images}
    if len(shapes) == 1:
        as_float = lambda ims: np.stack([im.reshape(im.shape[0], im.shape[1], -1) for im in ims]).astype(np.float32) / 255.0  # noqa: E731
        fit = class_deconvolution.fit_class_kernels(as_float(s.images), s.labels, as_float(reference.images),
                                                    reference.labels, params.get("size", 3), zero_border=True)
    else:
        prepare(s, crop)
        prepare(reference, crop)
        fit = class_deconvolution.fit_class_kernels(s.crops, s.labels, reference.crops, reference.labels,
                                                    params.get("size", 3), zero_border=False)
    kernels = fit["kernels"]
    images = [class_deconvolution.deconvolve_image(im, kernels[c]) if c in fit["applied"] else im
              for im, c in zip(s.images, s.labels)]
    return ImageSet(images, s.labels, s.embeddings), {
        "kernels": {int(c): np.asarray(k, float).round(6).tolist() for c, k in kernels.items() if c in fit["applied"]},
        "applied": [int(c) for c in fit["applied"]]}


def audit(data: ImageSet, reference: ImageSet | None, cfg: PerturbationConfig,
          calibrated: dict[str, dict] | None = None) -> AuditOutcome:
    """`calibrated` caches, per data version ('original' or a sanitizer name), the reference's
    thresholds and (under 'features/<version>') its per-sample features, across calls on data
    of the same size and reference (the benchmark's many runs)."""
    if reference is None:
        return screening_audit(data, cfg)
    calibrated = {} if calibrated is None else calibrated

    def thresholds_for(version: str, params: dict) -> dict[str, Threshold]:
        if version not in calibrated and version in NEEDS_REFERENCE:
            # fitted against itself the reference explains itself exactly (gain 0): the guard keeps
            # every class as it is, so the thresholds and features are the original ones
            calibrated[version] = thresholds_for("original", {})
            calibrated["features/" + version] = calibrated["features/original"]
        if version not in calibrated:
            ref = reference if version == "original" else sanitized(reference, version, params, cfg.crop)[0]
            th = bootstrap_thresholds(ref, len(data), cfg)
            prepare(ref, cfg.crop)
            th["feature_shift"] = shift_threshold(len(ref.features), len(np.unique(ref.labels)))
            calibrated[version], calibrated["features/" + version] = th, ref.features
        return calibrated[version]

    def against_reference(s: ImageSet, version: str) -> list[probes.CheckResult]:
        """The tests that compare with the reference itself (run after thresholds_for(version))."""
        return [probes.feature_shift(s.features, s.labels, calibrated["features/" + version], reference.labels),
                probes.reference_accuracy(s.crops, s.labels, reference.crops, reference.labels, cfg.seed, cfg.device)]

    tested = np.arange(len(data))
    prepare(reference, cfg.crop)
    if len(data) > int(0.8 * len(reference)):
        # statistics depend on n (probe accuracy grows with it): test at the reference's size
        tested = subsample(data.labels, int(0.8 * len(reference)), cfg.seed)
        data = data.subset(tested)
    prepare(data, cfg.crop)
    thresholds = thresholds_for("original", {})
    verdicts = judge(run_tests(data, cfg) + against_reference(data, "original"), thresholds)
    outcome = AuditOutcome(verdicts, thresholds, located_samples(verdicts, data.labels),
                           feature_flags(data, reference, cfg), tested)
    if not (cfg.sanitize and outcome.failed):
        return outcome
    for name in sanitizer_order(outcome.failed)[:cfg.max_sanitizers]:
        params = SANITIZER_PARAMS.get(name, {})
        clean, fitted = sanitized(data, name, params, cfg.crop, reference)
        trial_thresholds = thresholds_for(name, params)
        trial_verdicts = judge(run_tests(clean, cfg) + against_reference(clean, name), trial_thresholds)
        outcome.trials.append(Trial(name, {**params, **fitted}, trial_verdicts, len(failing(trial_verdicts))))
    outcome.chosen = choose(outcome.trials, teaches(outcome.verdicts))
    return outcome


def screening_results(s: ImageSet, cfg: PerturbationConfig) -> list[probes.CheckResult]:
    """The screening tests (audit.perturbations.screening) plus the class template as context."""
    prepare(s, cfg.crop)
    crops8 = np.round(s.crops * 255).astype(np.uint8)
    acquisition = np.column_stack([s.features[c] for c in perturbation_features.FEATURE_COLUMNS])
    whole = [im if im.ndim == 3 else im[:, :, None] for im in s.images]
    images = whole if len({im.shape for im in whole}) == 1 else None  # one size: the one-pixel test sees it all
    out = screen(ScreeningData(crops8, s.labels, s.pseudo, acquisition, images), seed=cfg.seed)
    return out + [probes.template_snr(s.crops, s.labels)]


def screening_audit(data: ImageSet, cfg: PerturbationConfig) -> AuditOutcome:
    """No reference (module doc): screening verdicts; on a failing one, sanitizers that need no
    reference are tried until one leaves no screening test failing (most specific first)."""
    prepare(data, cfg.crop)
    dims = int(np.prod(data.crops.shape[1:]))
    verdicts = screening_verdicts(screening_results(data, cfg), cfg.alpha, dims)
    outcome = AuditOutcome(verdicts, {}, located_samples(verdicts, data.labels), feature_flags(data, None, cfg),
                           np.arange(len(data)))
    if not (cfg.sanitize and outcome.failed):
        return outcome
    order = [n for n in sanitizer_order(outcome.failed) if n not in NEEDS_REFERENCE]
    for name in order[:cfg.max_sanitizers]:
        params = SANITIZER_PARAMS.get(name, {})
        clean, fitted = sanitized(data, name, params, cfg.crop)
        trial = screening_verdicts(screening_results(clean, cfg), cfg.alpha, dims)
        outcome.trials.append(Trial(name, {**params, **fitted}, trial, len(failing(trial))))
        if outcome.trials[-1].n_failed == 0:
            break
    outcome.chosen = choose(outcome.trials)
    return outcome


def teaches(verdicts: list[Verdict]) -> float:
    """The reference accuracy among these verdicts (nan without one)."""
    return next((v.result.statistic for v in verdicts if v.result.test == "reference_accuracy"
                 and not v.result.skipped), float("nan"))


def choose(trials: list[Trial], original: float = float("nan"), tolerance: float = 0.02) -> Trial:
    """With a reference, when some sanitizer's data teaches the small CNN more about the clean
    reference than the original data did (by more than `tolerance`): the one that teaches most,
    and among those within `tolerance` of it the fewest failing re-tests. Otherwise (no reference,
    or the original already teaches as much: the poison does not stop this CNN, so accuracy
    cannot rank the sanitizers): the fewest failing re-tests. Ties go to the earliest tried."""
    accs = [teaches(t.verdicts) for t in trials]
    finite = [a for a in accs if not np.isnan(a)]
    if not finite or not max(finite) > (original if not np.isnan(original) else -1.0) + tolerance:
        return min(trials, key=lambda t: t.n_failed)
    best = max(finite)
    near = [t for t, a in zip(trials, accs) if not np.isnan(a) and a >= best - tolerance]
    return min(near, key=lambda t: t.n_failed)
