"""Train-vs-eval contamination: eval samples that have a copy in the training set.

Input: two corpora (audit.dedup.corpus), the near-copy threshold, an IndexConfig and, for
the near kind, a `CopyDetection` and a `PairVerifier` over both sets (`contamination_verifier`).
Output: one row per contaminated eval sample (schemas.CONTAMINATION): its best training
match, the kind ('exact' = same bytes or pixels, 'near' = a copy by audit.dedup.copy_detection's
rule, the one dedup uses in every mode) and how many training samples match. Exact matches
are found by hash join. Near ones: SSCD pairs (range search of the eval vectors against the
training vectors) at cosine >= threshold, those under verify_below dropped only when the
check shows they are different pictures, plus each eval sample's `candidates` nearest
training samples down to candidate_threshold, taken only when the check confirms them.
`similarity` stays the SSCD cosine (under the threshold for a confirmed candidate).
Row space of the check: training row j is j, eval row i is len(train) + i; each pair is
checked as (training row, eval row), the training sample playing the earlier one.
Failure: `ValueError` when near search is asked for but a side has no SSCD vectors; images
that cannot be read back keep SSCD's word (audit.copy_check.verification).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from audit.dedup.copy_detection import CopyDetection, NearEdges, copy_edges, knn_candidates
from audit.copy_check.feature_cache import FeatureCache, SplitFeatures
from audit.copy_check.verification import CopyRule, PairVerifier
from audit.ingest.stored_images import stored_image_fetcher
from audit.dedup.corpus import Corpus
from audit.dedup.vector_index import Edges, IndexConfig, iter_cross_edges


def contamination_verifier(train_out, train: Corpus, eval_out, eval_: Corpus, opener: Callable,
                           rule: CopyRule = CopyRule(), cache_run_id: str | None = None) -> PairVerifier:
    """A PairVerifier over the check's row space (module doc): images read back from each
    set's own output folder (`*_out`: OutputDir) through `opener(uri)`. With `cache_run_id`,
    prepared images come from the feature caches (audit.copy_check.feature_cache) of both
    folders when there (the training folder's is only read: the command writes nothing there),
    and the eval images prepared here are added to the eval folder's under that run id (commit
    with `saving_features`)."""
    n_train = len(train)
    train_keys, eval_keys = list(zip(train.shard, train.key)), list(zip(eval_.shard, eval_.key))
    from_train = stored_image_fetcher(train_out, train_keys, opener)
    from_eval = stored_image_fetcher(eval_out, eval_keys, opener)
    features = None
    if cache_run_id is not None:
        features = SplitFeatures(FeatureCache(train_out, train_keys, train.byte_hash, cache_run_id, write=False),
                                 FeatureCache(eval_out, eval_keys, eval_.byte_hash, cache_run_id), n_train)
    return PairVerifier(lambda row: from_train(row) if row < n_train else from_eval(row - n_train), rule,
                        features=features)


def find_contamination(train: Corpus, eval_: Corpus, threshold: float, run_id: str, train_ref: str,
                       cfg: IndexConfig = IndexConfig(), det: CopyDetection | None = None,
                       verifier: PairVerifier | None = None) -> list[dict]:
    """`det` (default CopyDetection()) is the near rule, its threshold replaced by `threshold`;
    without `verifier` the near kind is SSCD's pairs as they are (no candidates)."""
    best: dict[int, tuple[str, int, float]] = {}  # eval row -> (kind, train row, similarity)
    count: dict[int, set] = {}
    by_hash: dict[str, int] = {}
    for i in np.flatnonzero(train.status == "ok"):
        for h in (train.byte_hash[i], train.pixel_hash[i]):
            if h:
                by_hash.setdefault(h, int(i))
    for i in np.flatnonzero(eval_.status == "ok"):
        for h in (eval_.byte_hash[i], eval_.pixel_hash[i]):
            if h in by_hash:
                best[int(i)] = ("exact", by_hash[h], 1.0)
                count.setdefault(int(i), set()).add(by_hash[h])
    t, e = train.matrix("sscd:", "image"), eval_.matrix("sscd:", "image")
    if t is None or e is None:
        raise ValueError("near-copy contamination needs SSCD vectors in both outputs (run with embeddings on)")
    if t[0] != e[0]:
        raise ValueError(f"train and eval were embedded with different models: {t[0]} vs {e[0]}")
    det = dataclasses.replace(det or CopyDetection(), threshold=threshold)
    n_train, (_, t_rows, tx), (_, e_rows, ex) = len(train), t, e
    pairs = (Edges(t_rows[c.j], n_train + e_rows[c.i], c.sim) for c in iter_cross_edges(ex, tx, threshold, cfg))
    cand = knn_candidates(ex, tx, det, cfg) if verifier is not None and det.verify else Edges.empty()
    near = NearEdges(pairs, [Edges(t_rows[cand.j], n_train + e_rows[cand.i], cand.sim)])
    for block in copy_edges(near, det, verifier):
        for bj, qi, sim in zip(block.i.tolist(), (block.j - n_train).tolist(), block.sim.tolist()):
            count.setdefault(qi, set()).add(bj)
            if qi not in best or (best[qi][0] == "near" and sim > best[qi][2]):
                best[qi] = ("near", bj, float(sim))
    return [{"run_id": run_id, "eval_shard": eval_.shard[i], "eval_key": eval_.key[i], "kind": kind,
             "train_shard": train.shard[j], "train_key": train.key[j], "similarity": sim,
             "n_train_matches": len(count[i]), "model": e[0], "threshold": threshold, "train_out": train_ref}
            for i, (kind, j, sim) in sorted(best.items())]
