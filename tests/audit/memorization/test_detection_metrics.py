import itertools

import numpy as np
import pytest

from audit.memorization.detection_metrics import roc_auc, tpr_at_fpr


def brute_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_pairwise_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    s = np.round(rng.normal(size=80), 1)  # rounding makes ties
    y = rng.random(80) < 0.3
    s[y] += 0.5
    assert roc_auc(s, y) == pytest.approx(brute_auc(s, y))


def test_tpr_at_fpr_lets_at_most_that_share_of_negatives_through():
    rng = np.random.default_rng(0)
    neg, pos = rng.normal(size=1000), rng.normal(2.0, 1.0, size=100)
    s = np.concatenate([pos, neg])
    y = np.r_[np.ones(100, bool), np.zeros(1000, bool)]
    tpr, thr = tpr_at_fpr(s, y, 0.01)
    assert (neg >= thr).sum() <= 10
    assert tpr == pytest.approx((pos >= thr).mean())
    assert 0.2 < tpr < 0.9


def test_metrics_need_both_classes():
    with pytest.raises(ValueError):
        roc_auc([1.0, 2.0], [True, True])
