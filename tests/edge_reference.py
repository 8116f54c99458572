"""Whole-list reference versions of the streaming cluster state (audit.dedup.cluster_accumulator):
component labels and nearest neighbours computed from one complete edge list, as the dedup
step did before it streamed. Tests compare the streaming results against these."""

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from audit.dedup.vector_index import Edges


def components(n: int, edges: Edges) -> np.ndarray:
    """Component label per node; nodes without edges get -1 (the whole-list
    reference for ClusterAccumulator.labels)."""
    if len(edges) == 0:
        return np.full(n, -1, np.int64)
    g = coo_matrix((np.ones(len(edges)), (edges.i, edges.j)), shape=(n, n))
    _, labels = connected_components(g, directed=False)
    deg = np.bincount(np.concatenate([edges.i, edges.j]), minlength=n)
    return np.where(deg > 0, labels, -1).astype(np.int64)


def nearest(n: int, edges: Edges) -> tuple[np.ndarray, np.ndarray]:
    """For every node: its most similar neighbour (-1 if none) and that similarity (the whole-list
    reference for ClusterAccumulator.nearest)."""
    src = np.concatenate([edges.i, edges.j])
    dst = np.concatenate([edges.j, edges.i])
    sim = np.concatenate([edges.sim, edges.sim])
    order = np.lexsort((-sim, src))
    src, dst, sim = src[order], dst[order], sim[order]
    first = np.ones(len(src), bool)
    first[1:] = src[1:] != src[:-1]
    best, best_sim = np.full(n, -1, np.int64), np.zeros(n, np.float32)
    best[src[first]], best_sim[src[first]] = dst[first], sim[first]
    return best, best_sim
