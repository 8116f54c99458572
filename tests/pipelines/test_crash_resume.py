"""Crash and resume: `shardguard run` killed with SIGKILL at seeded random points (startup or
ingest, the per-shard stages, the corpus steps), rerun until it completes, must leave exactly the
tables of an uninterrupted run: no lost or duplicated rows, no temp files, every Parquet file
readable, no shard file without its completion marker. The run lock (a flock on OUT/.lock) is
released by the kernel when the holder is killed; a second concurrent run gets exit code 3."""

from __future__ import annotations

import fcntl
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from audit.io.folder_ownership import claim
from audit.io.output_dir import OutputDir
from audit.runs.status import RUNNING_FILE, lock_held
from pipelines.config import load_config
from pipelines.job import plan_run, run_ingest
from audit.perturbations.config import needs_testing
from tests.job_outputs import table_rows

REPO = Path(__file__).resolve().parents[2]
JOB_YAML = REPO / "tests" / "data" / "small_job.yaml"
SEED = 9
RUN_TIMEOUT = 300  # seconds one attempt may take before the test gives up

pytestmark = [pytest.mark.slow, pytest.mark.beam]


def start_run(inp: Path, out: Path, config: Path = JOB_YAML) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", "--input", str(inp), "--out", str(out),
                             "--config", str(config), "-q"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def finish(p: subprocess.Popen) -> tuple[int, str]:
    out, _ = p.communicate(timeout=RUN_TIMEOUT)
    return p.returncode, out.decode(errors="replace")


def _files(out: Path, pattern: str) -> set:
    return {(p, p.stat().st_mtime_ns) for p in out.glob(pattern) if p.exists()}


# Kill points, in order: (what, a file that must be written in OUT by this attempt first, then a
# seeded random delay range in seconds). Each attempt resumes the previous one's work.
KILL_POINTS = [
    ("ingest", "samples/run=*/*.parquet", (0.0, 0.3)),
    ("per-shard stages (embeddings, perturbation features)", "_manifest/[ep]*/**/*.json", (0.0, 1.0)),
    ("corpus steps (dedup done, perturbation tests)", "decisions/run=*/run.parquet", (0.0, 2.0)),
    ("end of the run (run changes, runs row, views)", "exports/perturbation_sanitizer.json", (0.0, 0.5)),
]


def _kill_at(p: subprocess.Popen, out: Path, pattern: str, delay: float) -> bool:
    """Wait until this attempt writes a file matching `pattern`, then `delay` s, then SIGKILL.
    False: the attempt ended first."""
    before = _files(out, pattern)
    deadline = time.monotonic() + RUN_TIMEOUT
    while not (_files(out, pattern) - before):
        if p.poll() is not None:
            return False
        assert time.monotonic() < deadline, "attempt neither progressed nor ended"
        time.sleep(0.01)
    time.sleep(delay)
    if p.poll() is not None:
        return False
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    return True


def _progress(out: Path) -> dict:
    """Completed markers per stage and corpus outputs present, for the log of each kill."""
    o = OutputDir(out)
    stages = ["ingest", "perturbations/features"] + [f"embed/{d.name}" for d in (out / "_manifest" / "embed").glob("*")]
    done = {st: len(o.markers(st)) for st in stages}
    done["decisions"] = len(list(out.glob("decisions/run=*/run.parquet")))
    done["perturbation_tests"] = len(list(out.glob("perturbation_tests/run=*/run.parquet")))
    done["runs"] = len(list(out.glob("runs/run=*/run.parquet")))
    return done


