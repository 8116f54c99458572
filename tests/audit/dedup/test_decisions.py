"""The decisions as a pure join of the findings (audit.dedup.decisions): every reason, one fixed order."""

import itertools
import random

import pyarrow.parquet as pq

from audit.dedup.decisions import REASON_ORDER, decide, decisions_stale, with_outcome, write_decisions
from audit.io.output_dir import OutputDir
from schemas import DUPLICATES, MEMORIZATION, MEMORIZATION_RUNS, SAMPLES


def sample(key, status="ok", error=None, shard="s"):
    return {"shard": shard, "key": key, "status": status, "error": error}


def dup(key, kind, drops, cluster=0, rep="s/r", shard="s"):
    return {"shard": shard, "key": key, "kind": kind, "image_cluster": cluster, "representative": rep, "drops": drops}


SAMPLES_ROWS = [sample("r"), sample("a"), sample("b"), sample("f", "failed", "CorruptImage: truncated"),
                sample("m"), sample("c"), sample("x", "failed", None), sample("a", shard="t")]
DUP_ROWS = [
    dup("r", "exact", False), dup("r", "near", False),  # the representative: kept
    dup("a", "caption", True),  # caption as a drop kind (dedup.drop_kinds)
    dup("a", "near", True), dup("a", "exact", True),  # every kind, in the fixed order whatever the row order
    dup("b", "semantic", False),  # reported, not dropped
    dup("m", "near", True),
    dup("c", "caption", False, cluster=None, rep=None),
]
MEMORIZED = {("s", "m"): "memorized:sd:d=9.1>=4.2", ("s", "f"): "memorized:sd:d=5>=4.2"}
EXPECTED = {
    ("s", "r"): (True, []),
    ("s", "a"): (False, ["exact_duplicate_of:s/r", "near_duplicate_of:s/r", "caption_duplicate_of:s/r"]),
    ("s", "b"): (True, []),
    ("s", "f"): (False, ["ingest_failed:CorruptImage", "memorized:sd:d=5>=4.2"]),
    ("s", "m"): (False, ["near_duplicate_of:s/r", "memorized:sd:d=9.1>=4.2"]),
    ("s", "c"): (True, []),
    ("s", "x"): (False, ["ingest_failed:Error"]),
    ("t", "a"): (True, []),  # the same key in another shard is another sample
}


def test_every_reason_in_the_fixed_order_and_kept_samples():
    rows = decide(SAMPLES_ROWS, DUP_ROWS, MEMORIZED, "R")
    assert [(r["shard"], r["key"]) for r in rows] == sorted(EXPECTED)  # one row per sample, sorted
    assert {(r["shard"], r["key"]): (r["keep"], r["reasons"]) for r in rows} == EXPECTED
    assert {r["run_id"] for r in rows} == {"R"}
    by = {(r["shard"], r["key"]): r for r in rows}
    assert (by[("s", "r")]["image_cluster"], by[("s", "r")]["representative"]) == (0, "s/r")
    assert by[("s", "c")]["image_cluster"] is None and by[("t", "a")]["representative"] is None
    assert REASON_ORDER[0] == "ingest_failed" and REASON_ORDER[-1] == "memorized"


def test_the_result_does_not_depend_on_the_order_of_the_inputs():
    expected = decide(SAMPLES_ROWS, DUP_ROWS, MEMORIZED, "R")
    rng = random.Random(0)
    for _ in range(20):
        s, d = SAMPLES_ROWS[:], DUP_ROWS[:]
        rng.shuffle(s)
        rng.shuffle(d)
        mem = dict(rng.sample(sorted(MEMORIZED.items()), len(MEMORIZED)))
        assert decide(s, d, mem, "R") == expected


def test_findings_for_unknown_samples_are_ignored():
    rows = decide([sample("a")], [dup("zz", "exact", True)], {("s", "zz"): "memorized:m:d=1>=0"}, "R")
    assert [(r["key"], r["keep"], r["reasons"]) for r in rows] == [("a", True, [])]


