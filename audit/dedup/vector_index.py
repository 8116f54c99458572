"""Similarity search for dedup: every pair of vectors at or above a cosine threshold.

Input: L2-normalized float32 vectors (inner product = cosine), a threshold, `IndexConfig`.
Output: `Edges` (i, j, similarity) with i < j for self-search, or (query, base) pairs;
`iter_self_edges` / `iter_cross_edges` yield the same list as blocks of at most about
EDGE_CHUNK edges, in the same order, for consumers that must not hold millions of pairs
(dedup of heavily repeated images: audit.dedup.duplicate_clusters).
Range search, not top-k: a cluster of any size is found, however many copies it has.

Method by size: up to `exact_max` vectors, exact search as a blocked matmul in torch over
the upper triangle only (MKL on the CPU; cuBLAS in fp16 on a GPU, where candidates are taken
with a margin below the threshold and their cosine recomputed in fp32, so the result is
exact; faiss GPU indexes have no range search, and no faiss-gpu wheel is needed). Beyond
`exact_max`, faiss with the factory string in the config (default IVF with 4*sqrt(n) lists
and Flat codes; 'IVF{nlist},PQ64' trades recall for memory), trained on a sample, searched
with `nprobe` lists. `backend: faiss` forces faiss (IndexFlatIP when exact); with faiss-gpu
and a GPU present the faiss index is copied to every GPU and range search runs as k-NN with a
growing k (`knn_range_search`), since faiss GPU indexes have no range search. Queries go in
blocks sized so one block's similarity matrix stays under `block_bytes`.
The default `exact_max` suits a CPU (exact search is quadratic: ~90 s for 100k x 512 on 2
cores); on a GPU raise it (an H100 does 1M exact in seconds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EDGE_CHUNK = 1 << 20  # edges per yielded block (~25 MB of i, j, sim): memory flat however many duplicates


@dataclass(frozen=True)
class IndexConfig:
    exact_max: int = 250_000  # up to this many vectors: exact search (raise on a GPU)
    factory: str = "IVF{nlist},Flat"  # faiss index_factory string beyond exact_max
    nprobe: int = 32
    train_sample: int = 262_144
    block: int = 8192  # queries per search call, at most
    block_bytes: int = 256 << 20  # and at most this much similarity matrix per block (flat memory as the corpus grows)
    backend: str = "auto"  # 'auto' (exact: torch; beyond exact_max: faiss), 'faiss', 'torch'
    device: str = "auto"


@dataclass
class Edges:
    i: np.ndarray  # int64
    j: np.ndarray  # int64
    sim: np.ndarray  # float32

    @classmethod
    def empty(cls) -> "Edges":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))

    @classmethod
    def concat(cls, parts: list["Edges"]) -> "Edges":
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.i for p in parts]), np.concatenate([p.j for p in parts]),
                   np.concatenate([p.sim for p in parts]))

    def __len__(self) -> int:
        return len(self.i)


def _faiss():
    import faiss
    return faiss


def nlist_for(n: int) -> int:
    return max(1, min(65536, int(4 * math.sqrt(n))))


def build_index(base: np.ndarray, cfg: IndexConfig = IndexConfig()):
    """A faiss index over `base`, exact or approximate by size."""
    faiss = _faiss()
    base = np.ascontiguousarray(base, dtype=np.float32)
    n, d = base.shape
    if n <= cfg.exact_max:
        index = faiss.IndexFlatIP(d)
    else:
        index = faiss.index_factory(d, cfg.factory.format(nlist=nlist_for(n)), faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = base[rng.choice(n, min(n, cfg.train_sample), replace=False)]
        ivf = faiss.extract_index_ivf(index)
        if hasattr(index, "do_polysemous_training"):  # a filter range search never uses; slow to train
            index.do_polysemous_training = False
        index.train(sample)
        ivf.nprobe = cfg.nprobe
    index.add(base)
    return index


def use_torch(cfg: IndexConfig, n_base: int) -> bool:
    if cfg.backend != "auto":
        return cfg.backend == "torch"
    return n_base <= cfg.exact_max


def _torch_device(cfg: IndexConfig):
    import torch
    if cfg.device != "auto":
        return torch.device(cfg.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def iter_torch_range_search(base: np.ndarray, queries: np.ndarray, threshold: float, cfg: IndexConfig,
                            self_search: bool):
    """Exact blocked matmul; on CUDA in fp16 with fp32 accumulation (cosines exact to ~1e-3).
    Yields `Edges` blocks in (query, base) order, each at most EDGE_CHUNK edges: a corpus of
    heavy duplicates is never held as one edge list here. A query block with more than
    4 * EDGE_CHUNK candidates makes the next ones smaller (candidate indices stay bounded)."""
    import torch
    dev = _torch_device(cfg)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    base32 = np.ascontiguousarray(base, np.float32)
    b = torch.from_numpy(base32).to(dev, dtype)
    b32 = b if dtype == torch.float32 else None
    margin = 2e-3 if dtype != torch.float32 else 0.0  # fp16 rounding near the threshold
    block = max(64, min(cfg.block, cfg.block_bytes // max(1, len(base) * b.element_size())))
    gather = max(1024, (16 << 20) // max(1, 4 * base32.shape[1]))  # candidates re-scored at once: <= 16 MB
    start = 0
    with torch.inference_mode():
        while start < len(queries):
            q = torch.from_numpy(np.ascontiguousarray(queries[start:start + block], np.float32)).to(dev)
            first = start if self_search else 0  # self-search: columns j >= block start only
            sims = q.to(dtype) @ b[first:].T
            if self_search:  # within the diagonal block keep only j > i: each pair once
                rows = torch.arange(len(q), device=dev)[:, None]
                sims[:, : len(q)].masked_fill_(torch.arange(min(len(q), sims.shape[1]), device=dev)[None, :] <= rows, -2.0)
            qi_all, bj_all = torch.nonzero(sims >= threshold - margin, as_tuple=True)
            del sims
            for p in range(0, len(qi_all), EDGE_CHUNK):
                qi, bj = qi_all[p:p + EDGE_CHUNK], bj_all[p:p + EDGE_CHUNK]
                exact = torch.empty(len(qi), dtype=torch.float32, device=dev)
                for c in range(0, len(qi), gather):  # recompute the candidates' cosine in fp32: exact
                    ci, cj = qi[c:c + gather], bj[c:c + gather] + first
                    other = b32[cj] if b32 is not None else torch.from_numpy(base32[cj.cpu().numpy()]).to(dev)
                    exact[c:c + gather] = (q[ci] * other).sum(1)
                keep = exact >= threshold
                yield Edges((qi[keep] + start).cpu().numpy().astype(np.int64),
                            (bj[keep] + first).cpu().numpy().astype(np.int64),
                            exact[keep].cpu().numpy().astype(np.float32))
            start += len(q)
            if len(qi_all) > 4 * EDGE_CHUNK:
                block = max(64, int(len(q) * 4 * EDGE_CHUNK / len(qi_all)))
            del qi_all, bj_all


def torch_range_search(base: np.ndarray, queries: np.ndarray, threshold: float, cfg: IndexConfig,
                       self_search: bool) -> Edges:
    """`iter_torch_range_search` as one edge list."""
    return Edges.concat(list(iter_torch_range_search(base, queries, threshold, cfg, self_search)))


def knn_range_search(index, queries: np.ndarray, threshold: float, k0: int = 64) -> tuple:
    """Range search through k-NN, for indexes that only do k-NN (faiss GPU indexes): search k
    neighbours, and for the queries whose k-th neighbour is still over the threshold search
    again with 2k, until every query's list ends below it or holds the whole index.
    Returns (lims, similarities, ids) like faiss's range_search."""
    n = len(queries)
    k = min(k0, index.ntotal)
    sims, ids = index.search(queries, k)
    results: list = [None] * n
    todo = np.arange(n)
    while True:
        full = sims[:, -1] >= threshold
        for r, q in enumerate(todo):
            if not full[r] or k >= index.ntotal:
                keep = (sims[r] >= threshold) & (ids[r] >= 0)
                results[q] = (sims[r][keep], ids[r][keep])
        todo = todo[full] if k < index.ntotal else todo[:0]
        if len(todo) == 0:
            break
        k = min(2 * k, index.ntotal)
        sims, ids = index.search(np.ascontiguousarray(queries[todo]), k)
    lims = np.zeros(n + 1, np.int64)
    lims[1:] = np.cumsum([len(r[0]) for r in results])
    if lims[-1] == 0:
        return lims, np.zeros(0, np.float32), np.zeros(0, np.int64)
    return lims, np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])


