import io
import json

from pipelines.progress import ProgressMonitor, StageCounter


def test_progress_counts_this_runs_markers_per_stage(tmp_path):
    ing, emb = tmp_path / "ingest", tmp_path / "embed"
    ing.mkdir(), emb.mkdir()
    (ing / "a.json").write_text(json.dumps({"run_id": "r1", "n_inputs": 10, "n_failed": 2}))
    (ing / "b.json").write_text(json.dumps({"run_id": "old", "n_inputs": 99, "n_failed": 0}))
    (emb / "a.json").write_text(json.dumps({"run_id": "r1", "n_inputs": 8, "n_failed": 0}))
    mon = ProgressMonitor([StageCounter("ingest", ing, "r1", 2), StageCounter("sscd", emb, "r1", 2)],
                          every=0, stream=io.StringIO())
    line = mon.line()
    assert "ingest 1/2, sscd 1/2 shards" in line and "10 samples ingested (2 failed)" in line
    assert "ETA" in line and "?" not in line
