"""Duplicate search at scale: wall time and recall of the exact and IVF paths, one table.

    .venv/bin/python benchmarks/dedup_scale.py                          # CPU: 100k and 200k
    .venv/bin/python benchmarks/dedup_scale.py --device cuda            # GPU: 100k and 1M
    .venv/bin/python benchmarks/dedup_scale.py --sizes 20000,40000 --paths exact-torch,ivf-flat,ivf-pq

What it measures: `audit.dedup.vector_index.self_edges` (every pair i < j with cosine >= --threshold)
on n synthetic vectors, for each size and each path (--paths, default exact-torch,ivf-flat):
  exact-torch  IndexConfig(backend="torch", device=--device): blocked matmul, upper triangle
               (fp32 on CPU; fp16 inputs, fp32 accumulation on CUDA).
  faiss-exact  IndexConfig(backend="faiss"): IndexFlatIP range search (CPU faiss, full square).
  ivf-flat     IndexConfig(backend="faiss", exact_max=0, factory="IVF{nlist},Flat", nprobe=--nprobe),
               nlist = 4*sqrt(n); CPU faiss (faiss GPU indexes have no range search).
  ivf-pq       the same with "IVF{nlist},PQ64" (approximate codes: similarities are estimates;
               audit.dedup.vector_index.build_index turns off faiss's polysemous training, which range
               search never uses: 109 s -> 5 s of build at 20k on this CPU).
  scaleout     hook for the SemDeDup-style partitioned mode:
               audit.dedup.partitioned.partitioned_self_edges(x, thr, n_centroids, top, cfg), exact torch
               inside each partition; n_centroids = --centroids, default the module's n_centroids_for(n)
               (else sqrt(n)); prints "scaleout: not available" when the module cannot be imported.
Seconds = build + search (for exact-torch the self_edges call, host<->device copies included;
for faiss paths build_index then faiss_range_search, the two steps of self_edges, with "build"
= index creation, IVF k-means training and add); data generation excluded. On CUDA one small
warm-up call first (context and cuBLAS start-up).
Recall = found true pairs / true pairs; precision = found true pairs / found pairs.
"growth" = time ratio to the previous size next to (size ratio)^2, the exact search's
quadratic law. Peak GPU memory = torch.cuda.max_memory_allocated during the path.

Data (seeded, --seed): n vectors of dimension d (512), L2-normalized. Background: Gaussian,
so pairwise cosines are ~N(0, 1/d) (sd 0.044 at d=512) and never near 0.75. Planted: --dup-frac
(1%) of the vectors, at random positions, form duplicate clusters: one cluster of 100 (when 1% of n
is >= 100) and up to 30% of the planted vectors in clusters of 100..400 (range search, not top-k, is needed
to find them all), the rest in clusters of 2..20 with geometric sizes (p=0.35). A cluster is a
random unit center c and members normalize(c + s*e), e ~ N(0, I/d), with s per cluster set so
the expected pairwise cosine 1/(1+s^2) is uniform in [0.80, 0.98]. Ground truth = the pairs
(i < j) of a cluster whose true cosine (float64, computed within each cluster) is >= threshold;
the header says how many planted pairs that is and how many lie within 1e-3 of the threshold
(those can flip under fp16 or PQ rounding).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from audit.dedup.vector_index import (Edges, IndexConfig, build_index, faiss_range_search,  # noqa: E402
                                nlist_for, self_edges)

PATHS = ("exact-torch", "faiss-exact", "ivf-flat", "ivf-pq", "scaleout")
EXACT = ("exact-torch", "faiss-exact")


def cluster_sizes(n_dup: int, rng: np.random.Generator) -> list[int]:
    sizes = [100] if n_dup >= 100 else []
    while sum(sizes) + 100 <= 0.3 * n_dup:
        sizes.append(int(min(rng.integers(100, 401), 0.3 * n_dup - sum(sizes))))
    left = n_dup - sum(sizes)
    while left >= 2:
        s = int(min(2 + rng.geometric(0.35) - 1, 20, left))
        if left - s == 1:
            s += 1 if s < 20 else -1
        sizes.append(s)
        left -= s
    return sizes


def make_data(n: int, d: int, dup_frac: float, threshold: float, seed: int):
    """Returns (x float32 [n, d] normalized, truth keys i*n+j sorted, stats dict)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, d), np.float32)
    for s in range(0, n, 65536):
        blk = rng.standard_normal((min(65536, n - s), d), dtype=np.float32)
        x[s:s + len(blk)] = blk / np.linalg.norm(blk, axis=1, keepdims=True)
    sizes = cluster_sizes(int(n * dup_frac), rng)
    pos = rng.permutation(n)[:sum(sizes)]
    truth, planted, near = [], 0, 0
    start = 0
    for size in sizes:
        idx = np.sort(pos[start:start + size])
        start += size
        cos_target = rng.uniform(0.80, 0.98)
        s = math.sqrt(1.0 / cos_target - 1.0)
        c = rng.standard_normal(d)
        c /= np.linalg.norm(c)
        m = c + s * rng.standard_normal((size, d)) / math.sqrt(d)
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        x[idx] = m.astype(np.float32)
        g = x[idx].astype(np.float64) @ x[idx].astype(np.float64).T
        a, b = np.triu_indices(size, 1)
        sim = g[a, b]
        planted += len(sim)
        near += int(np.sum(np.abs(sim - threshold) < 1e-3))
        keep = sim >= threshold
        truth.append(idx[a[keep]].astype(np.int64) * n + idx[b[keep]])
    keys = np.sort(np.concatenate(truth)) if truth else np.zeros(0, np.int64)
    stats = dict(clusters=len(sizes), members=sum(sizes), max_size=max(sizes, default=0),
                 planted=planted, truth=len(keys), near=near)
    return x, keys, stats


