"""An output folder written before the stage model (commit 4d201b4: separate ingest, embed and
feature DoFns, decisions written by dedup) resumes with nothing redone: same marker ids, same
tables, the decisions it holds kept. tests/data/out_4d201b4 is that folder, written by 4d201b4 on
tests/data/broken/bad_mixed.tar with `progress_seconds: 0, report: false, perturbations: {tests:
false}` (its audit.duckdb left out: views are rebuilt)."""

import shutil
from pathlib import Path

import pytest

from audit.io.output_dir import OutputDir
from audit.io.store import query
from audit.perturbations.config import PerturbationConfig
from pipelines.config import JobConfig
from pipelines.job import run_ingest
from pipelines.run_plan import plan_run

OLD = Path(__file__).resolve().parents[1] / "data" / "out_4d201b4"
CONFIG = JobConfig(progress_seconds=0, report=False, perturbations=PerturbationConfig(tests=False))


@pytest.mark.beam
def test_a_folder_of_the_version_before_resumes_without_redoing_work(broken_dir, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(OLD, out)
    shard = str(broken_dir / "bad_mixed.tar")
    plan = plan_run(shard, OutputDir(out), CONFIG)
    assert not plan.todo and not plan.later and not any(plan.corpus_steps.values())
    assert all(ids == [] for ids in plan.stage_todo.values()) and len(plan.stage_todo) == 4
    s = run_ingest(shard, str(out), CONFIG)
    assert s.n_shards_skipped == 1 and not s.shards and not s.embeddings and not s.dedup
    _, [(samples, decisions, runs)] = query(out, "SELECT (SELECT count(*) FROM samples), "
                                                 "(SELECT count(*) FROM decisions), (SELECT count(*) FROM runs)")
    assert samples == decisions > 0 and runs == 2
    _, changes = query(out, "SELECT change FROM run_changes")
    assert changes == [("no_changes",)]
