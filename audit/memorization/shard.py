"""Score one ingested shard for memorization (the stage's configuration, MemorizationConfig, is in
audit.memorization.config and importable from here).

Input: the shard's ok sample rows (key, caption, image_offset, image_bytes), an opener for the
tar, a loaded DiffusionModel and a MemorizationConfig. Output: one score row per sample
(key, caption, score, step_scores) and one errors row (stage 'memorization') per sample that
could not be scored: an image that does not decode, every sample of a batch whose model call
raised, or, in pair mode, 'ReadFailed' for the images the tar could not give back (the opener
should retry transient errors: audit.io.retrying_reads; after a read fails for good the rest of
the shard is not read). len(scores) + len(errors) == len(rows), always.
"""

from __future__ import annotations

from typing import Callable

from audit.memorization.diffusion_models import image_pixels
from audit.ingest.image_decode import ImageRejected, pil_rgb
from audit.memorization.scoring import score_pairs, score_prompts
from audit.memorization.config import MemorizationConfig
from audit.ingest.sample_store import image_batches, prefetch


def score_rows(model, cfg: MemorizationConfig, captions: list[str], images: list | None) -> list[list[float]]:
    """Per-step scores of one batch: pair mode scores images with captions, prompt mode captions."""
    if cfg.mode == "prompt":
        return score_prompts(model, captions, cfg.score).tolist()
    return score_pairs(model, image_pixels(images, model.resolution), captions, cfg.score).tolist()


def score_shard(shard: str, uri: str, rows: list[dict], model, cfg: MemorizationConfig,
                opener: Callable, run_id: str) -> tuple[list[dict], list[dict]]:
    rows = sorted(rows, key=lambda r: r["image_offset"])
    scores: list[dict] = []
    errors: list[dict] = []

    def error(r, et, msg):
        errors.append({"run_id": run_id, "stage": "memorization", "shard": shard, "key": r["key"],
                       "error_type": et, "message": f"{model.model_id}: {msg}"})

    batches = image_batches(uri, rows, opener, cfg.pairs_per_batch, need_images=cfg.mode == "pair")
    for chunk, datas, read_error in prefetch(batches):
        if read_error is not None:
            for r in chunk:
                error(r, "ReadFailed", read_error)
            continue
        good, images = chunk, None
        if datas is not None:
            good, images = [], []
            for r, data in zip(chunk, datas):
                try:
                    images.append(pil_rgb(data, model.resolution))
                    good.append(r)
                except ImageRejected as e:  # decoded at ingest, but the bytes may have changed since
                    error(r, "ImageUnreadable", f"{e.error_type}: {e.message}")
                except Exception as e:  # anything else about one image is that sample's row too
                    error(r, "ImageUnreadable", f"{type(e).__name__}: {e}")
        captions = [r.get("caption") or "" for r in good]
        try:
            per_step = score_rows(model, cfg, captions, images) if good else []
        except Exception as e:  # the model failing on one batch: that batch's samples become rows
            for r in good:
                error(r, "MemorizationFailed", f"{type(e).__name__}: {e}")
            continue
        for r, cap, steps in zip(good, captions, per_step):
            scores.append({"key": r["key"], "caption": cap, "score": float(sum(steps) / len(steps)),
                           "step_scores": [float(v) for v in steps]})
    if len(scores) + len(errors) != len(rows):
        raise AssertionError(f"memorization of {shard}: {len(scores)} scores + {len(errors)} errors "
                             f"!= {len(rows)} samples")
    return scores, errors
