"""Dataset and class tests for availability ("unlearnable") perturbations.

Input: float32 images (N, H, W, C) in [0, 1] of one common size (the analysis crops), int64
labels (from metadata or k-means pseudo-labels), optionally per-sample embeddings and the
one-pixel candidates found by the streaming feature pass. Output: one `CheckResult` per test:
a dataset statistic, the same statistic per class, and (for tests that can locate) a
per-sample suspicion score, higher = more suspicious. Tests never raise on data they cannot
judge: a result with statistic NaN and a `skipped` reason is returned instead (too few
samples, a single class).

The tests (each is what a family of poisons cannot hide):
- probes (Zhu et al. 2024): held-out accuracy of a linear (ridge) and a one-hidden-layer MLP
  classifier on raw pixels, on high-pass residuals, and on the residuals' log power spectrum;
  compared with a probe on semantic embeddings where those exist. Shortcuts make the pixel or
  residual probe accurate out of proportion to what the content allows.
- class-template SNR: energy of each class's mean high-pass residual (bias-corrected) relative
  to the per-sample residual energy. Additive class-wise noise (class-wise, LSP, OPS) is a
  template shared by the class; clean residuals average out.
- one-pixel: share of a class carrying the exact same corner-colour pixel at the same position,
  minus the share of other classes that carry it (Wu et al. 2023's shortcut).
- learning speed: mean training-batch accuracy of a small CNN in its first epoch, and each
  sample's loss after it (early-loss rank locates what was learned first).
- feature shift (needs a clean reference of the same source): two-sample Kolmogorov-Smirnov
  distance between the data's and the reference's per-sample features (JPEG residuals,
  Laplacian, noise, share of saturated values, ...), dataset-wide and per class. A poison too
  weak against the content for any probe still moves these distributions (on clip art, LSP's
  patch noise turns the white background's exact 255s into 249-254s).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from audit.perturbations import small_cnn

MIN_PER_CLASS = 5


@dataclass
class CheckResult:
    test: str
    statistic: float
    per_class: dict[int, float] = field(default_factory=dict)
    sample_scores: np.ndarray | None = None
    details: dict = field(default_factory=dict)
    skipped: str = ""
    p_value: float = float("nan")  # screening tests (audit.perturbations.screening): from a data-derived null


def usable(y: np.ndarray) -> str:
    """Why the labels cannot support a class test, or '' when they can."""
    counts = Counter(np.asarray(y).tolist())
    if len([c for c, n in counts.items() if n >= MIN_PER_CLASS]) < 2:
        return f"needs at least 2 classes with >= {MIN_PER_CLASS} samples (have {dict(counts)})"
    return ""


# ---- features ---------------------------------------------------------------------------

def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(0, 3, 1, 2)


def median_residual(x: np.ndarray) -> np.ndarray:
    """x minus its 3x3 median (reflect padding): keeps noise and isolated pixels, drops edges
    and flat regions far better than a linear high-pass does. Same shape as x."""
    t = nchw(x)
    padded = torch.nn.functional.pad(t, (1, 1, 1, 1), mode="reflect")
    n, c, h, w = t.shape
    patches = padded.unfold(2, 3, 1).unfold(3, 3, 1).reshape(n, c, h, w, 9)
    return (t - patches.median(-1).values).permute(0, 2, 3, 1).numpy()


def log_spectrum(r: np.ndarray) -> np.ndarray:
    """Per-sample log power spectrum of the residual (real 2-D FFT, mean over channels):
    a convolution or an autoregressive filter multiplies it by a class-specific response."""
    spec = np.abs(np.fft.rfft2(r, axes=(1, 2))) ** 2
    return np.log(spec.mean(axis=3) + 1e-8).reshape(len(r), -1).astype(np.float32)


def flat(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32)


# ---- probes -----------------------------------------------------------------------------

def stratified_split(y: np.ndarray, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = max(1, int(round(len(idx) * holdout)))
        test.extend(idx[:k])
        train.extend(idx[k:])
    return np.sort(np.array(train)), np.sort(np.array(test))


def standardize(a: np.ndarray, b: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    mu, sd = a.mean(0), a.std(0) + 1e-6
    return torch.from_numpy((a - mu) / sd), torch.from_numpy((b - mu) / sd)


def ridge_predict(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, n_classes: int,
                  lam: float = 1.0) -> np.ndarray:
    """One-vs-rest ridge regression on standardized features, solved in whichever of the
    primal or dual forms is smaller. lam is relative to the mean feature variance (1)."""
    a, b = standardize(xtr, xte)
    a, b = a.double(), b.double()
    t = torch.full((len(a), n_classes), -1.0, dtype=torch.float64)
    t[torch.arange(len(a)), torch.from_numpy(ytr)] = 1.0
    reg = lam * a.shape[1]
    if a.shape[1] <= a.shape[0]:
        w = torch.linalg.solve(a.T @ a + reg * torch.eye(a.shape[1], dtype=a.dtype), a.T @ t)
    else:
        w = a.T @ torch.linalg.solve(a @ a.T + reg * torch.eye(a.shape[0], dtype=a.dtype), t)
    return (b @ w).argmax(1).numpy()


def mlp_predict(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, n_classes: int,
                hidden: int = 64, epochs: int = 10, seed: int = 0) -> np.ndarray:
    a, b = standardize(xtr, xte)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(a.shape[1], hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, n_classes))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    yt = torch.from_numpy(ytr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(a), generator=gen)
        for i in range(0, len(a), 256):
            idx = order[i:i + 256]
            loss = torch.nn.functional.cross_entropy(net(a[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return net(b).argmax(1).numpy()


def probe(name: str, feats: np.ndarray, y: np.ndarray, kind: str, seed: int = 0,
          folds: int = 0) -> CheckResult:
    """Held-out accuracy of a linear ('ridge') or 'mlp' probe; per class: held-out recall.
    folds=0: linear probes use 5-fold cross-validation (every sample held out once, so the
    statistic varies little between datasets), MLPs one 30% hold-out (cost)."""
    why = usable(y)
    if why:
        return CheckResult(name, float("nan"), skipped=why)
    classes, yi = np.unique(y, return_inverse=True)
    folds = folds or (5 if kind == "ridge" else 1)
    predict = ridge_predict if kind == "ridge" else mlp_predict
    hit, truth = [], []
    for tr, te in fold_splits(yi, folds, seed):
        pred = predict(feats[tr], yi[tr], feats[te], len(classes))
        hit.append(pred == yi[te])
        truth.append(yi[te])
    hit, truth = np.concatenate(hit), np.concatenate(truth)
    per_class = {int(classes[c]): float(hit[truth == c].mean()) for c in range(len(classes))}
    return CheckResult(name, float(hit.mean()), per_class,
                      details={"n_heldout": int(len(hit)), "folds": folds, "model": kind,
                               "chance": float(np.bincount(yi).max() / len(yi))})


def fold_splits(yi: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds; folds=1 means a single 30% hold-out."""
    if folds == 1:
        return [stratified_split(yi, 0.3, seed)]
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(yi), np.int64)
    for c in np.unique(yi):
        idx = rng.permutation(np.flatnonzero(yi == c))
        fold_of[idx] = np.arange(len(idx)) % folds
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(folds)]


