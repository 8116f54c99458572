"""Duplicate clusters from a stream of edge blocks, in memory that grows with the nodes, not the edges.

Input: blocks of edges over n nodes (`Edges`: i, j, similarity), in the order the whole edge
list would have had them, fed with `add`; or, from the partitioned mode, `EdgeSummary` blocks
(what one group's edges reduce to: union-only links, each member's best edge, an edge count),
fed with `add_summary`. A kind's edges (millions when a few images repeat thousands of
times) are consumed block by block and never held together.
Output: `labels()`: per node its component label, numbered exactly as
scipy.sparse.csgraph.connected_components numbers them (components in order of their lowest
node, isolated nodes counted), -1 for nodes without edges; `nearest()`: per node its most
similar neighbour (-1 if none) and that similarity, ties won by the edge that came first with
the node as its i end, then the first with it as its j end (what a stable sort of the whole
list by node, then similarity, gives); `edges`: how many edges went in.
State: union-find parents (root = the component's lowest node), a touched flag, and when
`with_nearest` the best neighbour, similarity and side per node: O(n), plus one block.
Failure: an edge naming a node outside [0, n) raises IndexError (numpy indexing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from audit.dedup.vector_index import Edges


@dataclass
class EdgeSummary:
    """One group's edges reduced to O(members): `link_*` pairs joining every member to its
    group component's root (union only, not edges), `near_*` each member's best edge in the
    group (real edges, similarity included), and `n_edges` the edges this group counts."""
    link_i: np.ndarray
    link_j: np.ndarray
    near_i: np.ndarray
    near_j: np.ndarray
    near_sim: np.ndarray
    n_edges: int

    def mapped(self, ids: np.ndarray) -> "EdgeSummary":
        """The same summary with node numbers replaced by ids[node]; pairs where an id is -1 dropped."""
        li, lj, ni, nj = ids[self.link_i], ids[self.link_j], ids[self.near_i], ids[self.near_j]
        lk, nk = (li >= 0) & (lj >= 0), (ni >= 0) & (nj >= 0)
        return EdgeSummary(li[lk], lj[lk], ni[nk], nj[nk], self.near_sim[nk], self.n_edges)


class ClusterAccumulator:
    def __init__(self, n: int, with_nearest: bool = True):
        self.n, self.edges = n, 0
        self.parent = np.arange(n, dtype=np.int64)
        self.touched = np.zeros(n, bool)
        self.with_nearest = with_nearest
        if with_nearest:
            self.best = np.full(n, -1, np.int64)
            self.best_sim = np.full(n, -np.inf, np.float32)
            self.best_side = np.zeros(n, np.int8)  # 0: won as the edge's i end, 1: as its j end

    def _find(self, x: np.ndarray) -> np.ndarray:
        """Roots of the nodes x (pointer jumping), compressing their own parent links."""
        r = self.parent[x]
        while True:
            up = self.parent[r]
            if np.array_equal(up, r):
                break
            r = up
        self.parent[x] = r
        return r

    def _union(self, i: np.ndarray, j: np.ndarray) -> None:
        self.touched[i] = True
        self.touched[j] = True
        a, b = self._find(i), self._find(j)
        differ = a != b
        if not differ.any():
            return
        a, b = a[differ], b[differ]
        roots, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
        g = coo_matrix((np.ones(len(a), np.int8), (inv[:len(a)], inv[len(a):])), shape=(len(roots), len(roots)))
        _, lab = connected_components(g, directed=False)
        _, first = np.unique(lab, return_index=True)  # roots are sorted: a label's first root is its lowest
        self.parent[roots] = roots[first][lab]

    def _nearest(self, i: np.ndarray, j: np.ndarray, sim: np.ndarray) -> None:
        m = len(i)
        src, dst = np.concatenate([i, j]), np.concatenate([j, i])
        s = np.concatenate([sim, sim]).astype(np.float32, copy=False)
        side = np.repeat(np.array([0, 1], np.int8), m)
        order = np.lexsort((-s, src))  # stable: on equal similarity, i ends first, then block order
        src, dst, s, side = src[order], dst[order], s[order], side[order]
        head = np.ones(len(src), bool)
        head[1:] = src[1:] != src[:-1]
        src, dst, s, side = src[head], dst[head], s[head], side[head]
        cur = self.best_sim[src]
        # earlier blocks came first: a tie goes to the new edge only if it has the node as
        # its i end and the kept one had it as its j end
        win = (s > cur) | ((s == cur) & (side < self.best_side[src]))
        src = src[win]
        self.best[src], self.best_sim[src], self.best_side[src] = dst[win], s[win], side[win]

    def add(self, edges: Edges) -> None:
        """One block of edges, in stream order."""
        if len(edges) == 0:
            return
        self.edges += len(edges)
        self._union(edges.i, edges.j)
        if self.with_nearest:
            self._nearest(edges.i, edges.j, edges.sim)

    def add_summary(self, s: EdgeSummary) -> None:
        """One group's summary (partitioned mode): links join, best edges join and compete."""
        self.edges += s.n_edges
        if len(s.link_i):
            self._union(s.link_i, s.link_j)
        if len(s.near_i):
            self._union(s.near_i, s.near_j)
            if self.with_nearest:
                self._nearest(s.near_i, s.near_j, s.near_sim)

    def feed(self, blocks) -> None:
        """Every block of an iterable of `Edges` / `EdgeSummary` (or one `Edges`)."""
        for b in [blocks] if isinstance(blocks, (Edges, EdgeSummary)) else blocks:
            self.add_summary(b) if isinstance(b, EdgeSummary) else self.add(b)

    def labels(self) -> np.ndarray:
        roots = self._find(np.arange(self.n, dtype=np.int64))
        is_root = roots == np.arange(self.n)
        label_of_root = np.cumsum(is_root) - 1
        return np.where(self.touched, label_of_root[roots], -1).astype(np.int64)

    def nearest(self) -> tuple[np.ndarray, np.ndarray]:
        has = self.best >= 0
        return self.best.copy(), np.where(has, self.best_sim, 0).astype(np.float32)

    def summary(self, count: int | None = None) -> EdgeSummary:
        """This accumulator's state as an `EdgeSummary` over its own node numbers."""
        roots = self._find(np.arange(self.n, dtype=np.int64))
        linked = np.flatnonzero(roots != np.arange(self.n))
        has = np.flatnonzero(self.best >= 0) if self.with_nearest else np.zeros(0, np.int64)
        return EdgeSummary(linked, roots[linked], has, self.best[has] if self.with_nearest else has,
                           self.best_sim[has] if self.with_nearest else np.zeros(0, np.float32),
                           self.edges if count is None else count)
