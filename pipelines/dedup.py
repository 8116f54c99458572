"""Beam stage: corpus-wide duplicates, with the keep policy's outcome.

Input: the output folder after ingest and embedding (one element: dedup needs every shard).
Output: one summary dict (per kind: edges, clusters, samples; samples dedup keeps and drops,
ingest failures counted as drops). Side effects: OUT/duplicates/run=<run_id>/run.parquet, atomic
(the job then computes the decisions from it, audit.dedup.decisions),
the accepted-corpus index OUT/index/<model>/ (audit.dedup.incremental) for incremental runs,
and the check's prepared images OUT/features/copy_check/ (audit.copy_check.feature_cache).
The work is audit.dedup.corpus.load_corpus + audit.dedup.duplicate_clusters.find_duplicates.
Failure: an empty corpus raises (nothing to dedup); a corpus without SSCD vectors still gets
exact and caption duplicates, and the summary says near duplicates were not computed.
"""

from __future__ import annotations

import apache_beam as beam

from audit.copy_check.feature_cache import feature_cache, saving_features
from audit.copy_check.verification import PairVerifier
from audit.ingest.stored_images import stored_image_fetcher
from audit.dedup.corpus import load_corpus
from audit.dedup.duplicate_clusters import DedupConfig, find_duplicates
from audit.dedup.incremental import incremental_duplicates, save_from_result
from audit.io.output_dir import OutputDir
from pipelines.shard_uris import open_uri
from pipelines.progress import counter
from schemas import DUPLICATES


def dedup_counters() -> dict:
    return {k: counter(f"dedup_{k}") for k in ("samples", "kept", "dropped", "near_checked", "near_rejected",
                                                    "near_prepared", "near_cache_hits")}


def count_decisions(counts: dict, n_samples: int, n_dropped: int) -> None:
    counts["samples"].inc(n_samples)
    counts["kept"].inc(n_samples - n_dropped)
    counts["dropped"].inc(n_dropped)


def dedup_and_record(out: OutputDir, run_id: str, cfg: DedupConfig, new_shards: set[str] = frozenset()) -> dict:
    """Full dedup (and a fresh accepted-corpus index), or incremental against the saved one."""
    result = incremental_duplicates(out, cfg, run_id, set(new_shards), open_uri) if cfg.incremental else None
    if result is None:
        corpus = load_corpus(out)
        keys = list(zip(corpus.shard, corpus.key))
        verifier = (PairVerifier(stored_image_fetcher(out, keys, open_uri), cfg.copy_detection().rule,
                                 features=feature_cache(out, cfg, keys, corpus.byte_hash, run_id))
                    if cfg.near_verify else None)
        with saving_features(verifier):
            result = find_duplicates(corpus, cfg, run_id, verifier=verifier)
        save_from_result(out, corpus, result, cfg)
    out.write_run_table(DUPLICATES, run_id, result.duplicates)
    dropped = sum(not d["keep"] for d in result.decisions)
    return {"kinds": result.kinds, "samples": len(result.decisions), "dropped": dropped,
            "kept": len(result.decisions) - dropped}


def count_verification(counts: dict, kinds: dict) -> None:
    """The near check's counts (kinds["near"]["verification"]: pairs checked, rejected; images
    prepared, taken from the feature cache), when it ran."""
    check = kinds.get("near", {}).get("verification") or {}
    for k in ("checked", "rejected", "prepared", "cache_hits"):
        if isinstance(check.get(k), int):
            counts[f"near_{k}"].inc(check[k])


class DedupFn(beam.DoFn):
    def __init__(self, run_id: str, cfg: DedupConfig, new_shards: set[str]):
        self.run_id, self.cfg, self.new_shards = run_id, cfg, set(new_shards)
        self.counts = dedup_counters()

    def process(self, out_root: str):
        summary = dedup_and_record(OutputDir(out_root), self.run_id, self.cfg, self.new_shards)
        count_decisions(self.counts, summary["samples"], summary["dropped"])
        count_verification(self.counts, summary["kinds"])
        yield summary


class DedupCorpus(beam.PTransform):
    def __init__(self, out_root: str, run_id: str, cfg: DedupConfig, new_shards: set[str] = frozenset()):
        super().__init__()
        self.out_root, self.fn = out_root, DedupFn(run_id, cfg, new_shards)

    def expand(self, pbegin):
        return pbegin | "Corpus" >> beam.Create([self.out_root]) | "Dedup" >> beam.ParDo(self.fn)
