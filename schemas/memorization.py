"""Memorization (Wen et al., ICLR 2024), replication (Somepalli et al., CVPR 2023) and attribution tables.

Files: memorization_scores is per shard, OUT/memorization_scores/<model-slug>-<config>/run=<run_id>/<shard>.parquet
(the raw scores, reused by later runs with the same model and settings). memorization and
memorization_runs are corpus-level, OUT/<table>/run=<run_id>/run.parquet: the view shows the
latest run, `<table>_history` every run. replication and replication_summary are written by
`shardguard replication`, one file per check (latest check in the view); attribution by
`shardguard attribution`, one file per run (latest run in the view, `attribution_history` all).
"""

import pyarrow as pa

from schemas.declare import column, table

_STEPS = ("Per-timestep d, averaged over the noise seeds (pair mode: the configured training timesteps; "
          "prompt mode: the first denoising steps).")

MEMORIZATION_SCORES = table(
    "memorization_scores", "One row per scored sample and model: the raw memorization score d.", 1,
    column("run_id", pa.string(), "Run that scored the shard.", False),
    column("shard", pa.string(), "Shard of the sample.", False),
    column("key", pa.string(), "Sample key.", False),
    column("model_id", pa.string(), "Diffusion checkpoint: folder name plus a digest of its UNet.", False),
    column("config", pa.string(), "Digest of the score settings (mode, timesteps, seeds, sampler).", False),
    column("mode", pa.string(), "'pair' (with the training image) or 'prompt' (caption only).", False),
    column("score", pa.float64(), "d = ||eps(x_t, e_caption) - eps(x_t, e_empty)||_2, mean over steps and seeds."),
    column("step_scores", pa.list_(pa.float64()), _STEPS),
)

MEMORIZATION = table(
    "memorization", "One row per scored sample: memorization score, the run's threshold, flag and trigger tokens.", 1,
    column("run_id", pa.string(), "Run that calibrated and flagged.", False),
    column("shard", pa.string(), "Shard of the sample.", False),
    column("key", pa.string(), "Sample key.", False),
    column("model_id", pa.string(), "Diffusion checkpoint: folder name plus a digest of its UNet.", False),
    column("mode", pa.string(), "'pair' or 'prompt'.", False),
    column("caption", pa.string(), "The caption that was scored."),
    column("score", pa.float64(), "d, mean over steps and seeds (higher = more memorized).", False),
    column("step_scores", pa.list_(pa.float64()), _STEPS),
    column("threshold", pa.float64(), "The run's calibrated threshold (memorization_runs says how).", False),
    column("flagged", pa.bool_(), "score >= threshold: dropped by the training filter.", False),
    column("trigger_tokens", pa.list_(pa.struct([("token", pa.string()), ("score", pa.float64())])),
           "Flagged rows: each caption word with its share of the gradient of d (sums to 1); null otherwise."),
    latest_only=True,
)

MEMORIZATION_RUNS = table(
    "memorization_runs", "One row per memorization run: the model, the score settings and the calibration.", 1,
    column("run_id", pa.string(), "Run that calibrated and flagged.", False),
    column("model_id", pa.string(), "Diffusion checkpoint id.", False),
    column("model_path", pa.string(), "Checkpoint folder as configured."),
    column("mode", pa.string(), "'pair' or 'prompt'.", False),
    column("config", pa.string(), "Digest of the score settings (joins memorization_scores.config)."),
    column("settings_json", pa.string(), "The memorization config (timesteps, seeds, sampler, batch) as JSON."),
    column("method", pa.string(), "'fpr' or 'percentile'.", False),
    column("level", pa.float64(), "Target false-positive rate on the reference, or the percentile.", False),
    column("threshold", pa.float64(), "Flag when score >= threshold.", False),
    column("step_thresholds", pa.list_(pa.float64()), "The same rule per step (the training filter's per-timestep cut)."),
    column("timesteps", pa.list_(pa.int64()), "Timesteps of the step columns (pair mode) or denoising timesteps (prompt mode)."),
    column("reference", pa.string(), "What the reference set was: the shards it came from."),
    column("reference_count", pa.int64(), "Scores in the reference set."),
    column("n_scored", pa.int64(), "Samples with a score."),
    column("n_flagged", pa.int64(), "Samples flagged."),
    latest_only=True,
)

REPLICATION = table(
    "replication", "One row per generated image: its most similar training image by SSCD (shardguard replication).", 1,
    column("run_id", pa.string(), "Replication check id.", False),
    column("generated", pa.string(), "Generated image: file path, or '<shard>/<key>' in shards.", False),
    column("prompt", pa.string(), "Prompt that produced it, when known (a .txt beside it, or the shard caption)."),
    column("top1_shard", pa.string(), "Shard of the most similar training image."),
    column("top1_key", pa.string(), "Key of the most similar training image."),
    column("top1_similarity", pa.float32(), "SSCD cosine similarity to it."),
    column("replicated", pa.bool_(), "top1_similarity > the replication threshold (0.5 by default)."),
    column("model", pa.string(), "SSCD model id (the one the training set was embedded with)."),
    column("error", pa.string(), "Why the image could not be checked (then the similarity is null)."),
    latest_only=True,
)

REPLICATION_SUMMARY = table(
    "replication_summary", "Per replication check: statistics for the generated images and the train-vs-train baseline.", 1,
    column("run_id", pa.string(), "Replication check id.", False),
    column("set", pa.string(), "'generated' or 'train_vs_train' (each training image vs its nearest other one).", False),
    column("n", pa.int64(), "Images in the set."),
    column("threshold", pa.float64(), "Replication threshold on top-1 similarity."),
    column("replication_rate", pa.float64(), "Share of images with top-1 similarity > threshold."),
    column("mean_similarity", pa.float64(), "Mean top-1 similarity."),
    column("p95_similarity", pa.float64(), "95th percentile of top-1 similarity."),
    column("generated_from", pa.string(), "--generated as given."),
    column("against", pa.string(), "--against (the training set's audit output)."),
    latest_only=True,
)

ATTRIBUTION = table(
    "attribution", "Per generated image (query), its k most similar training images in a self-supervised "
    "feature space (shardguard attribution): the training data that best explains the output.", 1,
    column("run_id", pa.string(), "Attribution run id.", False),
    column("query", pa.string(), "Generated image: file path under --generated, or '<tar name>/<key>' in tars.", False),
    column("prompt", pa.string(), "Prompt that produced it, when known (a same-name .txt, or the sample's .txt in a tar)."),
    column("rank", pa.int32(), "1 = the most similar training image; null on an error row."),
    column("shard", pa.string(), "Shard of the training image."),
    column("key", pa.string(), "Key of the training image in its shard."),
    column("score", pa.float32(), "Cosine similarity of the query's and the training image's features (stored vectors)."),
    column("model", pa.string(), "Image model id of the features (the one the audit embedded the training set with)."),
    column("error", pa.string(), "Why the query could not be attributed (one row per such query, rank null)."),
    latest_only=True,
)
