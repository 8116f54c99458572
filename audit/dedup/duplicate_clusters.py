"""Duplicate edges of every kind -> clusters -> which sample to keep, and why.

Input: a `Corpus` (audit.dedup.corpus: every sample with its hashes, caption and size, and
the embedding matrices) and a `DedupConfig`.
Output: `DedupResult` with the duplicates rows (one per sample and kind it has a duplicate
of, with the keep policy's outcome: image cluster, its representative, whether this kind drops
the sample), matching schemas.DUPLICATES, and dedup's own decisions (audit.dedup.decisions.decide
over them and the samples' status, no memorization; not written: the job writes the decisions).
Kinds: exact (same byte hash or same pixel hash), near (audit.dedup.copy_detection's rule: SSCD
pairs at cosine >= near_threshold, those under near_verify_below vetoed by a failed geometric
check, plus each sample's near_candidates nearest neighbours down to near_candidate_threshold
added when the check confirms them; the check needs a verifier),
semantic (CLIP image cosine >= semantic_threshold, when CLIP vectors exist), caption
(same normalized caption, or MiniLM cosine >= caption_threshold). Clusters are the connected
components of a kind's edges (union-find over edges, so a cluster of any size and shape is
one cluster). Edges are streamed block by block from the search into per-kind union-find and
nearest-neighbour state (audit.dedup.cluster_accumulator), never held as one list: memory grows
with the samples, not with the edges, which are quadratic in a cluster's size (100 copies of
an image: 4950 edges). The kinds in `drop_kinds` together form image clusters; in each, the
keep policy picks one representative and the others are dropped with the reason. Per image
cluster, `repeat_type` tells one image repeated with one caption (the pattern Somepalli et al.
2023 found to drive memorization) from one image with different captions.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from audit.dedup.cluster_accumulator import ClusterAccumulator, EdgeSummary
from audit.dedup.copy_detection import NearEdges, copy_edges, knn_candidates
from audit.copy_check.verification import PairVerifier
from audit.dedup.decisions import decide
from audit.dedup.config import DedupConfig  # noqa: F401 (the config's home; re-exported for callers)
from audit.dedup.corpus import Corpus
from audit.dedup.vector_index import Edges, IndexConfig, iter_self_edges

IMAGE_KINDS = ("exact", "near", "semantic")
# vector kinds: (model id prefix, modality of the vectors)
EdgeSource = Edges | EdgeSummary | Iterable[Edges | EdgeSummary]
VECTOR_KINDS = {"near": ("sscd:", "image"), "semantic": ("clip:", "image"), "caption": ("minilm:", "text")}


def normalize_caption(text: str | None) -> str:
    """NFKC, case-folded, punctuation and runs of whitespace folded: 'A  Cat!' == 'a cat'."""
    t = unicodedata.normalize("NFKC", text or "").casefold()
    t = re.sub(r"[^\w\s]", " ", t)
    return " ".join(t.split())


def group_edges(values: np.ndarray) -> Edges:
    """Edges chaining the members of each group of equal non-null values (sim 1.0)."""
    idx = np.array([i for i, v in enumerate(values) if v], dtype=np.int64)
    if len(idx) < 2:
        return Edges.empty()
    vals = np.asarray(values, dtype=object)[idx]
    order = np.argsort(vals, kind="stable")
    idx, vals = idx[order], vals[order]
    same = vals[1:] == vals[:-1]
    return Edges(idx[:-1][same], idx[1:][same], np.ones(int(same.sum()), np.float32))


def _vector_edges(corpus: Corpus, model_prefix: str, modality: str, threshold: float,
                  cfg: IndexConfig) -> tuple[Iterable[Edges], str | None]:
    """(a lazy stream of edge blocks in corpus rows, model id); ((), None) without vectors."""
    found = corpus.matrix(model_prefix, modality)
    if found is None:
        return (), None
    model_id, rows, x = found
    return (Edges(rows[e.i], rows[e.j], e.sim) for e in iter_self_edges(x, threshold, cfg)), model_id


def choose_representatives(corpus: Corpus, labels: np.ndarray, policy: str,
                           pinned: np.ndarray | None = None) -> dict[int, int]:
    """cluster label -> index of the member to keep; `pinned` members (already accepted and
    published in an earlier run) win over any policy score."""
    if policy == "largest":
        score = corpus.width.astype(np.float64) * corpus.height + corpus.image_bytes * 1e-12
    elif policy == "clip_score":
        score = corpus.clip_scores()
        if score is None:
            raise ValueError("keep_policy 'clip_score' needs CLIP image and text embeddings "
                             "(--clip-checkpoint); use 'largest' or 'earliest'")
    elif policy == "earliest":
        score = np.zeros(len(labels))
    else:
        raise ValueError(f"unknown keep_policy {policy!r}: 'largest', 'clip_score' or 'earliest'")
    if pinned is not None:
        score = np.where(pinned, np.inf, score)
    reps: dict[int, int] = {}
    # corpus order is (shard, key): on ties the earliest member wins
    for i in np.argsort(-score, kind="stable"):
        lab = int(labels[i])
        if lab >= 0 and lab not in reps:
            reps[lab] = int(i)
    return reps


@dataclass
class DedupResult:
    duplicates: list[dict]
    decisions: list[dict]  # dedup's own (audit.dedup.decisions.decide without memorization): not written, the
    # accepted index and the counters use them; the job writes the decisions table (audit.dedup.decisions)
    kinds: dict[str, dict]  # per kind: threshold, model, edges, clusters, samples


def near_edges(corpus: Corpus, cfg: DedupConfig) -> tuple[NearEdges, str | None]:
    """The near kind's SSCD pairs (streamed) and candidates, in corpus rows; (NearEdges((), ()), None)
    without SSCD vectors."""
    found = corpus.matrix(*VECTOR_KINDS["near"])
    if found is None:
        return NearEdges(()), None
    model_id, rows, x = found
    det = cfg.copy_detection()
    pairs = (Edges(rows[e.i], rows[e.j], e.sim) for e in iter_self_edges(x, cfg.near_threshold, cfg.index))
    cand = knn_candidates(x, x, det, cfg.index, self_search=True) if cfg.near_verify else Edges.empty()
    return NearEdges(pairs, [Edges(rows[cand.i], rows[cand.j], cand.sim)]), model_id


def find_duplicates(corpus: Corpus, cfg: DedupConfig, run_id: str,
                    vector_edges: dict[str, tuple[EdgeSource, str | None]] | None = None,
                    pinned: np.ndarray | None = None, verifier: PairVerifier | None = None) -> DedupResult:
    """`vector_edges` (kind -> (edges in corpus rows, model id)) replaces the search for those
    kinds: the partitioned and incremental modes compute them and pass them in, as one `Edges`,
    or an iterable of `Edges` / `EdgeSummary` blocks consumed once. `pinned` marks samples
    that must stay kept (the accepted corpus, in incremental mode). `verifier` (with
    cfg.near_verify) decides the near kind's close calls (audit.dedup.copy_detection); a near source
    passed in is a `NearEdges` (or plain SSCD pairs, then without candidates)."""
    vector_edges = vector_edges or {}

    def edges_for(kind: str) -> tuple[EdgeSource, str | None]:
        if kind in vector_edges:
            return vector_edges[kind]
        prefix, modality = VECTOR_KINDS[kind]
        return _vector_edges(corpus, prefix, modality, cfg.threshold(kind), cfg.index)

    n = len(corpus)
    ok = corpus.status == "ok"
    norm_caps = np.array([normalize_caption(c) if o else "" for c, o in zip(corpus.caption, ok)], dtype=object)
    drop = ClusterAccumulator(n, with_nearest=False)  # the drop kinds' edges together: image clusters
    kind_state: dict[str, tuple[ClusterAccumulator, str | None, float]] = {}

    def consume(kind: str, model: str | None, threshold: float, *sources: EdgeSource) -> None:
        acc = ClusterAccumulator(n)
        for source in sources:  # in the order the whole edge list would have them (nearest's ties)
            for block in [source] if isinstance(source, (Edges, EdgeSummary)) else source:
                acc.feed(block)
                if kind in cfg.drop_kinds:
                    drop.feed(block)
        kind_state[kind] = (acc, model, threshold)

    exact = Edges.concat([group_edges(np.where(ok, corpus.byte_hash, None)),
                          group_edges(np.where(ok, corpus.pixel_hash, None))])  # chains: O(n)
    consume("exact", None, 1.0, exact)
    near_src, near_model = vector_edges["near"] if "near" in vector_edges else near_edges(corpus, cfg)
    if not isinstance(near_src, NearEdges):
        near_src = NearEdges(near_src)
    consume("near", near_model, cfg.near_threshold, copy_edges(near_src, cfg.copy_detection(), verifier), exact)
    extra: dict[str, dict] = {}
    if verifier is not None and cfg.near_verify:
        extra["near"] = {"verification": {"checked": verifier.checked, "rejected": verifier.rejected,
                                          "added": verifier.added, "below": cfg.near_verify_below,
                                          "prepared": verifier.prepared, "cache_hits": verifier.cache_hits,
                                          "candidate_threshold": cfg.near_candidate_threshold,
                                          "candidates": cfg.near_candidates}}
    sem, sem_model = edges_for("semantic")
    if sem_model:
        consume("semantic", sem_model, cfg.semantic_threshold, sem)
    cap, cap_model = edges_for("caption")
    consume("caption", cap_model, cfg.caption_threshold, group_edges(norm_caps), cap)

    image_labels = drop.labels()
    reps = choose_representatives(corpus, image_labels, cfg.keep_policy, pinned)
    is_rep = np.zeros(n, bool)
    is_rep[list(reps.values())] = True

    duplicates, kinds = [], {}
    for kind, (acc, model, threshold) in kind_state.items():
        labels = acc.labels()
        near_idx, near_sim = acc.nearest()
        members = np.flatnonzero(labels >= 0)
        sizes = np.bincount(labels[members]) if len(members) else np.zeros(0, np.int64)
        captions: dict[int, set] = {}
        for i in members:
            captions.setdefault(int(labels[i]), set()).add(norm_caps[i])
        first_of: dict[int, int] = {}
        for i in members:
            first_of.setdefault(int(labels[i]), int(i))
        kinds[kind] = {"threshold": threshold, "model": model, "edges": acc.edges,
                       "clusters": len(captions), "samples": len(members)}
        kinds[kind].update(extra.get(kind, {}))
        for i in members:
            lab, img = int(labels[i]), int(image_labels[i])
            image_kind = kind in IMAGE_KINDS
            rep = is_rep[i] if image_kind else first_of[lab] == i
            distinct = len(captions[lab])
            kept = reps[img] if img >= 0 else None
            duplicates.append({
                "run_id": run_id, "shard": corpus.shard[i], "key": corpus.key[i], "kind": kind, "cluster": lab,
                "cluster_size": int(sizes[lab]), "nearest_shard": corpus.shard[near_idx[i]],
                "nearest_key": corpus.key[near_idx[i]], "similarity": float(near_sim[i]),
                "is_representative": bool(rep), "distinct_captions": distinct,
                "repeat_type": ("same_caption" if distinct == 1 else "different_captions") if image_kind else None,
                "model": model, "threshold": threshold,
                "image_cluster": img if img >= 0 else None,
                "representative": f"{corpus.shard[kept]}/{corpus.key[kept]}" if kept is not None else None,
                "drops": bool(kind in cfg.drop_kinds and img >= 0 and not is_rep[i])})
    samples = [{"shard": corpus.shard[i], "key": corpus.key[i], "status": corpus.status[i], "error": corpus.error[i]}
               for i in range(n)]
    return DedupResult(duplicates, decide(samples, duplicates, {}, run_id), kinds)