def _assert_lock_free(out: Path) -> None:
    """The kernel dropped the killed process's flock: /proc/locks lists none, and we can take it."""
    assert lock_held(out) is False
    fd = os.open(out / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError if still held
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _assert_clean_folder(out: Path) -> None:
    assert not [p for p in out.rglob(".sg-tmp-*")], "temp files left"
    assert not (out / "_tmp").exists(), "a run's private temp folder was left"
    assert not (out / RUNNING_FILE).exists()
    for p in out.rglob("*.parquet"):
        pq.read_table(p)  # every Parquet file whole and readable
    o = OutputDir(out)
    # every shard file belongs to the run its stage's completion marker names, one file per shard
    owners = {("samples", ""): "ingest", ("errors", ""): "ingest", ("shards", ""): "ingest",
              ("perturbation_samples", ""): "perturbations/features", ("errors", "perturb"): "perturbations/features"}
    for d in (p for p in (out / "embeddings").glob("*") if p.is_dir()):
        owners[(f"embeddings/{d.name}", "")] = f"embed/{d.name}"
        owners[("errors", f"embed-{d.name}")] = f"embed/{d.name}"
    for d in (p for p in (out / "vectors").glob("*") if p.is_dir()):  # vector files too
        marked = {m["shard"] for m in o.markers(f"embed/{d.name}")}
        assert {f.stem for f in d.iterdir()} <= marked, f"vector files without a marker in {d}"
    for (table, part), stage in owners.items():
        marked = {m["shard"]: m["run_id"] for m in o.markers(stage)}
        files = {}  # path -> shard
        for p in o.table_dir(table).glob("run=*/*.parquet"):
            shard, _, file_part = p.name.removesuffix(".parquet").partition(".")
            if p.name != "run.parquet" and file_part == part:
                files[p] = shard
        assert len(files) == len(set(files.values())), f"{table} {part}: a shard has files in two runs"
        for p, shard in files.items():
            assert shard in marked, f"orphan {p}: no {stage} marker"
            assert p.parent.name == f"run={marked[shard]}", f"{p}: the marker names run {marked[shard]}"


def test_sigkilled_runs_resume_to_the_uninterrupted_tables(small_input, small_run_tables, tmp_path):
    expected = small_run_tables
    out = tmp_path / "out"
    rng = random.Random(SEED)
    kills = []
    for label, pattern, (lo, hi) in KILL_POINTS:
        p = start_run(small_input, out)
        delay = rng.uniform(lo, hi)
        if _kill_at(p, out, pattern, delay):
            kills.append(label)
            print(f"SIGKILL {len(kills)} ({label}, +{delay:.2f}s): {_progress(out)}")
            _assert_lock_free(out)
        else:
            assert p.returncode == 0, finish(p)[1]
            break
    assert len(kills) >= 3, kills
    attempts = 0
    while True:  # rerun until it completes (a run that completes must not need more than one try)
        attempts += 1
        rc, log = finish(start_run(small_input, out))
        if rc == 0 or attempts > 2:
            break
    assert rc == 0, log
    assert attempts == 1
    assert lock_held(out) is False
    _assert_clean_folder(out)
    got = table_rows(out)
    for table, rows in expected.items():
        assert len(got[table]) == len(rows), (table, kills)
        assert got[table] == rows, (table, kills)


INGEST_ONLY = """progress_seconds: 0
report: false
embed: {enabled: false}
dedup: {enabled: false}
perturbations: {features: false, tests: false}
"""


def test_a_second_concurrent_run_is_refused_and_the_first_run_is_intact(small_input, tmp_path, capsys):
    from pipelines.cli import main
    config = tmp_path / "ingest_only.yaml"
    config.write_text(INGEST_ONLY)
    run_ingest(str(small_input), str(tmp_path / "alone"), load_config(str(config)))
    expected = table_rows(tmp_path / "alone", ("samples", "errors", "shards"))
    out = tmp_path / "out"
    first = start_run(small_input, out, config)
    deadline = time.monotonic() + RUN_TIMEOUT
    while not lock_held(out):
        assert first.poll() is None, finish(first)[1]
        assert time.monotonic() < deadline
        time.sleep(0.005)
    rc = main(["run", "--input", str(small_input), "--out", str(out), "--config", str(config), "-q"])
    err = capsys.readouterr().err
    assert rc == 3 and "in use by another ShardGuard run" in err and f"pid {first.pid}" in err, err
    assert first.poll() is None, "the first run ended before the second tried: the check proved nothing"
    rc, log = finish(first)
    assert rc == 0, log
    _assert_clean_folder(out)
    assert table_rows(out, ("samples", "errors", "shards")) == expected
    assert len(table_rows(out, ("runs",))["runs"]) == 1  # the refused run wrote nothing


def test_a_killed_runs_private_temp_folder_is_removed_by_the_next_run(broken_dir, tmp_path):
    config = tmp_path / "ingest_only.yaml"
    config.write_text(INGEST_ONLY)
    claim(tmp_path / "out", "audit")  # an output folder of ours...
    stale = tmp_path / "out" / "_tmp" / "sg-run-0badc0de"  # ...where a SIGKILLed run left this (pipelines.beam_options.private_tempdir)
    stale.mkdir(parents=True)
    (stale / "beam-temp-x").write_bytes(b"left by a killed run")
    run_ingest(f"{broken_dir}/bad_mixed.tar", str(tmp_path / "out"), load_config(str(config)))
    assert not (tmp_path / "out" / "_tmp").exists()


def test_a_run_killed_between_its_shards_and_its_corpus_steps_leaves_them_to_the_next_run(
        small_input, small_run_tables, tmp_path):
    """A grown input: shard 00001 is new. The run is killed right after 00001's last per-shard marker,
    before dedup and the perturbation tests; the rerun has no shard to do, yet must redo both, and
    end with the tables of one uninterrupted run over all three shards."""
    config = load_config(str(JOB_YAML))
    out, expected = tmp_path / "out", small_run_tables
    first = run_ingest(f"{small_input}/00000.tar,{small_input}/00003.tar", str(out), config)
    p = start_run(small_input, out)
    last = ["_manifest/ingest/00001.json", "_manifest/perturbations/features/00001.json",
            *(f"{d.relative_to(out)}/00001.json" for d in (out / "_manifest" / "embed").iterdir())]
    deadline = time.monotonic() + RUN_TIMEOUT
    while not all((out / f).exists() for f in last):
        assert p.poll() is None and time.monotonic() < deadline, finish(p)[1]
        time.sleep(0.005)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    decisions = sorted(out.glob("decisions/run=*/run.parquet"))
    assert [d.parent.name for d in decisions] == [f"run={first.run_id}"], "killed too late: dedup had run"
    plan = plan_run(str(small_input), OutputDir(out), config)
    # nothing per-shard is left and the test config did not change: only the markers tell
    assert not (plan.todo or plan.later) and not needs_testing(OutputDir(out), config.perturbations)
    assert plan.corpus_steps["dedup"] and plan.corpus_steps["perturbation tests"] and plan.dedup_new == {"00001"}
    rc, log = finish(start_run(small_input, out))
    assert rc == 0, log
    _assert_clean_folder(out)
    got = table_rows(out)
    for table, rows in expected.items():
        assert got[table] == rows, table