def path_config(path: str, device: str, nprobe: int, block: int) -> IndexConfig:
    if path == "exact-torch":
        return IndexConfig(backend="torch", device=device, block=block)
    if path == "faiss-exact":
        return IndexConfig(backend="faiss", block=block)
    if path == "ivf-flat":
        return IndexConfig(backend="faiss", exact_max=0, factory="IVF{nlist},Flat", nprobe=nprobe, block=block)
    if path == "ivf-pq":
        return IndexConfig(backend="faiss", exact_max=0, factory="IVF{nlist},PQ64", nprobe=nprobe, block=block)
    raise ValueError(path)


def run_path(path: str, x: np.ndarray, args) -> tuple[Edges, float | None, str]:
    """(edges, seconds of index build/train or None, note). Faiss paths run self_edges' two steps
    (build_index, faiss_range_search) separately so that build and search can be timed apart."""
    if path == "scaleout":
        import audit.dedup.partitioned as pd  # ImportError handled by the caller
        k = args.centroids or (pd.n_centroids_for(len(x)) if hasattr(pd, "n_centroids_for")
                               else max(1, int(math.sqrt(len(x)))))
        cfg = IndexConfig(backend="torch", device=args.device, block=args.block)
        return pd.partitioned_self_edges(x, args.threshold, n_centroids=k, top=args.top, cfg=cfg), None, \
            f"{k} centroids, top {args.top}"
    import faiss
    cfg = path_config(path, args.device, args.nprobe, args.block)
    if path == "exact-torch":
        return self_edges(x, args.threshold, cfg), None, ""
    t0 = time.perf_counter()
    index = build_index(x, cfg)
    build = time.perf_counter() - t0
    note = f"nlist {nlist_for(len(x))}" if path.startswith("ivf") else ""
    if path.startswith("ivf") and getattr(faiss.extract_index_ivf(index), "do_polysemous_training", False):
        note += ", polysemous training (in build)"  # index_factory default for PQ; range search does not use it
    return faiss_range_search(index, x, args.threshold, cfg, self_search=True), build, note


