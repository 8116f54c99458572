"""Duplicates and keep decisions: corpus-level results, recomputed over all shards each run.

The dedup step writes duplicates (with the keep policy's outcome); decisions are computed once
at the end of a run from the findings (audit.dedup.decisions), never written by a step.

Written once per run to OUT/<table>/run=<run_id>/corpus.parquet. The DuckDB view shows the
latest run (a rerun supersedes it); `<table>_history` keeps every run for run-to-run diffs.
"""

import pyarrow as pa

from schemas.declare import column, table

DUPLICATES = table(
    "duplicates", "One row per (sample, kind) for samples that have at least one duplicate of that kind.", 2,
    column("run_id", pa.string(), "Run that computed the clusters.", False),
    column("shard", pa.string(), "Shard of the sample.", False),
    column("key", pa.string(), "Sample key.", False),
    column("kind", pa.string(), "'exact' (same bytes or pixels), 'near' (SSCD copy), 'semantic' (CLIP image), "
                                "'caption' (same normalized caption or MiniLM near-identical).", False),
    column("cluster", pa.int64(), "Cluster id within this kind (connected components of the duplicate edges).", False),
    column("cluster_size", pa.int64(), "Members of the cluster."),
    column("nearest_shard", pa.string(), "Shard of the most similar other member."),
    column("nearest_key", pa.string(), "Key of the most similar other member."),
    column("similarity", pa.float32(), "Cosine to the nearest member (1.0 for exact and identical captions)."),
    column("is_representative", pa.bool_(), "The member the keep policy keeps (image kinds; caption kind: the first)."),
    column("distinct_captions", pa.int64(), "Distinct normalized captions among the cluster's members."),
    column("repeat_type", pa.string(), "Image kinds: 'same_caption' (one image repeated with one caption, the "
                                       "pattern that drives memorization) or 'different_captions'."),
    column("model", pa.string(), "Embedding model of the edges (null for exact and identical-caption edges)."),
    column("threshold", pa.float32(), "Similarity threshold of this kind in the run's config."),
    column("image_cluster", pa.int64(), "Cluster over the kinds that drop samples (config dedup.drop_kinds) "
                                        "this sample is in (the same on each of its rows), null when in none."),
    column("representative", pa.string(), "'<shard>/<key>' the keep policy keeps in that image cluster."),
    column("drops", pa.bool_(), "True: this kind drops the sample (a drop kind, and the sample is not the "
                                "representative); decisions give the reason '<kind>_duplicate_of:<representative>'. "
                                "Null in rows written before version 2 (their run's decisions say it)."),
    latest_only=True,
)

DECISIONS = table(
    "decisions", "One row per input sample: keep it for training or not, and why. The training filter list, "
    "computed once per run from the latest findings (samples, duplicates, memorization; audit.dedup.decisions).", 1,
    column("run_id", pa.string(), "Run that decided.", False),
    column("shard", pa.string(), "Shard of the sample.", False),
    column("key", pa.string(), "Sample key.", False),
    column("keep", pa.bool_(), "True: train on it.", False),
    column("reasons", pa.list_(pa.string()), "Why not kept, every reason in this order: 'ingest_failed:<ErrorType>' "
                                             "(samples.status 'failed'), '<kind>_duplicate_of:<shard>/<key>' (duplicates "
                                             "rows that drop it, kinds in the order exact, near, semantic, caption), "
                                             "'memorized:<model_id>:d=<score>>=<threshold>' (flagged in the latest "
                                             "memorization run, action 'drop'). Empty when kept."),
    column("image_cluster", pa.int64(), "Cluster over the kinds that drop samples (config dedup.drop_kinds), "
                                        "null for samples with no such duplicate (from duplicates.image_cluster)."),
    column("representative", pa.string(), "'<shard>/<key>' kept for this sample's image cluster."),
    latest_only=True,
)

CONTAMINATION = table(
    "contamination", "One row per eval sample that has a copy in the training set (shardguard contamination).", 1,
    column("run_id", pa.string(), "Run of the contamination check.", False),
    column("eval_shard", pa.string(), "Shard of the eval sample.", False),
    column("eval_key", pa.string(), "Key of the eval sample.", False),
    column("kind", pa.string(), "'exact' (same bytes or pixels) or 'near' (a copy by dedup's rule: SSCD cosine >= "
           "threshold not vetoed by the geometric check, or a nearest neighbour under it that the check confirms).", False),
    column("train_shard", pa.string(), "Shard of the best-matching training sample."),
    column("train_key", pa.string(), "Key of the best-matching training sample."),
    column("similarity", pa.float32(), "SSCD cosine to that training sample (1.0 for exact; under threshold for a confirmed candidate)."),
    column("n_train_matches", pa.int64(), "Training samples that match this eval sample."),
    column("model", pa.string(), "Embedding model of the near search."),
    column("threshold", pa.float32(), "Near-copy threshold used."),
    column("train_out", pa.string(), "Output folder of the training set that was checked against."),
    latest_only=True,
)
