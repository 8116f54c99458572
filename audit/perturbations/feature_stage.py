"""Per-shard stage: the perturbation audit's pixel features of each ok sample.

Input (audit.ingest.shard_stages): each sample's decoded image (upright, own mode); `prepare` takes the
central crop the features look at (audit.perturbations.features.crop_offsets, native resolution:
nothing is resampled) and converts only that crop to RGB, then computes the features.
Output: OUT/perturbation_samples/run=<run_id>/<shard>.parquet (one row per ok sample), marker
OUT/_manifest/perturbations/features/<shard>.json (written by the runner, last).
Failure rows (stage 'perturbation_features', file <shard>.perturb.parquet): 'FeaturesFailed' for
an image that no longer decodes or cannot be analysed (too small), 'ReadFailed' for images the
shard could not give back. features + errors = ok samples (the runner checks).
"""

from __future__ import annotations

import numpy as np

from audit.ingest.image_decode import decode_oriented, to_rgb
from audit.ingest.shard_stages import Sample, ShardStage, StageRows
from schemas import PERTURBATION_SAMPLES

FEATURE_STAGE = "perturbations/features"


def image_features(img) -> dict:
    """sample_features of a decoded (upright) image at its native resolution; only the central
    crop the features look at is converted to RGB (no full-size RGB copy)."""
    from audit.perturbations.features import MAX_SIDE, crop_offsets, sample_features  # OpenCV
    r0, c0 = crop_offsets(img.height, img.width, MAX_SIDE)
    crop = to_rgb(img.crop((c0, r0, min(img.width, c0 + MAX_SIDE), min(img.height, r0 + MAX_SIDE))))
    return sample_features(np.asarray(crop), MAX_SIDE, offset=(r0, c0))


def native_features(data: bytes) -> dict:
    """image_features of encoded image bytes, decoded under ingest's guards."""
    return image_features(decode_oriented(data))


class FeatureStage(ShardStage):
    id = FEATURE_STAGE
    outputs = ("perturbation_samples",)
    error_stage, error_part, unreadable_type = "perturbation_features", "perturb", "FeaturesFailed"

    def prepare(self, image, row: dict) -> dict:
        return image_features(image)

    def process(self, shard: str, run_id: str, batch: list[Sample]) -> StageRows:
        return StageRows([{"run_id": run_id, "shard": shard, "key": s.key, **s.views[self.id]} for s in batch])

    def write(self, out, run_id: str, shard: str, rows: list) -> dict:
        out.write_shard_table(PERTURBATION_SAMPLES, run_id, shard, PERTURBATION_SAMPLES.from_rows(rows))
        return {}