def probe_tests(x: np.ndarray, y: np.ndarray, embeddings: np.ndarray | None = None,
                seed: int = 0, mlp: bool = True) -> list[CheckResult]:
    """Linear and MLP probes on pixels and residuals, a linear probe on the residual spectrum,
    and, with embeddings, an embedding probe and the pixel-minus-embedding accuracy gap."""
    resid = median_residual(x)
    sets = {"pixels": flat(x), "residual": flat(resid), "spectrum": log_spectrum(resid)}
    out = []
    for fname, feats in sets.items():
        out.append(probe(f"linear_probe_{fname}", feats, y, "ridge", seed))
        if mlp and fname != "spectrum":
            out.append(probe(f"mlp_probe_{fname}", feats, y, "mlp", seed))
    if embeddings is not None:
        emb = probe("linear_probe_embedding", np.asarray(embeddings, np.float32), y, "ridge", seed)
        out.append(emb)
        pixel = [r.statistic for r in out if r.test.startswith(("linear_probe_p", "linear_probe_r")) and not r.skipped]
        if emb.skipped or not pixel:  # a gap needs both accuracies
            out.append(CheckResult("pixel_minus_embedding_probe", float("nan"),
                                   skipped=emb.skipped or "the pixel probes were skipped"))
        else:
            out.append(CheckResult("pixel_minus_embedding_probe", max(pixel) - emb.statistic,
                                   details={"embedding_accuracy": emb.statistic, "pixel_accuracy": max(pixel)}))
    return out


# ---- class templates --------------------------------------------------------------------

