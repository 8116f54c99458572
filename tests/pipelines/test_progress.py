import io
import json
import time

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


def test_progress_line_has_rate_and_an_eta_from_the_shards_left(tmp_path, monkeypatch):
    ing = tmp_path / "ingest"
    ing.mkdir()
    for i in range(2):
        (ing / f"s{i}.json").write_text(json.dumps({"run_id": "r1", "n_inputs": 50, "n_failed": 1}))
    clock = iter([100.0, 110.0])  # monitor start, then the line: 10 s elapsed
    monkeypatch.setattr("pipelines.progress.time.monotonic", lambda: next(clock))
    mon = ProgressMonitor([StageCounter("ingest", ing, "r1", 4)], every=0, stream=io.StringIO())
    line = mon.line()
    # 2 of 4 shards in 10 s -> 10 s left; 100 samples in 10 s
    assert "ingest 2/4 shards" in line and "100 samples ingested (2 failed)" in line
    assert "10 samples/s" in line and "ETA 10s" in line


def test_first_stage_names_the_samples_when_nothing_is_ingested(tmp_path):
    emb = tmp_path / "embed"
    emb.mkdir()
    (emb / "a.json").write_text(json.dumps({"run_id": "r1", "n_inputs": 7, "n_failed": 0}))
    mon = ProgressMonitor([StageCounter("ingest", tmp_path / "none", "r1", 0), StageCounter("sscd", emb, "r1", 3)],
                          every=0, stream=io.StringIO())
    assert "sscd 1/3 shards; 7 samples done (sscd)" in mon.line()


def test_monitor_prints_periodically_while_the_run_goes_on(tmp_path):
    ing = tmp_path / "ingest"
    ing.mkdir()
    stream = io.StringIO()
    with ProgressMonitor([StageCounter("ingest", ing, "r1", 2)], every=0.05, stream=stream):
        time.sleep(0.2)
        (ing / "a.json").write_text(json.dumps({"run_id": "r1", "n_inputs": 3, "n_failed": 0}))
        time.sleep(0.2)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 3 and all(line.startswith("[progress]") for line in lines)
    assert "ingest 0/2" in lines[0] and "ingest 1/2" in lines[-1]