def test_rows_of_an_older_version_take_their_outcome_from_that_run_s_decisions():
    old = [{"shard": "s", "key": k, "kind": kind} for k, kind in (("a", "exact"), ("a", "near"), ("r", "exact"))]
    dec = [{"shard": "s", "key": "a", "reasons": ["exact_duplicate_of:s/r"], "image_cluster": 3, "representative": "s/r"},
           {"shard": "s", "key": "r", "reasons": [], "image_cluster": 3, "representative": "s/r"}]
    filled = with_outcome(old, dec)
    assert [(d["key"], d["kind"], d["drops"], d["image_cluster"]) for d in filled] == [
        ("a", "exact", True, 3), ("a", "near", False, 3), ("r", "exact", False, 3)]
    assert with_outcome([dup("a", "near", True)], []) == [dup("a", "near", True)]  # new rows stay as they are


def test_written_once_from_the_latest_findings_and_only_when_a_finding_is_newer(tmp_path):
    out = OutputDir(tmp_path)
    out.write_shard_table(SAMPLES, "R1", "s", SAMPLES.from_rows(
        [{"run_id": "R1", "shard": "s", "key": k, "status": "ok"} for k in ("a", "r")]))
    assert not decisions_stale(out)  # no finding: nothing to decide on
    out.write_run_table(DUPLICATES, "R1", DUPLICATES.from_rows(
        [{"run_id": "R1", "kind": "exact", "cluster": 0, **dup(k, "exact", k == "a")} for k in ("a", "r")]))
    assert decisions_stale(out)
    write_decisions(out, "R1")
    assert not decisions_stale(out)
    out.write_run_table(MEMORIZATION, "R2", MEMORIZATION.from_rows([
        {"run_id": "R2", "shard": "s", "key": "r", "model_id": "sd", "mode": "prompt", "score": 9.0,
         "threshold": 4.0, "flagged": True}]))
    out.write_run_table(MEMORIZATION_RUNS, "R2", MEMORIZATION_RUNS.from_rows([
        {"run_id": "R2", "model_id": "sd", "mode": "prompt", "settings_json": '{"action": "drop"}',
         "method": "fpr", "level": 0.01, "threshold": 4.0}]))
    assert decisions_stale(out)
    path = write_decisions(out, "R2")
    rows = pq.read_table(path).to_pylist()
    assert path == tmp_path / "decisions" / "run=R2" / "run.parquet"
    assert [(r["key"], r["keep"], r["reasons"]) for r in rows] == [
        ("a", False, ["exact_duplicate_of:s/r"]), ("r", False, ["memorized:sd:d=9>=4"])]
    assert not decisions_stale(out)


def test_every_permutation_of_one_sample_s_reasons_sorts_alike():
    reasons = [dup("a", k, True) for k in ("caption", "semantic", "near", "exact")]
    results = {tuple(decide([sample("a", "failed", "E: x")], list(p), {("s", "a"): "memorized:m:d=1>=0"}, "R")[0]["reasons"])
               for p in itertools.permutations(reasons)}
    assert results == {("ingest_failed:E", "exact_duplicate_of:s/r", "near_duplicate_of:s/r",
                        "semantic_duplicate_of:s/r", "caption_duplicate_of:s/r", "memorized:m:d=1>=0")}


def test_a_folder_of_an_older_version_keeps_its_duplicate_reasons(tmp_path):
    """Duplicates rows written before they carried the keep outcome (drops null): the next
    decisions take it from the decisions that dedup run wrote, not keep every sample."""
    from schemas import DECISIONS
    out = OutputDir(tmp_path)
    out.write_shard_table(SAMPLES, "R1", "s", SAMPLES.from_rows(
        [{"run_id": "R1", "shard": "s", "key": k, "status": "ok"} for k in ("a", "r")]))
    out.write_run_table(DUPLICATES, "R1", DUPLICATES.from_rows(
        [{"run_id": "R1", "shard": "s", "key": k, "kind": "exact", "cluster": 0} for k in ("a", "r")]))
    out.write_run_table(DECISIONS, "R1", DECISIONS.from_rows([
        {"run_id": "R1", "shard": "s", "key": "a", "keep": False, "reasons": ["exact_duplicate_of:s/r"],
         "image_cluster": 0, "representative": "s/r"},
        {"run_id": "R1", "shard": "s", "key": "r", "keep": True, "reasons": [], "image_cluster": 0,
         "representative": "s/r"}]))
    rows = pq.read_table(write_decisions(out, "R2")).to_pylist()
    assert [(r["key"], r["keep"], r["reasons"], r["representative"]) for r in rows] == [
        ("a", False, ["exact_duplicate_of:s/r"], "s/r"), ("r", True, [], "s/r")]
