"""Copy detection's one rule, shared by global, partitioned and incremental dedup and by
`shardguard contamination`: SSCD proposes, local features and pixels decide the close calls.

Input: SSCD vectors (L2-normalized rows), a `CopyDetection` (from DedupConfig), and a
`PairVerifier` (audit.copy_check.verification) that can read any row's image back, or None.
Output: streams of `Edges` (i, j, SSCD cosine) in the verifier's row space: the copy pairs.

The rule (chosen on the tuning half of benchmarks/photo_set.py and on the clip-art set):
1. SSCD pairs: every pair at cosine >= `threshold` (0.75, SSCD's documented copy threshold).
   Those at >= `verify_below` are taken as they are; the others are geometrically checked and
   dropped only with evidence against them (CopyRule.vetoes: aligned, pixels or tones disagree).
2. Candidates: each vector's `candidates` nearest neighbours with `candidate_threshold` <=
   cosine < `threshold`. SSCD ranks a hard copy (a crop keeping 60% of each side, a photo
   pasted on a canvas, a rotation) first among its neighbours even when its cosine is 0.45-0.7;
   such a pair is added only with evidence for it (CopyRule.confirms: aligned by an affine
   map with enough inliers, and the pixels and tones agree), or, when the keypoints show nothing against
   it (a tight crop of a smooth photo has too few keypoints to align), when one image is found
   inside the other by scaled template matching and the pixels agree (audit.copy_check.inside;
   CopyRule.confirms). Without a verifier no candidate is added.
   Bounded work: at most `candidates` (3) checks per sample, whatever the corpus size. 3, not
   2: an off-centre crop's nearest neighbours are often other crops of its source that do not
   contain it (a centre crop), and the third is then a larger view that does (tuning half,
   seeds 1-2: crop50off recall 0.94/0.92 with 2, 0.98/0.96 with 3 or 4).
3. Order and skipping: the pairs that need no check are taken first; the others are held
   back (up to PENDING_MAX pairs, ~80 MB) and taken by descending cosine, and a pair whose two
   samples are already joined by pairs taken before is taken without a check (a union-find
   over the taken pairs): clusters only grow, so that check could change no cluster. The cost
   is one check per pair that could change a cluster.
Failure: images that cannot be read keep SSCD's word (never vetoed, never added).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from audit.copy_check.verification import CopyRule, PairVerifier
from audit.dedup.vector_index import Edges, IndexConfig, build_index, torch_topk, use_torch


@dataclass(frozen=True)
class CopyDetection:
    threshold: float = 0.75
    verify: bool = True
    verify_below: float = 0.97
    candidate_threshold: float = 0.3
    candidates: int = 3
    rule: CopyRule = field(default_factory=CopyRule)


@dataclass
class NearEdges:
    """The near kind's edges before the check: SSCD pairs and candidates (both in the
    verifier's row space). `pairs` may hold partitioned dedup's summaries, already checked."""
    pairs: Iterable
    candidates: Iterable[Edges] = ()


def knn_candidates(queries: np.ndarray, base: np.ndarray, det: CopyDetection, cfg: IndexConfig = IndexConfig(),
                   self_search: bool = False, index=None) -> Edges:
    """Each query's `det.candidates` nearest base rows with candidate_threshold <= cosine <
    threshold, exact (torch blocked matmul) or through a faiss `index` / beyond exact_max.
    Self-search: a row is not its own neighbour and each pair comes once, as (i < j)."""
    k = det.candidates
    if k <= 0 or len(queries) == 0 or (index is None and len(base) < (2 if self_search else 1)):
        return Edges.empty()
    kk = k + 1 if self_search else k
    if index is not None or not use_torch(cfg, len(base)):
        if index is None:
            index = build_index(base, cfg)
        sims, ids = index.search(np.ascontiguousarray(queries, np.float32), min(kk, index.ntotal))
    else:
        sims, ids = torch_topk(queries, base, min(kk, len(base)), cfg)
    qi = np.repeat(np.arange(len(queries), dtype=np.int64), sims.shape[1])
    bj, s = ids.reshape(-1).astype(np.int64), sims.reshape(-1).astype(np.float32)
    keep = (bj >= 0) & (s >= det.candidate_threshold) & (s < det.threshold)
    if self_search:
        keep &= bj != qi
    qi, bj, s = qi[keep], bj[keep], s[keep]
    if self_search and len(qi):  # (i, j) and (j, i) once, as i < j
        lo, hi = np.minimum(qi, bj), np.maximum(qi, bj)
        _, first = np.unique(lo * (len(base) + 1) + hi, return_index=True)
        qi, bj, s = lo[first], hi[first], s[first]
    return Edges(qi, bj, s)


class _Joined:
    """Union-find over the rows that taken pairs touched (dict-backed: memory ~ touched rows)."""

    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        p = self.parent
        root = x
        while p.get(root, root) != root:
            root = p[root]
        while p.get(x, x) != root:
            p[x], x = root, p[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb


PENDING_MAX = 1 << 22  # pairs under verify_below held back at most (~80 MB) before they are checked


def copy_edges(near: NearEdges, det: CopyDetection, verifier: PairVerifier | None) -> Iterator:
    """The rule's steps 1-3 (module doc) over SSCD pairs then candidates; yields the taken
    pairs as `Edges` blocks (summaries in `near.pairs` pass as they are). Pairs that need a
    check are held back (up to PENDING_MAX) until the pairs that need none are in, then checked
    by descending cosine: most of them are then already joined and cost nothing."""
    checking = verifier is not None and det.verify
    joined = _Joined()
    pending: list[Edges] = []
    held = 0

    def flush() -> Iterator[Edges]:
        nonlocal pending, held
        if pending:
            block = Edges.concat(pending)
            pending, held = [], 0
            yield _checked(block, joined, lambda i, j, s: verifier.same_picture(i, j), verifier)

    for block in _blocks(near.pairs):
        if not isinstance(block, Edges):
            yield block
            continue
        if not checking or not len(block):
            yield block
            continue
        high = block.sim >= det.verify_below
        if high.any():
            yield Edges(block.i[high], block.j[high], block.sim[high])
            for i, j in zip(block.i[high].tolist(), block.j[high].tolist()):
                joined.union(i, j)
        if not high.all():
            pending.append(Edges(block.i[~high], block.j[~high], block.sim[~high]))
            held += int((~high).sum())
            if held > PENDING_MAX:
                yield from flush()
    if not checking:
        return
    yield from flush()
    for block in _blocks(near.candidates):
        if len(block):
            yield _checked(block, joined, lambda i, j, s: verifier.confirms(i, j), verifier, candidate=True)


def _blocks(source) -> Iterable:
    return [source] if isinstance(source, Edges) or hasattr(source, "link_i") else source


LOOKAHEAD = 64  # pairs whose images are prepared ahead, in the order they will be checked
SPECULATE = 2   # pairs verified ahead per pool thread (one wasted when an earlier pair joins them)


def _checked(block: Edges, joined: _Joined, take: Callable[[int, int, float], bool],
             verifier: PairVerifier | None = None, candidate: bool = False) -> Edges:
    """Takes the block's pairs by descending cosine (module doc, 3). With a verifier, the next
    pairs' images are prepared and the next few pairs verified ahead on its thread pool; the
    answers are used in order, so the result is the sequential one."""
    order = np.argsort(-block.sim, kind="stable")
    keep = np.zeros(len(block), bool)
    bi, bj = block.i.tolist(), block.j.tolist()
    width = SPECULATE * verifier.threads if verifier is not None else 0
    ahead = 0  # order[n:ahead] are the pairs already handed to speculate
    for n, k in enumerate(order):
        if verifier is not None:
            if n % LOOKAHEAD == 0:
                verifier.prefetch(r for a in order[n:n + LOOKAHEAD] if joined.find(bi[a]) != joined.find(bj[a])
                                  for r in (bi[a], bj[a]))
            if ahead < n + width:
                ahead = max(ahead, n)
                verifier.speculate(((bi[a], bj[a]) for a in order[ahead:n + width]
                                    if joined.find(bi[a]) != joined.find(bj[a])), candidate)
                ahead = n + width
        i, j, s = bi[k], bj[k], float(block.sim[k])
        if joined.find(i) == joined.find(j):
            keep[k] = True
            if verifier is not None:
                verifier.cancel(i, j, candidate)
        elif take(i, j, s):
            keep[k] = True
            joined.union(i, j)
    return Edges(block.i[keep], block.j[keep], block.sim[keep])
