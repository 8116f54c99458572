"""Incremental dedup: new samples against the saved index of the accepted corpus.

Every dedup run saves the SSCD vectors of the samples it kept as a faiss index (exact or IVF
by size, audit.dedup.vector_index.build_index) in OUT/index/<model>/accepted.faiss, with their
(shard, key) in accepted_keys.parquet, written atomically (faiss's own binary format, no
pickle). With `dedup.incremental: true`, a later run loads only the new shards' vectors and
finds: new x new pairs (range search), new x accepted pairs (range search of the new
vectors in the saved index), exact pairs by hash against every accepted sample and every
earlier dropped sample with the same bytes (a byte twin of a dropped sample is dropped, with
that sample as the reason, however the check now judges its near pairs), and caption
pairs among the new samples. The near kind follows audit.dedup.copy_detection's rule as the full
run does: its SSCD pairs are checked, and each new sample's `near_candidates` nearest
neighbours among the new and (through the saved index) the accepted samples are its
candidates; every pair is given as (earlier row, later row) in corpus order, the direction
a full run checks it in. Accepted samples are pinned (they stay kept: they may already
be in a published training set); new samples that copy one are dropped with the accepted
sample as the reason. Earlier duplicates rows (with their keep outcome, so their samples'
decisions) carry over; new samples' clusters get new cluster ids. The previous decisions
(written by the job, audit.dedup.decisions) tell new samples from accepted ones; a run stopped
between its dedup and its decisions makes the next one a full run. The index then grows by the newly kept vectors. The check's prepared images are read from
and added to OUT/features/copy_check/ (audit.copy_check.feature_cache): an accepted sample checked
again is not decoded and described again.
Cost grows with the new batch, not with the corpus: no accepted vector is read except
through the index.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from audit.io import atomic_files, sql_literals
from audit.dedup.copy_detection import CopyDetection, NearEdges, knn_candidates
from audit.copy_check.feature_cache import feature_cache, saving_features
from audit.copy_check.verification import PairVerifier
from audit.ingest.stored_images import stored_image_fetcher
from audit.dedup.decisions import decide, last_run, with_outcome
from audit.dedup.corpus import Corpus, load_corpus
from audit.dedup.duplicate_clusters import VECTOR_KINDS, DedupConfig, DedupResult, find_duplicates
from audit.embeddings.embedder_specs import model_slug
from audit.io.output_dir import OutputDir
from audit.dedup.vector_index import Edges, IndexConfig, build_index, iter_cross_edges, iter_self_edges


def index_dir(out: OutputDir, model_id: str) -> Path:
    return out.root / "index" / model_slug(model_id)


def save_accepted_index(out: OutputDir, model_id: str, keys: list[tuple[str, str]], x: np.ndarray,
                        cfg: DedupConfig, base=None) -> Path:
    """Write (or extend `base`, a loaded index, with) the accepted vectors and their keys."""
    import faiss
    d = index_dir(out, model_id)
    if base is None:
        index = build_index(x, cfg.index)
        all_keys = keys
    else:
        index, old_keys = base
        if len(x):
            index.add(np.ascontiguousarray(x, np.float32))
        all_keys = old_keys + keys
    buf = io.BytesIO()
    pq.write_table(pa.table({"shard": [k[0] for k in all_keys], "key": [k[1] for k in all_keys],
                             "model": [model_id] * len(all_keys)}), buf)
    atomic_files.write_bytes(d / "accepted.faiss", faiss.serialize_index(index).tobytes())
    atomic_files.write_bytes(d / "accepted_keys.parquet", buf.getvalue())
    return d


def load_accepted_index(out: OutputDir, model_id: str):
    """(faiss index, keys) saved by an earlier run, or None."""
    import faiss
    d = index_dir(out, model_id)
    if not (d / "accepted.faiss").exists():
        return None
    index = faiss.deserialize_index(np.frombuffer((d / "accepted.faiss").read_bytes(), dtype=np.uint8))
    t = pq.read_table(d / "accepted_keys.parquet")
    keys = list(zip(t.column("shard").to_pylist(), t.column("key").to_pylist()))
    if index.ntotal != len(keys):
        raise ValueError(f"{d}: index has {index.ntotal} vectors but {len(keys)} keys; rerun without incremental")
    return index, keys


def save_from_result(out: OutputDir, corpus: Corpus, result: DedupResult, cfg: DedupConfig, base=None) -> None:
    """Save the kept SSCD vectors of `corpus` (extending `base` in incremental mode)."""
    found = corpus.matrix("sscd:", "image")
    if found is None:
        return
    model_id, rows, x = found
    keep = {(d["shard"], d["key"]) for d in result.decisions if d["keep"]}
    sel = [k for k, r in enumerate(rows) if (corpus.shard[r], corpus.key[r]) in keep]
    keys = [(corpus.shard[rows[k]], corpus.key[rows[k]]) for k in sel]
    save_accepted_index(out, model_id, keys, x[sel], cfg, base)


def previous(out: OutputDir, table: str) -> list[dict]:
    files = [p for p in out.written_files(table) if p.name == "run.parquet"]
    if not files:
        return []
    con = duckdb.connect()
    try:
        src = sql_literals.read_parquet(files)
        rel = con.sql(f"SELECT * FROM {src} WHERE run_id = (SELECT max(run_id) FROM {src})")
        return rel.to_arrow_table().to_pylist()
    finally:
        con.close()


def _ordered(i: np.ndarray, j: np.ndarray, sim: np.ndarray) -> Edges:
    """Pairs as (earlier row, later row): the check is not symmetric, and a full run gives each
    pair in corpus order."""
    return Edges(np.minimum(i, j), np.maximum(i, j), sim)


def _accepted_rows(against, j: np.ndarray) -> np.ndarray:
    """Corpus rows of accepted index ids (-1: not in this corpus)."""
    (_, acc_keys), rows_of = against
    return np.array([rows_of.get(acc_keys[k], -1) for k in j], np.int64)


def _edge_stream(rows: np.ndarray, x: np.ndarray, threshold: float, cfg: IndexConfig, against=None):
    """Edge blocks in corpus rows: the batch's own pairs, then with `against` ((index, keys),
    row of each key) its pairs with the accepted corpus; consumed once by find_duplicates."""
    for e in iter_self_edges(x, threshold, cfg):
        yield _ordered(rows[e.i], rows[e.j], e.sim)
    if against is not None:
        index = against[0][0]
        for c in iter_cross_edges(x, np.zeros((0, x.shape[1]), np.float32), threshold, cfg, index=index):
            acc_rows = _accepted_rows(against, c.j)
            ok = acc_rows >= 0
            yield _ordered(rows[c.i][ok], acc_rows[ok], c.sim[ok])


def new_candidates(rows: np.ndarray, x: np.ndarray, det: CopyDetection, cfg: IndexConfig, against=None) -> Edges:
    """The near candidates (audit.dedup.copy_detection, step 2) of the new vectors `x` (corpus rows
    `rows`): each one's `det.candidates` nearest neighbours among the new vectors and, with
    `against` ((index, keys), row of each key), the accepted ones through the saved index,
    kept when candidate_threshold <= cosine < threshold, as a full run ranks them; each pair
    once, as (earlier row, later row). Accepted ids without a corpus row are skipped."""
    k = det.candidates
    if k <= 0 or len(x) == 0:
        return Edges.empty()
    every = dataclasses.replace(det, candidate_threshold=-np.inf, threshold=np.inf)  # rank first, then filter
    own = knn_candidates(x, x, dataclasses.replace(every, candidates=k + 1), cfg)  # each row finds itself too
    q, b, s = [rows[own.i]], [rows[own.j]], [own.sim]
    if against is not None and against[0][0].ntotal:
        acc = knn_candidates(x, np.zeros((0, x.shape[1]), np.float32), every, cfg, index=against[0][0])
        q.append(rows[acc.i])
        b.append(_accepted_rows(against, acc.j))
        s.append(acc.sim)
    q, b, s = np.concatenate(q), np.concatenate(b), np.concatenate(s).astype(np.float32)
    keep = (b >= 0) & (b != q)
    q, b, s = q[keep], b[keep], s[keep]
    order = np.lexsort((-s, q))  # per query, nearest first
    q, b, s = q[order], b[order], s[order]
    starts = np.flatnonzero(np.r_[True, q[1:] != q[:-1]]) if len(q) else np.zeros(0, np.int64)
    rank = np.arange(len(q)) - np.repeat(starts, np.diff(np.r_[starts, len(q)]))
    keep = (rank < k) & (s >= det.candidate_threshold) & (s < det.threshold)
    e = _ordered(q[keep], b[keep], s[keep])
    n = int(e.j.max(initial=0)) + 1  # j > i
    _, first = np.unique(e.i * n + e.j, return_index=True)
    return Edges(e.i[first], e.j[first], e.sim[first])


def incremental_duplicates(out: OutputDir, cfg: DedupConfig, run_id: str, new_shards: set[str],
                           opener=None) -> DedupResult | None:
    """None when there is nothing to build on (no earlier decisions or index): run the full dedup.
    `opener(uri)` lets near pairs be verified geometrically (cfg.near_verify) from the stored images."""
    if last_run(out, "duplicates") > last_run(out, "decisions"):
        return None  # a run stopped between its dedup and its decisions: the index may hold its samples
    prev_dec = {(d["shard"], d["key"]): d for d in previous(out, "decisions")}
    corpus = load_corpus(out, vector_shards=new_shards)
    sscd = corpus.matrix("sscd:", "image")
    base = load_accepted_index(out, sscd[0]) if sscd else None
    if not prev_dec or base is None:
        return None
    keys = list(zip(corpus.shard, corpus.key))
    is_new = np.array([k not in prev_dec for k in keys])
    accepted = np.array([bool(prev_dec.get(k, {}).get("keep")) for k in keys])
    # an earlier sample that was dropped still marks its bytes as seen: a new byte twin of it is an
    # exact duplicate whatever the near rule says about the twin's own neighbours (its earlier
    # decision never changes: see below)
    new_hashes = set(np.asarray(corpus.byte_hash)[is_new].tolist()) - {None, ""}
    twins = ~is_new & ~accepted & np.array([h in new_hashes for h in corpus.byte_hash])
    mask = is_new | accepted | twins
    sub = corpus.subset(mask)
    rows_of = sub.row_index()
    vector_edges: dict[str, tuple] = {}
    for kind, (prefix, modality) in VECTOR_KINDS.items():
        found = sub.matrix(prefix, modality)
        if found is None:
            continue
        model_id, rows, x = found
        against = (base, rows_of) if kind == "near" else None  # new x accepted through the saved index
        vector_edges[kind] = (_edge_stream(rows, x, cfg.threshold(kind), cfg.index, against), model_id)
    sub_keys = list(zip(sub.shard, sub.key))  # accepted samples' prepared images come from the feature cache
    verifier = (PairVerifier(stored_image_fetcher(out, sub_keys, opener), cfg.copy_detection().rule,
                             features=feature_cache(out, cfg, sub_keys, sub.byte_hash, run_id))
                if opener is not None and cfg.near_verify else None)
    if "near" in vector_edges and verifier is not None:  # candidates need the check, as in a full run
        _, rows, x = sub.matrix(*VECTOR_KINDS["near"])
        cand = new_candidates(rows, x, cfg.copy_detection(), cfg.index, (base, rows_of))
        pairs, model_id = vector_edges["near"]
        vector_edges["near"] = (NearEdges(pairs, [cand]), model_id)
    with saving_features(verifier):
        result = find_duplicates(sub, cfg, run_id, vector_edges, pinned=accepted[mask], verifier=verifier)
    new_keys = {k for k, n in zip(keys, is_new) if n}
    # rows of an older version lack the keep policy's outcome: the previous decisions hold it
    prev_dups = with_outcome(previous(out, "duplicates"), prev_dec.values())
    offsets = {}
    for row in prev_dups:
        offsets[row["kind"]] = max(offsets.get(row["kind"], -1), row["cluster"])
    # earlier samples keep their earlier rows, so their earlier decision: accepted ones stay kept
    # even when a new sample links two of them into one cluster, dropped twins stay dropped
    duplicates = [dict(r, run_id=run_id) for r in prev_dups]
    for r in result.duplicates:
        if (r["shard"], r["key"]) in new_keys:
            duplicates.append(dict(r, cluster=r["cluster"] + offsets.get(r["kind"], -1) + 1))
    save_from_result(out, sub.subset(np.array([k in new_keys for k in zip(sub.shard, sub.key)])),
                     result, cfg, base)
    samples = [{"shard": s, "key": k, "status": st, "error": e}
               for s, k, st, e in zip(corpus.shard, corpus.key, corpus.status, corpus.error)]
    return DedupResult(duplicates, decide(samples, duplicates, {}, run_id), result.kinds)
