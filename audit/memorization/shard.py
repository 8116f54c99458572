"""Score one ingested shard for memorization (the stage's configuration, MemorizationConfig, is in
audit.memorization.config and importable from here).

`score_shard`, plain use
(tests, notebooks): the job's stage over a shard's ok sample rows (key, caption, image_offset,
image_bytes), an opener for the tar, a loaded DiffusionModel and a MemorizationConfig. Output: one score row per sample
(key, caption, score, step_scores) and one errors row (stage 'memorization') per sample that
could not be scored: an image that does not decode, every sample of a batch whose model call
raised, or, in pair mode, 'ReadFailed' for the images the tar could not give back (the opener
should retry transient errors: audit.io.retrying_reads; after a read fails for good the rest of
the shard is not read). len(scores) + len(errors) == len(rows), always.
"""

from __future__ import annotations

from typing import Callable

from audit.io.retrying_reads import ReadRetry
from audit.ingest.sample_validation import IngestLimits
from audit.ingest.shard_runner import stage_rows
from audit.memorization.config import MemorizationConfig
from audit.memorization.stage import MemorizationStage


def score_shard(shard: str, uri: str, rows: list[dict], model, cfg: MemorizationConfig,
                opener: Callable, run_id: str) -> tuple[list[dict], list[dict]]:
    """Plain use of the job's stage (audit.memorization.stage.MemorizationStage run by
    audit.ingest.shard_runner.stage_rows) on a model already loaded; score rows gain the caption."""
    stage = MemorizationStage(cfg, model.model_id)
    stage.model = model
    no_retry = IngestLimits(retry=ReadRetry(attempts=1))  # `opener` retries if the caller wants it to
    got = stage_rows([stage], shard, uri, rows, run_id, opener, no_retry, cfg.pairs_per_batch)[stage.id]
    captions = {r["key"]: r.get("caption") or "" for r in rows}
    scores = [{"key": r["key"], "caption": captions[r["key"]], "score": r["score"], "step_scores": r["step_scores"]}
              for r in got.rows]
    if len(scores) + len(got.errors) != len(rows):
        raise AssertionError(f"memorization of {shard}: {len(scores)} scores + {len(got.errors)} errors "
                             f"!= {len(rows)} samples")
    return scores, got.errors
