"""audit.runs.status on real markers (ingest of the broken corpus, no Beam) and real processes."""

import subprocess
import sys

from audit.runs import status as run_status
from audit.io.output_dir import OutputDir
from audit.ingest.shard_ingest import STAGE, ingest_and_record
from tests.conftest import REPO


def _ingest(out: OutputDir, broken_dir, names, run_id="r1"):
    for name in names:
        ingest_and_record(out, name, str(broken_dir / f"{name}.tar"), run_id)


def _by(rows):
    return {(r["shard"], r["stage"]): r for r in rows}


def test_done_failed_and_pending_from_markers(broken_dir, tmp_path):
    out = OutputDir(tmp_path)
    _ingest(out, broken_dir, ["bad_mixed", "bad_truncated", "bad_notatar"])
    matched = ["bad_mixed", "bad_truncated", "bad_notatar", "bad_empty"]
    rows = _by(run_status.shard_rows(tmp_path, matched))
    mixed = rows[("bad_mixed", STAGE)]
    marker = out.markers(STAGE)[[m["shard"] for m in out.markers(STAGE)].index("bad_mixed")]
    assert (mixed["state"], mixed["run_id"], mixed["n_ok"], mixed["n_failed"]) == \
        ("done", "r1", marker["n_ok"], marker["n_failed"])
    # a truncated tar completes (its samples are rows) but the shard failed: the marker says so
    trunc = rows[("bad_truncated", STAGE)]
    assert trunc["state"] == "failed" and trunc["detail"].startswith("truncated")
    assert rows[("bad_notatar", STAGE)]["state"] == "failed" and "unreadable" in rows[("bad_notatar", STAGE)]["detail"]
    assert rows[("bad_empty", STAGE)]["state"] == "pending" and rows[("bad_empty", STAGE)]["run_id"] is None
    [tot] = run_status.stage_totals(list(rows.values()))
    assert (tot["shards"], tot["done"], tot["failed"], tot["pending"]) == (4, 1, 2, 1)
    assert tot["n_inputs"] == sum(m["n_inputs"] for m in out.markers(STAGE))


def test_running_while_the_lock_is_held_then_interrupted_when_the_process_is_gone(broken_dir, tmp_path):
    out = OutputDir(tmp_path)
    _ingest(out, broken_dir, ["bad_mixed"], run_id="old")
    out.lock()
    try:
        assert run_status.lock_held(tmp_path) is True
        run_status.write_running(tmp_path, "r2", str(broken_dir), {STAGE: ["bad_truncated"],
                                                                    "embed/sscd": ["bad_mixed", "bad_truncated"]})
        run = run_status.running_run(tmp_path)
        assert run["state"] == "running" and run["run_id"] == "r2"
        rows = _by(run_status.shard_rows(tmp_path))
        assert rows[("bad_truncated", STAGE)]["state"] == "running"
        assert rows[("bad_mixed", "embed/sscd")]["state"] == "running"
        assert rows[("bad_mixed", STAGE)]["state"] == "done"
    finally:
        out.unlock()
    assert run_status.lock_held(tmp_path) is False
    # the record of a run whose process died (no clean exit): its to-do shards are interrupted
    code = ("from audit.runs import status as run_status; "
            f"run_status.write_running({str(tmp_path)!r}, 'r3', 'x', {{'ingest': ['bad_truncated']}})")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    assert run_status.running_run(tmp_path)["state"] == "interrupted"
    rows = _by(run_status.shard_rows(tmp_path))
    assert (rows[("bad_truncated", STAGE)]["state"], rows[("bad_truncated", STAGE)]["run_id"]) == ("interrupted", "r3")
    run_status.clear_running(tmp_path)
    assert run_status.running_run(tmp_path) is None


def test_not_an_output_folder_and_an_unreadable_marker(tmp_path):
    assert run_status.shard_rows(tmp_path) == [] and run_status.recent_runs(tmp_path) == []
    bad = tmp_path / "_manifest" / "ingest" / "s1.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{half")
    [row] = run_status.shard_rows(tmp_path)
    assert (row["shard"], row["state"]) == ("s1", "unreadable")
