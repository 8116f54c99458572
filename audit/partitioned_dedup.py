"""Scale-out duplicate search, SemDeDup-style (Abbas et al. 2023): partition, then search exactly.

1. `train_centroids`: spherical k-means (faiss) on a sample of the vectors.
2. `assign`: every vector goes to its `top` nearest centroids (2 by default), so a duplicate
   pair split by a partition boundary still meets in at least one group.
3. `group_edges_exact`: exact range search inside one group (audit.vector_index).
4. Edges from all groups are merged (a pair found in two groups counts once) and clustered
   as in the global mode.
Each group fits one worker, so no machine ever holds all vectors: in Beam, step 2 is a
ParDo, the groups are a GroupByKey per centroid and step 3 is a ParDo per group
(pipelines.dedup_scaleout). `partitioned_self_edges` runs the same steps in one process, for
tests and for measuring recall against the exact global search.
"""

from __future__ import annotations

import numpy as np

from audit.vector_index import Edges, IndexConfig, self_edges


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
