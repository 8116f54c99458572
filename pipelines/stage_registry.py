"""The per-shard stages a run has, from its config: one line per stage family.

Adding a per-shard stage: write its module in audit/ (a ShardStage subclass: id, outputs,
error_stage/error_part, prepare/process/write; see audit.ingest.shard_stages) and add one line to
`FAMILIES` below that builds its instances from the JobConfig. The job (pipelines.job), the
plan (`run --dry-run`) and the progress counters take it from here.
"""

from __future__ import annotations

from audit.embeddings.stage import embed_stages
from audit.embeddings.embedder_specs import plan_embedders
from audit.memorization.stage import MemorizationStage, model_id_of
from audit.perturbations.feature_stage import FeatureStage
from audit.ingest.shard_stages import ShardStage
from pipelines.config import JobConfig

FAMILIES = [
    ("embed", lambda c: embed_stages(plan_embedders(c.embed)[0], c.embed)),
    ("memorization", lambda c: [MemorizationStage(c.memorization, model_id_of(c.memorization))]
     if c.memorization.enabled else []),
    ("perturbation_features", lambda c: [FeatureStage()] if c.perturbations.features else []),
]


def shard_stages(config: JobConfig) -> list[ShardStage]:
    """Every per-shard stage the config turns on, in a fixed order (embed, memorization, features)."""
    return [st for _, build in FAMILIES for st in build(config)]
