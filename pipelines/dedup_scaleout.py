"""Beam stage: partitioned (SemDeDup-style) duplicate search that scales past one machine.

Input: the shards of the output folder (one element per shard) and, per embedding model,
k-means centroids trained by the driver on a sample of that model's vectors.
Steps: `AssignShardFn` loads one shard's vectors and emits each vector to its top-2 centroids,
keyed (model, centroid), with its centroid ids -> GroupByKey -> `GroupEdgesFn` searches each
group exactly at the model's threshold, streaming its edges into a union-find, and emits one
`EdgeSummary` per group (O(members): component links, each member's best edge, the number of
pairs this group counts, a pair in two groups counted once) -> one final element clusters the
summaries with the samples' metadata (no vectors needed) and writes duplicates, as the
global mode does.
Output: the same table and summary dict as pipelines.dedup. No worker holds more than one
group's vectors, and no place holds the edges: what meets in one place grows with the
samples (about top_centroids records each), not with the pairs.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq

from audit.dedup.copy_detection import NearEdges, copy_edges, knn_candidates
from audit.copy_check.feature_cache import feature_cache, saving_features
from audit.copy_check.verification import PairVerifier
from audit.ingest.sample_store import byte_hashes
from audit.ingest.stored_images import stored_image_fetcher
from audit.dedup.corpus import load_corpus, model_dirs, shard_vectors
from audit.dedup.duplicate_clusters import VECTOR_KINDS, DedupConfig, find_duplicates
from audit.dedup.incremental import save_accepted_index
from audit.io.output_dir import OutputDir
from audit.dedup.partitioned import assign, group_summary, n_centroids_for, train_centroids
from audit.dedup.vector_index import Edges
from pipelines.dedup import count_decisions, dedup_counters
from pipelines.progress import counter
from pipelines.shard_uris import open_uri
from schemas import DUPLICATES


def kind_of(model_id: str, modality: str) -> str | None:
    for kind, (prefix, mod) in VECTOR_KINDS.items():
        if model_id.startswith(prefix) and mod == modality:
            return kind
    return None


def plan_centroids(out: OutputDir, cfg: DedupConfig, shards: list[str], sample: int = 100_000,
                   seed: int = 0) -> dict[str, tuple[str, np.ndarray]]:
    """model dir name -> (kind, centroids), trained on vectors from a random subset of shards."""
    rng = np.random.default_rng(seed)
    plans = {}
    for mdir in model_dirs(out):
        picked, n_seen, total = [], 0, 0
        kind = None
        for shard in rng.permutation(shards):
            if n_seen >= sample:  # sample full: only count the rest, from the Parquet footers
                total += sum(pq.ParquetFile(f).metadata.num_rows
                             for f in sorted(mdir.glob(f"run=*/{shard}.parquet"))[-1:])
                continue
            model, modality, keys, x = shard_vectors(out, mdir, str(shard))
            kind = kind or kind_of(model, modality)
            total += len(keys)
            if len(keys):
                picked.append(x)
                n_seen += len(keys)
        if kind is None or not picked:
            continue
        k = cfg.n_centroids or n_centroids_for(total)
        plans[mdir.name] = (kind, train_centroids(np.concatenate(picked)[:sample], k, seed))
    return plans


class AssignShardFn(beam.DoFn):
    def __init__(self, out_root: str, plans: dict[str, tuple[str, np.ndarray]], top: int):
        self.out_root, self.plans, self.top = out_root, plans, top

    def process(self, shard: str):
        out = OutputDir(self.out_root)
        hashes = None
        for mdir in model_dirs(out):
            if mdir.name not in self.plans:
                continue
            kind, centroids = self.plans[mdir.name]
            _, _, keys, x = shard_vectors(out, mdir, shard)
            if not keys:
                continue
            if hashes is None:  # the bytes' hash keys the copy check's feature cache
                hashes = byte_hashes(out, shard)
            groups = assign(x, centroids, self.top)
            for row, key in enumerate(keys):
                for c in groups[row]:  # a sample is (shard, key)
                    yield (mdir.name, int(c)), ((str(shard), key), x[row], groups[row], hashes.get(key))


class GroupEdgesFn(beam.DoFn):
    def __init__(self, plans: dict[str, tuple[str, np.ndarray]], cfg: DedupConfig, out_root: str = "",
                 run_id: str = ""):
        self.kinds = {name: kind for name, (kind, _) in plans.items()}
        self.cfg, self.out_root, self.run_id = cfg, out_root, run_id
        self.counts = {k: counter(f"dedup_{k}") for k in ("near_checked", "near_rejected", "near_prepared",
                                                          "near_cache_hits")}

    def verifier(self, kind: str, members: list, part: str) -> PairVerifier | None:
        """The near pairs' geometric check over this group's members (images read back from
        their tars; prepared images from and into the feature cache, this group's own file), or None."""
        if kind != "near" or not self.cfg.near_verify or not self.out_root:
            return None
        out = OutputDir(self.out_root)
        keys = [tuple(m[0]) for m in members]
        features = feature_cache(out, self.cfg, keys, [m[3] for m in members], self.run_id, part) if self.run_id else None
        return PairVerifier(stored_image_fetcher(out, keys, open_uri), self.cfg.copy_detection().rule,
                            features=features)

    def process(self, element):
        """-> (model dir, ([sample id of each node the summary names], summary over those nodes))"""
        (model_dir, group), members = element
        members = sorted(members, key=lambda m: tuple(m[0]))  # corpus order: the check's direction, as globally
        if len(members) < 2:
            return
        kind = self.kinds[model_dir]
        verifier = self.verifier(kind, members, f"{model_dir}-g{group}")
        checker = None
        if verifier is not None:
            det = self.cfg.copy_detection()
            x = np.stack([m[1] for m in members])  # the group's candidates: the same rule as the global mode
            checker = lambda blocks: copy_edges(  # noqa: E731
                NearEdges(blocks, [knn_candidates(x, x, det, self.cfg.index, self_search=True)]), det, verifier)
        with saving_features(verifier):
            s = group_summary(np.stack([m[1] for m in members]), np.stack([m[2] for m in members]), group,
                              self.cfg.threshold(kind), self.cfg.index, checker)
        if verifier is not None:
            for k in ("checked", "rejected", "prepared", "cache_hits"):
                self.counts[f"near_{k}"].inc(getattr(verifier, k))
        used = np.unique(np.concatenate([s.link_i, s.link_j, s.near_i, s.near_j]))
        if len(used) == 0:
            return
        local = np.full(len(members), -1, np.int64)
        local[used] = np.arange(len(used))
        yield model_dir, ([members[k][0] for k in used], s.mapped(local))


class FinalizeFn(beam.DoFn):
    def __init__(self, out_root: str, run_id: str, cfg: DedupConfig, plans):
        self.out_root, self.run_id, self.cfg = out_root, run_id, cfg
        self.kinds = {name: kind for name, (kind, _) in plans.items()}
        self.counts = dedup_counters()

    def process(self, _, summaries):
        out = OutputDir(self.out_root)
        corpus = load_corpus(out, with_vectors=False)
        index = corpus.row_index()
        per_kind: dict[str, list] = {}
        models: dict[str, str] = {}
        for model_dir, (ids, s) in summaries:  # samples that are not ok (no row) drop out
            rows = np.array([index.get(tuple(k), -1) for k in ids], np.int64)
            per_kind.setdefault(self.kinds[model_dir], []).append(s.mapped(rows))
        for mdir in model_dirs(out):
            if mdir.name in self.kinds:
                models[self.kinds[mdir.name]] = shard_model_id(out, mdir)
        vector_edges = {kind: (ss, models.get(kind)) for kind, ss in per_kind.items()}
        for kind, model in models.items():
            vector_edges.setdefault(kind, (Edges.empty(), model))
        result = find_duplicates(corpus, self.cfg, self.run_id, vector_edges)
        out.write_run_table(DUPLICATES, self.run_id, result.duplicates)
        save_kept_index(out, result.decisions, self.cfg)
        count_decisions(self.counts, len(result.decisions), sum(not d["keep"] for d in result.decisions))
        yield {"kinds": result.kinds, "samples": len(result.decisions)}


def save_kept_index(out: OutputDir, decisions: list[dict], cfg: DedupConfig) -> None:
    """The accepted-corpus index for later incremental runs, built shard by shard from the
    kept samples' SSCD vectors (only the kept vectors are ever held together)."""
    keep: dict[str, set[str]] = {}
    for d in decisions:
        if d["keep"]:
            keep.setdefault(d["shard"], set()).add(d["key"])
    for mdir in model_dirs(out):
        model_id = shard_model_id(out, mdir)
        if not model_id or kind_of(model_id, "image") != "near":
            continue
        keys, parts = [], []
        for shard in sorted(keep):
            _, _, shard_keys, x = shard_vectors(out, mdir, shard)
            rows = [i for i, k in enumerate(shard_keys) if k in keep[shard]]
            keys += [(shard, shard_keys[i]) for i in rows]
            parts.append(x[rows])
        if keys:
            save_accepted_index(out, model_id, keys, np.concatenate(parts), cfg)


def shard_model_id(out: OutputDir, mdir) -> str | None:
    for f in sorted(mdir.glob("run=*/*.parquet")):
        t = pq.read_table(f, columns=["model"])
        if t.num_rows:
            return t.column("model")[0].as_py()
    return None


class PartitionedDedup(beam.PTransform):
    def __init__(self, out_root: str, run_id: str, cfg: DedupConfig, shards: list[str]):
        super().__init__()
        self.out_root, self.run_id, self.cfg, self.shards = out_root, run_id, cfg, shards
        self.plans = plan_centroids(OutputDir(out_root), cfg, shards)

    def expand(self, pbegin):
        summaries = (pbegin | "Shards" >> beam.Create(self.shards)
                     | "AssignToCentroids" >> beam.ParDo(AssignShardFn(self.out_root, self.plans, self.cfg.top_centroids))
                     | "GroupByCentroid" >> beam.GroupByKey()
                     | "ExactSearchInGroup" >> beam.ParDo(GroupEdgesFn(self.plans, self.cfg, self.out_root,
                                                                       self.run_id)))
        return (pbegin | "One" >> beam.Create([None])
                | "Cluster" >> beam.ParDo(FinalizeFn(self.out_root, self.run_id, self.cfg, self.plans),
                                          summaries=beam.pvalue.AsIter(summaries)))