def _faiss_gpu(index):
    """The index on every GPU when faiss-gpu and a GPU are present, else None."""
    import faiss
    if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() == 0:
        return None
    return faiss.index_cpu_to_all_gpus(index)


def iter_faiss_range_search(index, queries: np.ndarray, threshold: float, cfg: IndexConfig,
                            self_search: bool):
    """Range search in query blocks, yielding `Edges` per block in query order; a block whose
    result exceeded EDGE_CHUNK makes the next ones smaller (faiss returns a block's results at once)."""
    gpu = _faiss_gpu(index) if cfg.device != "cpu" else None
    start, block = 0, cfg.block
    while start < len(queries):
        q = np.ascontiguousarray(queries[start:start + block], np.float32)
        if gpu is not None:  # faiss GPU indexes have k-NN only
            lims, dist, ids = knn_range_search(gpu, q, threshold)
        else:  # faiss returns inner products strictly above the radius; nudge it to include equality
            lims, dist, ids = index.range_search(q, float(np.nextafter(np.float32(threshold), np.float32(-1))))
        qi = np.repeat(np.arange(len(q), dtype=np.int64), np.diff(lims).astype(np.int64)) + start
        e = Edges(qi, ids.astype(np.int64), dist.astype(np.float32))
        del lims, dist, ids
        if self_search:
            keep = e.j > e.i
            e = Edges(e.i[keep], e.j[keep], e.sim[keep])
        yield e
        start += len(q)
        if len(qi) > EDGE_CHUNK:
            block = max(64, int(len(q) * EDGE_CHUNK / len(qi)))


