"""The quality benchmark's scorer: predicted pairs are closed into clusters, and a false join
costs every pair it puts together."""

import numpy as np

from benchmarks.dedup_quality import cluster_labels, score
from benchmarks.photo_set import CopySet


def _set(group, family):
    n = len(group)
    return CopySet("t", [b""] * n, np.array(group), np.array(family), [str(k) for k in range(n)], 2, 0)


def test_singletons_are_their_own_clusters():
    labels = cluster_labels(5, np.array([[0, 1]]))
    assert labels[0] == labels[1] and len(set(labels.tolist())) == 4


def test_one_false_join_costs_every_pair_it_closes():
    # two sources (0, 3) with two copies each (transform 0, 1); truth: {0,1,2} and {3,4,5}
    cs = _set([0, 0, 0, 1, 1, 1], [-1, 0, 1, -1, 0, 1])
    perfect = cluster_labels(6, np.array([[0, 1], [0, 2], [3, 4], [3, 5]]))
    assert score(perfect, cs, None)[:3] == (1.0, 1.0, 1.0)
    joined = cluster_labels(6, np.array([[0, 1], [0, 2], [3, 4], [3, 5], [2, 5]]))  # one false pair
    p, r, f1, true = score(joined, cs, None)
    assert r == 1.0 and true == 6 and p == 6 / 15  # closure: all 15 pairs of one cluster predicted
    missed = cluster_labels(6, np.array([[0, 1], [3, 4], [3, 5]]))
    p, r, _, true = score(missed, cs, [1])  # transform 1's recall: (source, copy) pairs only
    assert p == 1.0 and r == 0.5 and true == 2
