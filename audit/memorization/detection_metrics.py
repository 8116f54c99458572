"""Detector quality from scores and ground-truth labels: ROC AUC and TPR at a fixed FPR.

Input: scores (higher = more suspicious) and boolean labels (True = positive). Ties count half,
as in the Mann-Whitney U statistic. Both need at least one positive and one negative.
"""

from __future__ import annotations

import numpy as np


def _split(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s, y = np.asarray(scores, float), np.asarray(labels, bool)
    if s.shape != y.shape or not y.any() or y.all():
        raise ValueError("need matching scores and labels with at least one positive and one negative")
    return s[y], s[~y]


def roc_auc(scores, labels) -> float:
    """P(score of a random positive > score of a random negative), ties counting one half."""
    pos, neg = _split(scores, labels)
    allv = np.concatenate([pos, neg])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    _, first, counts = np.unique(allv[order], return_index=True, return_counts=True)  # tie groups
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def tpr_at_fpr(scores, labels, fpr: float = 0.01) -> tuple[float, float]:
    """(TPR, threshold) with the threshold at the negatives' (1 - fpr) quantile: at most `fpr` of
    the negatives score at or above it."""
    pos, neg = _split(scores, labels)
    k = int(np.floor(fpr * len(neg)))  # negatives allowed at or above the threshold
    neg_sorted = np.sort(neg)[::-1]
    thr = np.nextafter(neg_sorted[k], np.inf) if k < len(neg) else -np.inf
    return float((pos >= thr).mean()), float(thr)
