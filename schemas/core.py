"""Core audit tables written by every run: runs, shards, samples, errors.

Reconciliation contract (checked by tests and by `shardguard run` itself):
for every shard, shards.n_inputs = shards.n_ok + shards.n_failed = count of samples rows,
and every samples row with status 'failed' has exactly one errors row with the same key.
"""

import pyarrow as pa

from schemas.declare import column, table

TS = pa.timestamp("us", tz="UTC")

RUNS = table(
    "runs", "One row per job run: what ran, on what, with which config, and the totals.", 2,
    column("run_id", pa.string(), "Unique id of the run: UTC start time plus a random suffix.", False),
    column("job", pa.string(), "Stages that ran, e.g. 'ingest+embed+dedup'."),
    column("status", pa.string(), "'succeeded' or 'failed' (the failure threshold tripped, or a step raised: see error)."),
    column("error", pa.string(), "Why a failed run failed: the step and the error; null when it succeeded."),
    column("input_pattern", pa.string(), "The --input URI pattern as given (braces and globs allowed)."),
    column("started_at", TS, "When the driver started the run."),
    column("finished_at", TS, "When the driver finished the run."),
    column("runner", pa.string(), "Beam runner that executed the pipeline."),
    column("shardguard_version", pa.string(), "Version of the shardguard package."),
    column("config_json", pa.string(), "The effective job config (YAML + flags) as JSON."),
    column("n_shards_matched", pa.int64(), "Shards the input pattern matched."),
    column("n_shards_skipped", pa.int64(), "Shards skipped because an earlier run completed them."),
    column("n_shards_processed", pa.int64(), "Shards this run completed."),
    column("n_inputs", pa.int64(), "Input samples in the shards this run processed."),
    column("n_ok", pa.int64(), "Samples that passed ingest."),
    column("n_failed", pa.int64(), "Samples that failed (each has an errors row)."),
    column("wall_seconds", pa.float64(), "Driver wall time of the run."),
    column("notes", pa.list_(pa.string()), "What the run skipped and why (e.g. CLIP without weights)."),
    column("embeddings_json", pa.string(), "Per embedding model: vectors written and samples failed, as JSON."),
    column("dedup_json", pa.string(), "Duplicates per kind (edges, clusters, samples) and samples kept/dropped, as JSON."),
    column("memorization_json", pa.string(), "Memorization model, samples scored and flagged, threshold, as JSON."),
    column("perturbations_json", pa.string(), "Perturbation audit: label source, failed tests, chosen sanitizer and its re-test, as JSON."),
)

SHARDS = table(
    "shards", "One row per processed shard: counts that must reconcile, like img2dataset's stats.", 1,
    column("run_id", pa.string(), "Run that processed the shard.", False),
    column("shard", pa.string(), "Shard id: the file name without .tar (e.g. '00000').", False),
    column("uri", pa.string(), "Full URI of the tar that was read."),
    column("status", pa.string(), "'complete', 'truncated' (tar ended early; samples read so far are kept) or 'unreadable'."),
    column("error", pa.string(), "Shard-level error message when status is not 'complete'."),
    column("n_inputs", pa.int64(), "Distinct sample keys found in the tar."),
    column("n_ok", pa.int64(), "Samples with status 'ok'."),
    column("n_failed", pa.int64(), "Samples with status 'failed'."),
    column("n_expected", pa.int64(), "Successful samples img2dataset reported for this shard (NNNNN_stats.json), null if absent."),
    column("tar_bytes", pa.int64(), "Bytes read from the tar."),
    column("seconds", pa.float64(), "Worker time spent on the shard."),
)

SAMPLES = table(
    "samples", "Exactly one row per input sample (a key in a shard), with its outcome.", 1,
    column("run_id", pa.string(), "Run that ingested the sample.", False),
    column("shard", pa.string(), "Shard id the sample came from.", False),
    column("key", pa.string(), "Sample key (the tar member name without extension).", False),
    column("status", pa.string(), "'ok' or 'failed'. Failed samples have one errors row.", False),
    column("error", pa.string(), "'ErrorType: message' when failed, else null."),
    column("url", pa.string(), "Source URL from the sample's .json (img2dataset 'url'), if any."),
    column("caption", pa.string(), "Caption from the .txt (strict UTF-8, surrounding whitespace stripped)."),
    column("image_ext", pa.string(), "Tar member extension of the image (jpg, png, webp, ...)."),
    column("image_format", pa.string(), "Format detected from the bytes by Pillow (JPEG, PNG, WEBP)."),
    column("width", pa.int32(), "Width in pixels after EXIF orientation."),
    column("height", pa.int32(), "Height in pixels after EXIF orientation."),
    column("image_bytes", pa.int64(), "Size of the encoded image in bytes."),
    column("image_offset", pa.int64(), "Byte offset of the image data in the tar (random access)."),
    column("byte_hash", pa.string(), "SHA-256 of the encoded image bytes (exact byte duplicates)."),
    column("pixel_hash", pa.string(), "SHA-256 of the decoded RGB pixels, alpha composited on white (lossless re-encodes)."),
    column("meta_json", pa.string(), "The sample's .json metadata as written by img2dataset, verbatim."),
)

ERRORS = table(
    "errors", "Dead letters: one row per failed sample, plus shard-level failures (key null).", 1,
    column("run_id", pa.string(), "Run that hit the error.", False),
    column("stage", pa.string(), "Pipeline stage: 'read' (tar), 'decode' (image), 'caption', 'meta', ...", False),
    column("shard", pa.string(), "Shard id (file name without .tar).", False),
    column("key", pa.string(), "Sample key, or null for a shard-level error."),
    column("error_type", pa.string(), "Short machine-readable class, e.g. 'CorruptImage', 'TruncatedShard'.", False),
    column("message", pa.string(), "Human-readable explanation.", False),
)
