"""Beam metrics counters: fixed names per stage (pipelines.progress.COUNTERS), read back from
PipelineResult.metrics().query(), equal to what the completion markers and tables say."""

import logging

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
import pyarrow.parquet as pq
import pytest

from audit.dedup.decisions import write_decisions
from audit.embeddings.embedder_specs import EmbedConfig, plan_embedders
from audit.io.output_dir import OutputDir
from audit.perturbations.perturbation_audit import PerturbationConfig
from audit.ingest.shard_ingest import STAGE
from pipelines.config import JobConfig
from pipelines.dedup import DedupCorpus
from audit.embeddings.stage import embed_stages, stage_id as embed_stage
from audit.perturbations.feature_stage import FEATURE_STAGE, FeatureStage
from pipelines.job import run_ingest
from pipelines import perturbations
from pipelines.shard_stages import ShardStages
from pipelines.progress import COUNTERS, NAMESPACE, SHARD_COUNTS, SHARD_STAGES
from audit.dedup.duplicate_clusters import DedupConfig
from audit.ingest.sample_validation import IngestLimits


def _query(result, name: str) -> int:
    f = MetricsFilter().with_namespace(NAMESPACE).with_name(name)
    return sum(c.committed for c in result.metrics().query(f)["counters"])


def _totals(markers):
    return {"shards": len(markers), **{k: sum(m[f"n_{k if k != 'samples' else 'inputs'}"] for m in markers)
                                       for k in ("samples", "ok", "failed")}}


def test_every_per_shard_stage_has_the_four_counters():
    for stage in SHARD_STAGES:
        assert all(f"{stage}_{k}" in COUNTERS for k in SHARD_COUNTS), stage


@pytest.mark.beam
def test_counters_read_back_by_name_match_the_markers(broken_dir, tmp_path):
    out = OutputDir(tmp_path)
    shards = [(n, str(broken_dir / f"{n}.tar")) for n in ("bad_mixed", "bad_truncated")]
    embed = EmbedConfig(sscd="sscd_distilled", captions=False)
    specs, _ = plan_embedders(embed)
    p = beam.Pipeline()
    _ = (p | beam.Create(shards)
         | ShardStages(str(tmp_path), "r1", embed_stages(specs, embed) + [FeatureStage()], IngestLimits()))
    result = p.run()
    result.wait_until_finish()
    stages = {"ingest": STAGE, "embed": embed_stage(specs[0].model_ids[0]), "perturbation_features": FEATURE_STAGE}
    for name, marker_stage in stages.items():
        expected = _totals(out.markers(marker_stage))
        assert expected["shards"] == 2 and expected["samples"] > 0
        assert {k: _query(result, f"{name}_{k}") for k in SHARD_COUNTS} == expected, name

    p = beam.Pipeline()
    _ = p | "Dedup" >> DedupCorpus(str(tmp_path), "r2", DedupConfig())
    _ = p | "Tests" >> perturbations.TestPerturbations(str(tmp_path), "r2", PerturbationConfig())
    result = p.run()
    result.wait_until_finish()
    write_decisions(out, "r2")  # what the job does after its corpus steps (no memorization here)
    decisions = pq.read_table(tmp_path / "decisions" / "run=r2" / "run.parquet").to_pylist()
    kept = sum(d["keep"] for d in decisions)
    assert [_query(result, f"dedup_{k}") for k in ("samples", "kept", "dropped")] == \
        [len(decisions), kept, len(decisions) - kept]
    flags = pq.read_table(next((tmp_path / "perturbation_flags").glob("run=r2/*.parquet"))).to_pylist()
    assert _query(result, "perturbation_tests_flagged") == sum(f["flagged"] for f in flags)


@pytest.mark.beam
def test_the_job_logs_the_final_counter_values(broken_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="shardguard.counters")
    cfg = JobConfig(progress_seconds=0, embed=EmbedConfig(enabled=False),
                    perturbations=PerturbationConfig(features=False, tests=False))
    s = run_ingest(str(broken_dir / "bad_mixed.tar"), str(tmp_path), cfg)
    lines = [r.getMessage() for r in caplog.records if r.name == "shardguard.counters"]
    ingest = next(line for line in lines if line.startswith("ingest/embed pipeline counters"))
    assert f"ingest_samples={s.n_inputs}" in ingest and f"ingest_failed={s.n_failed}" in ingest
    assert any(line.startswith("dedup pipeline counters") and "dedup_dropped=" in line for line in lines)


@pytest.mark.beam
def test_memorization_counters_match_its_markers(broken_dir, tmp_path):
    from audit.memorization.shard import MemorizationConfig
    from audit.ingest.shard_ingest import ingest_and_record
    from audit.memorization.stage import MemorizationStage, model_id_of, stage_id as mem_stage
    from pipelines.memorization import FlagMemorization
    from tests.diffusion_checkpoints import random_checkpoint

    out = OutputDir(tmp_path / "out")
    ingest_and_record(out, "bad_mixed", str(broken_dir / "bad_mixed.tar"), "r1")
    cfg = MemorizationConfig(model=str(random_checkpoint(tmp_path / "ck")), device="cpu")
    mid = model_id_of(cfg)
    p = beam.Pipeline()
    _ = (p | beam.Create([("bad_mixed", str(broken_dir / "bad_mixed.tar"))])
         | ShardStages(str(out.root), "r1", [MemorizationStage(cfg, mid)], IngestLimits(), ingest=False))
    result = p.run()
    result.wait_until_finish()
    expected = _totals(out.markers(mem_stage(cfg, mid)))
    assert expected["shards"] == 1 and expected["ok"] > 0
    assert {k: _query(result, f"memorization_{k}") for k in SHARD_COUNTS} == expected
    p = beam.Pipeline()
    _ = p | FlagMemorization(str(out.root), "r2", cfg, mid)
    result = p.run()
    result.wait_until_finish()
    rows = pq.read_table(out.root / "memorization" / "run=r2" / "run.parquet").to_pylist()
    assert _query(result, "memorization_flagged") == sum(r["flagged"] for r in rows)


@pytest.mark.beam
def test_dedup_counts_the_near_pairs_its_geometric_check_saw(demo_sample, tmp_path):
    """dedup_near_checked / dedup_near_rejected equal the check's own counts (the kinds summary
    of the same dedup run directly), and the check saw pairs on the demo sample;
    dedup_near_prepared / dedup_near_cache_hits count its images (audit.copy_check.feature_cache)."""
    from pipelines.dedup import dedup_and_record
    cfg = JobConfig(progress_seconds=0, report=False, embed=EmbedConfig(captions=False),
                    dedup=DedupConfig(enabled=False), perturbations=PerturbationConfig(features=False, tests=False))
    run_ingest(f"{demo_sample}/0000{{0,1}}.tar", str(tmp_path), cfg)
    p = beam.Pipeline()
    _ = p | "Dedup" >> DedupCorpus(str(tmp_path), "r2", DedupConfig())
    result = p.run()
    result.wait_until_finish()
    check = dedup_and_record(OutputDir(tmp_path), "r3", DedupConfig())["kinds"]["near"]["verification"]
    assert check["checked"] > 0
    assert [_query(result, f"dedup_near_{k}") for k in ("checked", "rejected")] == [check["checked"], check["rejected"]]
    # the images the first run's check prepared are in the feature cache: the second prepares none
    assert _query(result, "dedup_near_prepared") > 0 and _query(result, "dedup_near_cache_hits") == 0
    assert check["prepared"] == 0 and check["cache_hits"] == _query(result, "dedup_near_prepared")