def template_snr(x: np.ndarray, y: np.ndarray) -> CheckResult:
    """Per class c: (||m_c - m||^2 - s_c^2 / n_c) / s_c^2 on median residuals, where m_c is
    the class mean residual, m the overall mean and s_c^2 the mean squared distance of the
    class's residuals to m_c (the subtraction removes the sampling bias, so clean data scores
    near 0 at any n). Statistic: the largest class value. Sample score: cosine between the
    sample's residual and its class's leave-one-out template (both centred on m)."""
    why = usable(y)
    if why:
        return CheckResult("template_snr", float("nan"), skipped=why)
    r = flat(median_residual(x)).astype(np.float64)
    m = r.mean(0)
    rc = r - m
    per_class, scores = {}, np.zeros(len(r))
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n = len(idx)
        if n < MIN_PER_CLASS:
            continue
        mc = rc[idx].mean(0)
        s2 = ((rc[idx] - mc) ** 2).sum(1).mean()
        per_class[int(c)] = float((mc @ mc - s2 / n) / max(s2, 1e-12))
        loo = (mc[None, :] * n - rc[idx]) / (n - 1)
        num = (rc[idx] * loo).sum(1)
        den = np.linalg.norm(rc[idx], axis=1) * np.linalg.norm(loo, axis=1) + 1e-12
        scores[idx] = num / den
    return CheckResult("template_snr", max(per_class.values()), per_class, scores)


# ---- one pixel --------------------------------------------------------------------------

def one_pixel(candidates: list[list[tuple]], y: np.ndarray, min_support: int = 5) -> CheckResult:
    """candidates[i]: sample i's isolated corner-colour pixels as (row, col, color). For every
    (row, col, color) seen: share of class c carrying it minus share of the other classes.
    Only pixels carried by >= min_support samples of the class count (in a class of 7,
    3 images sharing a line-art corner is chance, not a shortcut).
    Statistic: the largest such purity; per class: its best purity; sample score: 1 when the
    sample carries its class's best (row, col, color), else 0. Details name each class's pixel."""
    why = usable(y)
    if why:
        return CheckResult("one_pixel", float("nan"), skipped=why)
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    size = dict(zip(classes.tolist(), counts.tolist()))
    seen: dict[tuple, Counter] = {}
    for cands, c in zip(candidates, y.tolist()):
        for cand in set(map(tuple, cands or [])):
            seen.setdefault(cand, Counter())[c] += 1
    best: dict[int, tuple[float, tuple | None]] = {int(c): (0.0, None) for c in classes}
    for cand, by_class in seen.items():
        total = sum(by_class.values())
        for c, k in by_class.items():
            if k < min_support:
                continue
            others = len(y) - size[c]
            purity = k / size[c] - ((total - k) / others if others else 0.0)
            if purity > best[int(c)][0]:
                best[int(c)] = (purity, cand)
    scores = np.array([float(best[int(c)][1] is not None and best[int(c)][1] in set(map(tuple, cands or [])))
                       for cands, c in zip(candidates, y.tolist())])
    per_class = {c: v for c, (v, _) in best.items()}
    pixels = {str(c): list(p) for c, (_, p) in best.items() if p is not None}
    return CheckResult("one_pixel", max(per_class.values()), per_class, scores, {"pixels": pixels})


# ---- learning speed ---------------------------------------------------------------------

