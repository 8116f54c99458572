"""Train-vs-eval contamination: eval samples that have a copy in the training set.

Input: two corpora (audit.dedup_corpus), the near-copy threshold and an IndexConfig.
Output: one row per contaminated eval sample (schemas.CONTAMINATION): its best training
match, the kind ('exact' = same bytes or pixels, 'near' = SSCD cosine >= threshold) and how
many training samples match. Exact matches are found by hash join, near ones by range
search of the eval vectors against the training vectors (audit.vector_index.cross_edges).
Failure: `ValueError` when near search is asked for but a side has no SSCD vectors.
"""

from __future__ import annotations

import numpy as np

from audit.dedup_corpus import Corpus
from audit.vector_index import IndexConfig, cross_edges


def find_contamination(train: Corpus, eval_: Corpus, threshold: float, run_id: str, train_ref: str,
                       cfg: IndexConfig = IndexConfig()) -> list[dict]:
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
    edges = cross_edges(e[2], t[2], threshold, cfg)
    for qi, bj, sim in zip(e[1][edges.i], t[1][edges.j], edges.sim):
        count.setdefault(int(qi), set()).add(int(bj))
        if int(qi) not in best or (best[int(qi)][0] == "near" and sim > best[int(qi)][2]):
            best[int(qi)] = ("near", int(bj), float(sim))
    return [{"run_id": run_id, "eval_shard": eval_.shard[i], "eval_key": eval_.key[i], "kind": kind,
             "train_shard": train.shard[j], "train_key": train.key[j], "similarity": sim,
             "n_train_matches": len(count[i]), "model": e[0], "threshold": threshold, "train_out": train_ref}
            for i, (kind, j, sim) in sorted(best.items())]
