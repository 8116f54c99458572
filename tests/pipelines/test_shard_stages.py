"""The one-read per-shard step inside `shardguard run`: split GPU stages give the same tables,
and the run records its stage timings (stage_timings table, status, report)."""

from dataclasses import replace

import pytest

from audit.embeddings.embedder_specs import EmbedConfig
from audit.io.output_dir import OutputDir
from audit.perturbations.perturbation_audit import PerturbationConfig
from audit.runs.stage_timings import stage_totals
from audit.io.store import query
from pipelines.config import JobConfig
from pipelines.job import run_ingest

pytestmark = pytest.mark.beam  # runs Beam jobs (tests/conftest.py)

BASE = JobConfig(progress_seconds=0, embed=EmbedConfig(captions=False), perturbations=PerturbationConfig(tests=False))
TABLES = {
    "embeddings": "SELECT shard, key, model, row, vector FROM embeddings ORDER BY ALL",
    "features": "SELECT * EXCLUDE (run_id) FROM perturbation_samples ORDER BY ALL",
    "errors": "SELECT * EXCLUDE (run_id) FROM errors ORDER BY ALL",
}


def test_gpu_stages_split_into_their_own_step_give_the_tables_of_one_read(broken_dir, tmp_path):
    pattern = f"{broken_dir}/bad_{{mixed,truncated}}.tar"
    one = run_ingest(pattern, str(tmp_path / "one"), BASE)
    split = replace(BASE, split_gpu_stages=True, embed=replace(BASE.embed, accelerator="type:nvidia-l4;count:1"))
    two = run_ingest(pattern, str(tmp_path / "two"), split)
    assert one.n_ok == two.n_ok > 0
    for name, sql in TABLES.items():
        a, b = query(tmp_path / "one", sql)[1], query(tmp_path / "two", sql)[1]
        assert a == b and (a or name == "errors"), name


def test_the_run_records_seconds_per_shard_stage_and_corpus_step(broken_dir, tmp_path, capsys):
    from pipelines.cli import main
    s = run_ingest(str(broken_dir / "bad_mixed.tar"), str(tmp_path), BASE)
    _, rows = query(tmp_path, f"SELECT kind, stage, shard, n_inputs FROM stage_timings WHERE run_id = '{s.run_id}' "
                              "ORDER BY ALL")
    shard_stages = {(stage, n) for kind, stage, shard, n in rows if kind == "shard" and shard == "bad_mixed"}
    assert ("ingest", s.n_inputs) in shard_stages
    assert ("embed/sscd-sscd_distilled-onnx-288", s.n_ok) in shard_stages
    assert ("perturbations/features", s.n_ok) in shard_stages
    assert {stage for kind, stage, _, _ in rows if kind == "corpus"} >= {"dedup", "run changes"}
    totals = stage_totals(OutputDir(tmp_path))
    assert totals[0]["stage"] == "ingest" and all(t["seconds"] >= 0 for t in totals)
    assert main(["status", "--out", str(tmp_path)]) == 0
    assert "stage timings of run" in capsys.readouterr().out
    assert "Stage timings" in (tmp_path / "reports" / "index.html").read_text()
    again = run_ingest(str(broken_dir / "bad_mixed.tar"), str(tmp_path), BASE)  # nothing new: no timings file
    assert not (tmp_path / "stage_timings" / f"run={again.run_id}").exists()