def learning_speed(x: np.ndarray, y: np.ndarray, seed: int = 0, device: str = "auto",
                   batch: int = 64, min_batches: int = 20) -> CheckResult:
    """A small CNN trained for one epoch, or for as many epochs as make `min_batches` steps on
    small data (a 3-batch epoch says nothing). Statistic: mean training-batch accuracy over
    those steps (the speed of learning); per class: mean exp(-loss) on the class afterwards;
    sample score: minus the sample's loss afterwards (learned first = most suspicious)."""
    why = usable(y)
    if why:
        return CheckResult("learning_speed", float("nan"), skipped=why)
    classes, yi = np.unique(y, return_inverse=True)
    epochs = max(1, -(-min_batches // -(-len(x) // batch)))
    fit = small_cnn.train(x, yi, len(classes), epochs=epochs, batch=batch, seed=seed, device=device)
    loss = small_cnn.per_sample_loss(fit.model, x, yi)
    per_class = {int(classes[c]): float(np.exp(-loss[yi == c]).mean()) for c in range(len(classes))}
    steps = [a for epoch in fit.batch_accuracy for a in epoch]
    return CheckResult("learning_speed", float(np.mean(steps)), per_class, -loss,
                       {"batches": len(steps), "epochs": epochs, "final_batch_accuracy": steps[-1]})


def reference_accuracy(x: np.ndarray, y: np.ndarray, ref_x: np.ndarray, ref_y: np.ndarray, seed: int = 0,
                       device: str = "auto", epochs: int = 8) -> CheckResult:
    """What the data teaches: the small CNN trained on (x, y) (crops and flips, cosine decay)
    and scored on the clean labelled reference. Poisons make it low (the network learns the
    shortcut, not the content); it ranks sanitizers by what matters to training. Context for the
    sanitizer choice, not a verdict. per_class: accuracy on each reference class; details:
    `epoch_accuracy`, the reference accuracy after each epoch (audit.perturbations.early_stopping
    turns its peak into a training recommendation)."""
    why = usable(y)
    if why:
        return CheckResult("reference_accuracy", float("nan"), skipped=why)
    classes, yi = np.unique(y, return_inverse=True)
    known = np.isin(ref_y, classes)
    if not known.any():
        return CheckResult("reference_accuracy", float("nan"), skipped="no reference sample has a tested class")
    ry = np.searchsorted(classes, ref_y[known])
    fit = small_cnn.train(x, yi, len(classes), epochs=epochs, seed=seed, device=device, augment=True,
                          flip=x.shape[-1] == 3, cosine=True, evaluate=(ref_x[known], ry))
    hit = small_cnn.predict(fit.model, ref_x[known]) == ry
    per_class = {int(c): float(hit[ry == i].mean()) for i, c in enumerate(classes) if (ry == i).any()}
    return CheckResult("reference_accuracy", float(hit.mean()), per_class, None,
                       {"epochs": epochs, "n_reference": int(known.sum()),
                        "epoch_accuracy": [round(a, 4) for a in fit.epoch_accuracy]})


def feature_shift(features: dict[str, np.ndarray], y: np.ndarray, ref_features: dict[str, np.ndarray],
                  ref_y: np.ndarray) -> CheckResult:
    """Statistic: the largest scaled two-sample Kolmogorov-Smirnov distance sqrt(nm/(n+m)) * D
    over the per-sample features, data vs reference; its null distribution is Kolmogorov's at
    any n and m (conservative for tied, discrete features), so its threshold needs no bootstrap.
    per_class: the same, each class against the reference's same class (classes with fewer
    than MIN_PER_CLASS samples on either side are left out). Details: every feature's scaled
    distance and the data-minus-reference median (which way it moved)."""
    from scipy.stats import ks_2samp
    names = [k for k in features if k in ref_features and len(features[k]) and len(ref_features[k])]
    if not names or min(len(features[names[0]]), len(ref_features[names[0]])) < MIN_PER_CLASS:
        return CheckResult("feature_shift", float("nan"), skipped="needs per-sample features of the data and the reference")

    def scaled(a: np.ndarray, b: np.ndarray) -> float:
        n, m = len(a), len(b)
        return float(ks_2samp(a, b).statistic * np.sqrt(n * m / (n + m)))

    by_feature = {k: scaled(features[k], ref_features[k]) for k in names}
    y, ref_y = np.asarray(y), np.asarray(ref_y)
    per_class = {}
    for c in np.unique(y):
        a, b = y == c, ref_y == c
        if a.sum() >= MIN_PER_CLASS and b.sum() >= MIN_PER_CLASS:
            per_class[int(c)] = max(scaled(features[k][a], ref_features[k][b]) for k in names)
    worst = max(by_feature, key=by_feature.get)
    return CheckResult("feature_shift", by_feature[worst], per_class, None, {
        "n_features": len(names), "worst_feature": worst, "n_reference": int(len(ref_y)),
        "scaled_ks": {k: round(v, 3) for k, v in by_feature.items()},
        "median_shift": {k: float(np.median(features[k]) - np.median(ref_features[k])) for k in names}})


def run_all(x: np.ndarray, y: np.ndarray, candidates: list | None = None,
            embeddings: np.ndarray | None = None, seed: int = 0, device: str = "auto",
            mlp: bool = True) -> list[CheckResult]:
    """Every test on one labelled dataset (candidates: see `one_pixel`; None skips it)."""
    out = probe_tests(x, y, embeddings, seed, mlp)
    out.append(template_snr(x, y))
    if candidates is not None:
        out.append(one_pixel(candidates, y))
    out.append(learning_speed(x, y, seed, device))
    return out
