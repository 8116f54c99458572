"""Per-shard stage: Wen et al.'s memorization score d of each ok sample under one diffusion model.

Input (audit.ingest.shard_stages): in pair mode each sample's image, reduced right after the one decode
to what the model resizes from (short side kept >= 2x its resolution), with its caption; in
prompt mode the captions only. The diffusion model loads once per worker (ModelPool) in `setup`.
Batches of `memorization.pairs_per_batch` are scored together (audit.memorization.scoring.score_rows).
Output: OUT/memorization_scores/<model>-<config>/run=<run_id>/<shard>.parquet, marker
OUT/_manifest/memorization/<model>-<config>/<shard>.json (written by the runner, last): a rerun
with the same model and score settings skips the shard.
Failure rows (stage 'memorization', file <shard>.memorize-<model>.parquet): 'ImageUnreadable'
for an image that no longer decodes, 'ReadFailed' for images the tar could not give back, and
'MemorizationFailed' for every sample of a batch whose model call raised.
"""

from __future__ import annotations

from audit.embeddings.embedder_specs import model_slug, visible_devices
from audit.ingest.image_decode import reduced_rgb
from audit.memorization.config import MemorizationConfig, checkpoint_id
from audit.ingest.shard_stages import ModelPool, Sample, ShardStage, StageRows
from schemas import MEMORIZATION_SCORES


def model_id_of(cfg: MemorizationConfig) -> str:
    return checkpoint_id(cfg.model)


def slug(cfg: MemorizationConfig, model_id: str) -> str:
    return f"{model_slug(model_id)}-{cfg.digest()}"


def stage_id(cfg: MemorizationConfig, model_id: str) -> str:
    return f"memorization/{slug(cfg, model_id)}"


def load_model(cfg: MemorizationConfig):
    """The configured audit.memorization.diffusion_models.DiffusionModel (torch and diffusers load here)."""
    from audit.memorization.diffusion_models import DiffusionModel
    return DiffusionModel.load(cfg.model, visible_devices(cfg.device)[0], cfg.dtype or None)


class MemorizationStage(ShardStage):
    error_stage = "memorization"

    def __init__(self, cfg: MemorizationConfig, model_id: str):
        self.cfg, self.model_id = cfg, model_id
        self.id, self.outputs = stage_id(cfg, model_id), (f"memorization_scores/{slug(cfg, model_id)}",)
        self.error_part, self.message_prefix = f"memorize-{model_slug(model_id)}", model_id
        self.needs_image = cfg.mode == "pair"
        self.batch_size = cfg.pairs_per_batch
        self.accelerator = cfg.accelerator
        self.resources = "gpu" if cfg.accelerator else "cpu"

    def setup(self, models: ModelPool) -> None:
        key = ("diffusion", self.cfg.model, self.cfg.device, self.cfg.dtype)
        self.model = models.get(key, lambda: load_model(self.cfg))

    def prepare(self, image, row: dict):
        return reduced_rgb(image, self.model.resolution)

    def process(self, shard: str, run_id: str, batch: list[Sample]) -> StageRows:
        from audit.memorization.scoring import score_rows  # torch
        captions = [s.row.get("caption") or "" for s in batch]  # the runner batches at pairs_per_batch
        images = [s.views[self.id] for s in batch] if self.needs_image else None
        try:
            per_step = score_rows(self.model, self.cfg, captions, images)
        except Exception as e:  # the model failing on one batch: that batch's samples become rows
            return StageRows(errors=[self.error_row(run_id, shard, s.key, "MemorizationFailed", f"{type(e).__name__}: {e}")
                                     for s in batch])
        return StageRows([{"key": s.key, "score": float(sum(steps) / len(steps)),
                           "step_scores": [float(v) for v in steps]} for s, steps in zip(batch, per_step)])

    def write(self, out, run_id: str, shard: str, rows: list) -> dict:
        extra = {"run_id": run_id, "shard": shard, "model_id": self.model_id,
                 "config": self.cfg.digest(), "mode": self.cfg.mode}
        out.write_shard_table(MEMORIZATION_SCORES, run_id, shard, MEMORIZATION_SCORES.from_rows(
            [{**extra, **r} for r in rows]), table=f"memorization_scores/{slug(self.cfg, self.model_id)}")
        return {"model": self.model_id}
