"""Scale-out duplicate search, SemDeDup-style (Abbas et al. 2023): partition, then search exactly.

1. `train_centroids`: spherical k-means (faiss) on a sample of the vectors.
2. `assign`: every vector goes to its `top` nearest centroids (2 by default), so a duplicate
   pair split by a partition boundary still meets in at least one group.
3. `group_summary`: exact range search inside one group (audit.dedup.vector_index), its edges
   streamed into a union-find, reduced to an `EdgeSummary` of O(members): links to each
   member's group-component root, each member's best edge, and the number of edges this group
   counts (a pair in two groups is counted by the lower one only).
4. The summaries of all groups are clustered as in the global mode (audit.dedup.cluster_accumulator):
   the same components, each sample's nearest neighbour, the count of distinct pairs.
Each group fits one worker, so no machine ever holds all vectors, and no place ever holds the
edges (quadratic in a cluster's size): in Beam, step 2 is a ParDo, the groups are a
GroupByKey per centroid and step 3 is a ParDo per group (pipelines.dedup_scaleout).
`partitioned_self_edges` runs steps 1-3 in one process and returns the merged edge list
itself, for tests and for measuring recall against the exact global search.
"""

from __future__ import annotations

import numpy as np

from audit.dedup.cluster_accumulator import ClusterAccumulator, EdgeSummary
from audit.dedup.vector_index import Edges, IndexConfig, iter_self_edges, self_edges


def train_centroids(sample: np.ndarray, k: int, seed: int = 0, niter: int = 20) -> np.ndarray:
    import faiss
    sample = np.ascontiguousarray(sample, np.float32)
    k = max(1, min(k, len(sample) // 4 or 1))
    km = faiss.Kmeans(sample.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=max(256, len(sample) // k + 1))
    km.train(sample)
    return km.centroids.copy()


def assign(x: np.ndarray, centroids: np.ndarray, top: int = 2) -> np.ndarray:
    """[n, top] ids of the nearest centroids by cosine (vectors and centroids are normalized)."""
    import faiss
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, np.float32))
    _, ids = index.search(np.ascontiguousarray(x, np.float32), min(top, len(centroids)))
    return ids.astype(np.int64)


def group_edges_exact(ids: np.ndarray, vectors: np.ndarray, threshold: float,
                      cfg: IndexConfig = IndexConfig()) -> Edges:
    """Exact pairs inside one group; `ids` are the members' global ids, edges use them."""
    e = self_edges(vectors, threshold, cfg)
    i, j = ids[e.i], ids[e.j]
    return Edges(np.minimum(i, j), np.maximum(i, j), e.sim)


def counted_here(groups_i: np.ndarray, groups_j: np.ndarray, group: int) -> np.ndarray:
    """Per edge found in `group`: whether this group counts it, i.e. no lower group holds both
    ends (`groups_*`: [m, top] group ids of each edge's ends, from `assign`)."""
    elsewhere = np.zeros(len(groups_i), bool)
    for t in range(groups_i.shape[1]):
        c = groups_i[:, t]
        elsewhere |= (c < group) & (groups_j == c[:, None]).any(axis=1)
    return ~elsewhere


def group_summary(vectors: np.ndarray, groups: np.ndarray, group: int, threshold: float,
                  cfg: IndexConfig = IndexConfig(), check=None) -> EdgeSummary:
    """One group's exact pairs over its members' local numbers, streamed, never listed.
    `groups` are the members' rows of `assign`, `group` this group's centroid id. `check`
    (edge blocks -> edge blocks, e.g. the near pairs' geometric verification) filters them."""
    acc, counted = ClusterAccumulator(len(vectors)), 0
    blocks = iter_self_edges(vectors, threshold, cfg)
    for e in (check(blocks) if check is not None else blocks):
        acc.add(e)
        counted += int(counted_here(groups[e.i], groups[e.j], group).sum())
    return acc.summary(counted)


def merge(edges: Edges) -> Edges:
    """Each (i, j) pair once."""
    if len(edges) == 0:
        return edges
    pair = np.stack([edges.i, edges.j], axis=1)
    _, first = np.unique(pair, axis=0, return_index=True)
    return Edges(edges.i[first], edges.j[first], edges.sim[first])


def n_centroids_for(n: int, group_size: int = 50_000) -> int:
    """Enough centroids that a group (with top-2 assignment) stays around `group_size`."""
    return max(1, int(np.ceil(2 * n / group_size)))


def partitioned_self_edges(x: np.ndarray, threshold: float, n_centroids: int, top: int = 2,
                           cfg: IndexConfig = IndexConfig(), sample: int = 100_000, seed: int = 0) -> Edges:
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(x), min(len(x), sample), replace=False)
    centroids = train_centroids(x[pick], n_centroids, seed)
    groups = assign(x, centroids, top)
    parts = []
    for c in range(len(centroids)):
        members = np.flatnonzero((groups == c).any(axis=1))
        if len(members) > 1:
            parts.append(group_edges_exact(members, x[members], threshold, cfg))
    return merge(Edges.concat(parts))