def score(e: Edges, n: int, truth: np.ndarray) -> tuple[int, float, float, str]:
    """(pairs found, recall, precision, note); pairs are deduplicated and checked for i < j."""
    bad = int(np.sum(e.i >= e.j))
    keys = np.unique(e.i.astype(np.int64) * n + e.j.astype(np.int64))
    dup = len(e) - len(keys)
    hit = int(np.isin(keys, truth, assume_unique=True).sum())
    recall = hit / len(truth) if len(truth) else float("nan")
    precision = hit / len(keys) if len(keys) else float("nan")
    note = ", ".join(s for s in (f"{bad} with i>=j" if bad else "", f"{dup} repeated" if dup else "") if s)
    return len(keys), recall, precision, note


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="torch device of the exact-torch path: cpu or cuda")
    ap.add_argument("--sizes", default="", help="comma-separated n; default 100000,1000000 on cuda, "
                    "100000,200000 on cpu")
    ap.add_argument("--paths", default="exact-torch,ivf-flat", help=f"comma-separated, of {','.join(PATHS)}")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--threshold", type=float, default=0.75)
    ap.add_argument("--dup-frac", type=float, default=0.01)
    ap.add_argument("--nprobe", type=int, default=IndexConfig().nprobe)
    ap.add_argument("--block", type=int, default=IndexConfig().block, help="queries per search call")
    ap.add_argument("--centroids", type=int, default=0, help="scaleout: n_centroids (default n_centroids_for(n))")
    ap.add_argument("--top", type=int, default=2, help="scaleout: partitions searched per vector")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import faiss
    import torch

    cuda = args.device.startswith("cuda")
    sizes = [int(s) for s in (args.sizes or ("100000,1000000" if cuda else "100000,200000")).split(",")]
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    for p in paths:
        if p not in PATHS:
            ap.error(f"unknown path {p!r}; known: {', '.join(PATHS)}")
    if cuda:  # warm-up: CUDA context and cuBLAS handles, not timed
        w = np.random.default_rng(1).standard_normal((4096, args.dim), dtype=np.float32)
        self_edges(w / np.linalg.norm(w, axis=1, keepdims=True), args.threshold,
                   IndexConfig(backend="torch", device=args.device))

    gpu = torch.cuda.get_device_name() if cuda else "none"
    print(f"\ndedup scale: d={args.dim}, threshold {args.threshold}, duplicates {args.dup_frac:.1%}, "
          f"nprobe {args.nprobe}, block {args.block}; torch {torch.__version__} ({torch.get_num_threads()} "
          f"threads), faiss {faiss.__version__} ({faiss.omp_get_max_threads()} threads), GPU: {gpu}")
    rows, last, unavailable = [], {}, []
    for n in sizes:
        t0 = time.perf_counter()
        x, truth, st = make_data(n, args.dim, args.dup_frac, args.threshold, args.seed)
        print(f"n={n}: {st['clusters']} clusters ({st['members']} vectors, largest {st['max_size']}), "
              f"{st['planted']} planted pairs, {st['truth']} >= threshold ({st['near']} within 1e-3 of it), "
              f"generated in {time.perf_counter() - t0:.1f} s")
        for p in paths:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            try:
                e, build, note0 = run_path(p, x, args)
            except ImportError as err:
                if p == "scaleout":
                    unavailable.append(f"scaleout: not available ({err})")
                    continue
                raise
            except RuntimeError as err:  # e.g. a faiss index type without range search
                rows.append((n, p, "error", "", "", "", "", "", "", "", str(err).splitlines()[0][:60]))
                continue
            secs = time.perf_counter() - t0
            found, recall, precision, note = score(e, n, truth)
            note = ", ".join(s for s in (note0, note) if s)
            growth = quad = ""
            if p in last:
                pn, ps = last[p]
                growth, quad = f"{secs / ps:.1f}x", f"{(n / pn) ** 2:.1f}x"
            last[p] = (n, secs)
            mem = ""
            if cuda and p in ("exact-torch", "scaleout"):  # faiss paths run on the CPU
                mem = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
            rows.append((n, p, f"{secs:.2f}", "" if build is None else f"{build:.2f}", str(found),
                         f"{recall:.4f}", f"{precision:.4f}", growth, quad, mem, note))
            print(f"  {p}: {secs:.2f} s", file=sys.stderr, flush=True)
        del x

    hdr = ("n", "path", "seconds", "build", "pairs", "recall", "precision", "growth", "(n ratio)^2",
           "peak GPU mem", "note")
    w = [max(len(str(r[k])) for r in rows + [hdr]) if rows else len(hdr[k]) for k in range(len(hdr))]
    print()
    print("  ".join(h.ljust(w[k]) if k < 2 or k == 10 else h.rjust(w[k]) for k, h in enumerate(hdr)))
    for r in rows:
        r = tuple(r) + ("",) * (len(hdr) - len(r))
        print("  ".join(str(v).ljust(w[k]) if k < 2 or k == 10 else str(v).rjust(w[k]) for k, v in enumerate(r)))
    for line in unavailable:
        print(line)

    # targets: H100 1M exact <= 30 s; this CPU 100k exact <= 60 s; quadratic extrapolation when not measured
    goal_n, goal_s = (1_000_000, 30.0) if cuda else (100_000, 60.0)
    exact = [(r[0], float(r[2])) for r in rows if r[1] in EXACT and r[2] != "error"]
    if exact:
        at = [s for m, s in exact if m == goal_n]
        if at:
            est, how = min(at), "measured"
        else:
            m, s = max(exact)
            est, how = s * (goal_n / m) ** 2, f"extrapolated (quadratic) from n={m}"
        verdict = "meets" if est <= goal_s else "misses"
        mine = f"{'GPU' if cuda else 'CPU'} {goal_n // 1000}k exact: {est:.1f} s {how}, {verdict} its target"
    else:
        mine = "no exact path run"
    print(f"targets: H100: 1M exact <= 30 s; this CPU: 100k exact <= 60 s. Here: {mine}.")


if __name__ == "__main__":
    main()