def faiss_range_search(index, queries: np.ndarray, threshold: float, cfg: IndexConfig,
                       self_search: bool) -> Edges:
    return Edges.concat(list(iter_faiss_range_search(index, queries, threshold, cfg, self_search)))


def iter_self_edges(x: np.ndarray, threshold: float, cfg: IndexConfig = IndexConfig()):
    """All pairs i < j of `x` with cosine >= threshold, as a stream of `Edges` blocks."""
    if len(x) < 2:
        return
    if use_torch(cfg, len(x)):
        yield from iter_torch_range_search(x, x, threshold, cfg, self_search=True)
    else:
        yield from iter_faiss_range_search(build_index(x, cfg), x, threshold, cfg, self_search=True)


def iter_cross_edges(queries: np.ndarray, base: np.ndarray, threshold: float, cfg: IndexConfig = IndexConfig(),
                     index=None):
    """All (query, base) pairs with cosine >= threshold, as a stream of `Edges` blocks;
    `index` reuses a saved faiss index."""
    if len(queries) == 0 or (index is None and len(base) == 0):
        return
    if index is None and use_torch(cfg, len(base)):
        yield from iter_torch_range_search(base, queries, threshold, cfg, self_search=False)
    else:
        yield from iter_faiss_range_search(index if index is not None else build_index(base, cfg), queries,
                                           threshold, cfg, self_search=False)


def self_edges(x: np.ndarray, threshold: float, cfg: IndexConfig = IndexConfig()) -> Edges:
    """All pairs i < j of `x` with cosine >= threshold, as one list (dedup streams `iter_self_edges`)."""
    return Edges.concat(list(iter_self_edges(x, threshold, cfg)))


def cross_edges(queries: np.ndarray, base: np.ndarray, threshold: float, cfg: IndexConfig = IndexConfig(),
                index=None) -> Edges:
    """All (query, base) pairs with cosine >= threshold, as one list."""
    return Edges.concat(list(iter_cross_edges(queries, base, threshold, cfg, index)))


def top1(queries: np.ndarray, base: np.ndarray, exclude: np.ndarray | None = None,
         cfg: IndexConfig = IndexConfig()) -> tuple[np.ndarray, np.ndarray]:
    """(index into base, cosine) of each query's most similar base row, exact, in float32.
    `exclude[i]` is a base row query i may not match (itself, for train-vs-train), or -1."""
    if len(base) == 0:
        raise ValueError("top-1 search needs a non-empty base")
    sims, ids = torch_topk(queries, base, 1, cfg, exclude)
    return ids[:, 0], sims[:, 0]


def torch_topk(queries: np.ndarray, base: np.ndarray, k: int, cfg: IndexConfig,
               exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, indices) of each query's k most similar base rows, exact, blocked matmul.
    `exclude[i]`: a base row query i may not match, or -1."""
    import torch
    dev = _torch_device(cfg)
    b = torch.from_numpy(np.ascontiguousarray(base, np.float32)).to(dev)
    block = max(64, min(cfg.block, cfg.block_bytes // max(1, len(base) * 4)))
    sims, ids = np.zeros((len(queries), k), np.float32), np.zeros((len(queries), k), np.int64)
    with torch.inference_mode():
        for start in range(0, len(queries), block):
            q = torch.from_numpy(np.ascontiguousarray(queries[start:start + block], np.float32)).to(dev)
            dots = q @ b.T
            if exclude is not None:
                ex = torch.from_numpy(np.asarray(exclude[start:start + block], np.int64)).to(dev)
                rows = torch.nonzero(ex >= 0, as_tuple=True)[0]
                dots[rows, ex[rows]] = -2.0
            s, i = dots.topk(k, dim=1)
            sims[start:start + len(q)], ids[start:start + len(q)] = s.cpu().numpy(), i.cpu().numpy()
    return sims, ids
