"""Incremental dedup's near candidates (audit.dedup.incremental.new_candidates): each new
sample's nearest neighbours among the new and the accepted samples, ranked as a full run
ranks them, pairs in corpus order."""

import numpy as np

from audit.dedup.copy_detection import CopyDetection
from audit.dedup.incremental import new_candidates
from audit.dedup.vector_index import IndexConfig, build_index


def _vectors(n: int = 60, d: int = 16, seed: int = 0) -> np.ndarray:
    """Groups of 4 noisy copies of a few directions: cosines spread over 0.2-0.95."""
    rng = np.random.default_rng(seed)
    x = np.repeat(rng.normal(size=(n // 4, d)), 4, axis=0) + rng.normal(scale=0.7, size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _reference(x: np.ndarray, new: np.ndarray, det: CopyDetection) -> set[tuple[int, int]]:
    """Each new row's det.candidates nearest other rows (new or accepted) by brute force,
    kept in [candidate_threshold, threshold), as (lower row, higher row)."""
    sims = x @ x.T
    pairs = set()
    for q in np.flatnonzero(new):
        order = [int(b) for b in np.argsort(-sims[q], kind="stable") if b != q][:det.candidates]
        pairs |= {(min(q, b), max(q, b)) for b in order if det.candidate_threshold <= sims[q, b] < det.threshold}
    return pairs


def test_candidates_of_new_rows_against_new_and_accepted_rows_match_a_full_ranking():
    x = _vectors()
    new = np.zeros(len(x), bool)
    new[1::3] = True  # new and accepted rows interleave in corpus order
    det = CopyDetection(threshold=0.75, candidate_threshold=0.4, candidates=2)
    acc_rows = np.flatnonzero(~new)
    index = build_index(x[acc_rows], IndexConfig())
    keys = [("s", f"k{r}") for r in acc_rows]
    against = ((index, keys), {k: int(r) for k, r in zip(keys, acc_rows)})
    got = new_candidates(np.flatnonzero(new), x[new], det, IndexConfig(), against)
    pairs = set(zip(got.i.tolist(), got.j.tolist()))
    want = _reference(x, new, det)
    assert pairs == want and len(want) > 10
    assert len(pairs) == len(got) and all(i < j for i, j in pairs)
    assert any(new[i] != new[j] for i, j in pairs) and any(new[i] and new[j] for i, j in pairs)
    assert np.allclose(got.sim, [x[i] @ x[j] for i, j in zip(got.i, got.j)], atol=1e-5)


def test_accepted_samples_missing_from_the_corpus_are_skipped():
    x = _vectors()
    new = np.arange(len(x)) >= 40
    det = CopyDetection(candidates=2)
    index = build_index(x[:40], IndexConfig())
    keys = [("s", f"k{r}") for r in range(40)]
    rows_of = {k: r for r, k in enumerate(keys) if r % 2}  # even accepted rows are gone
    got = new_candidates(np.flatnonzero(new), x[new], det, IndexConfig(), ((index, keys), rows_of))
    assert len(got) and not any(i < 40 and i % 2 == 0 for i in got.i.tolist())
