"""audit.runs.diff on hand-written tables: flips, flags, verdicts, and runs whose corpus steps did not run."""

import pytest

from audit.io.output_dir import OutputDir
from audit.runs.diff import record_changes
from audit.io.store import scan
from schemas import DECISIONS, DUPLICATES, MEMORIZATION, PERTURBATION_FLAGS, PERTURBATION_TESTS, RUNS, SHARDS

R1, R2, R3 = "20260101T000000Z-aaaaaa", "20260102T000000Z-bbbbbb", "20260103T000000Z-cccccc"


def decision(run, shard, key, keep, reasons=()):
    return {"run_id": run, "shard": shard, "key": key, "keep": keep, "reasons": list(reasons)}


def mem(run, key, flagged, score):
    return {"run_id": run, "shard": "s", "key": key, "model_id": "tiny", "mode": "pair", "score": score,
            "threshold": 1.0, "flagged": flagged}


def pflag(run, key, flagged):
    return {"run_id": run, "shard": "s", "key": key, "flagged": flagged, "reasons": ["one_pixel"] if flagged else []}


def ptest(run, test, verdict, label=None):
    return {"run_id": run, "data": "original", "scope": "class" if label else "dataset", "label": label, "test": test,
            "verdict": verdict, "statistic": 0.5, "threshold": 0.7}


def finish(out: OutputDir, run: str) -> None:
    out.write_run_table(RUNS, run, [{"run_id": run, "status": "succeeded"}])


def changes(out: OutputDir, run: str) -> list[tuple]:
    glob = out.table_dir("run_changes") / f"run={run}" / "run.parquet"
    return [(r["change"], r["source_table"], r["key"], r["before"], r["after"]) for r in
            scan(f"SELECT * FROM '{glob}' ORDER BY change, source_table, key, detail")]


@pytest.fixture
def out(tmp_path):
    out = OutputDir(tmp_path)
    out.write_shard_table(SHARDS, R1, "s", [{"run_id": R1, "shard": "s", "status": "complete", "n_inputs": 3,
                                             "n_ok": 3, "n_failed": 0}])
    out.write_run_table(DECISIONS, R1, [decision(R1, "s", k, True) for k in "abc"])
    out.write_run_table(DUPLICATES, R1, [])
    out.write_run_table(MEMORIZATION, R1, [mem(R1, "a", True, 2.0), mem(R1, "b", False, 0.1)])
    out.write_run_table(PERTURBATION_FLAGS, R1, [pflag(R1, "a", False), pflag(R1, "b", True)])
    out.write_run_table(PERTURBATION_TESTS, R1, [ptest(R1, "one_pixel", "pass"), ptest(R1, "template_snr", "pass", "cat")])
    summary = record_changes(out, R1)
    finish(out, R1)
    assert summary["previous_run_id"] is None and summary["new_samples"] == 3
    assert {c[0] for c in changes(out, R1)} == {"new_shard", "new_flag", "changed_verdict"}
    return out


def test_flips_flags_and_verdicts_against_the_previous_run(out):
    out.write_run_table(DECISIONS, R2, [decision(R2, "s", "a", False, ["memorized:tiny:d=2>=1"]),
                                        decision(R2, "s", "b", True), decision(R2, "s", "c", True)])
    out.write_run_table(MEMORIZATION, R2, [mem(R2, "a", True, 2.0), mem(R2, "b", True, 1.5)])
    out.write_run_table(PERTURBATION_FLAGS, R2, [pflag(R2, "a", False), pflag(R2, "b", False)])
    out.write_run_table(PERTURBATION_TESTS, R2, [ptest(R2, "one_pixel", "fail"), ptest(R2, "template_snr", "pass", "cat"),
                                                 ptest(R2, "template_snr", "fail", "dog")])
    summary = record_changes(out, R2)
    assert changes(out, R2) == [
        ("changed_verdict", "perturbation_tests", None, None, "fail"),  # class 'dog', seen for the first time
        ("changed_verdict", "perturbation_tests", None, "pass", "fail"),  # dataset one_pixel
        ("cleared_flag", "perturbation_flags", "b", "flagged", "not flagged"),
        ("new_drop", "decisions", "a", "keep", "drop"),
        ("new_flag", "memorization", "b", "not flagged", "flagged"),
    ]
    assert summary["line"] == (f"changes since run {R1}: 1 new drop, 1 new flag, 1 cleared flag, "
                               "2 changed verdicts (table 'run_changes')")


def test_a_run_whose_corpus_steps_did_not_run_changed_nothing(out):
    finish(out, R2)  # R2 recomputed nothing: every corpus table's state is still R1's
    summary = record_changes(out, R3)
    assert summary["previous_run_id"] == R2 and summary["counts"] == {}
    assert changes(out, R3) == [("no_changes", "runs", None, None, None)]
    assert summary["line"].endswith(": none (table 'run_changes')")


def test_only_succeeded_runs_are_compared_against(out):
    out.write_shard_table(SHARDS, R2, "t", [{"run_id": R2, "shard": "t", "status": "complete", "n_inputs": 2,
                                             "n_ok": 2, "n_failed": 0}])
    out.write_run_table(RUNS, R2, [{"run_id": R2, "status": "failed"}])
    out.write_run_table(DECISIONS, R2, [decision(R2, "s", "a", False)])
    summary = record_changes(out, R3)
    assert summary["previous_run_id"] == R1
    # the failed run's shard is new to the next successful run
    assert changes(out, R3) == [("new_drop", "decisions", "a", "keep", "drop"), ("new_shard", "shards", None, None, "complete")]
    assert summary["new_samples"] == 2
