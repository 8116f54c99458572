"""Three simulated nights of `shardguard run --config nightly.yaml` on a growing shard folder:
new shards only, incremental dedup against the accepted corpus, clean shards appended, and
the run_changes table."""

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from audit.io.store import query
from pipelines.cli import main
from tests.job_outputs import read_samples, write_tar

pytestmark = pytest.mark.beam  # runs Beam jobs (tests/conftest.py)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.iterdir() if p.is_file() and p.suffix in (".tar", ".parquet", ".json")}


def clean_rows(dest: Path) -> list[dict]:
    return [r for p in sorted(dest.glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def night(config: Path, capsys) -> str:
    assert main(["run", "--config", str(config), "-q"]) == 0
    return capsys.readouterr().out


def sql(out: Path, text: str) -> list[tuple]:
    return query(out, text)[1]


@pytest.fixture
def nightly(demo_sample, tmp_path):
    inp, out, dest = tmp_path / "shards", tmp_path / "audit", tmp_path / "clean"
    inp.mkdir()
    for name in ("00000", "00001"):
        write_tar(inp / f"{name}.tar", list(read_samples(demo_sample / f"{name}.tar").items())[:30])
    config = tmp_path / "nightly.yaml"
    config.write_text(yaml.safe_dump({
        "input": str(inp), "out": str(out), "progress_seconds": 0,
        "embed": {"captions": False},  # SSCD only: the accepted-corpus index needs it
        "dedup": {"incremental": True},
        "perturbations": {"features": False, "tests": False},
        "clean": {"to": str(dest), "shard_size": 16},
    }))
    return inp, out, dest, config


def test_three_nights_append_only_new_work(nightly, demo_sample, capsys):
    inp, out, dest, config = nightly
    # ---- night 1: two shards -------------------------------------------------------------
    text1 = night(config, capsys)
    run1 = sql(out, "SELECT run_id FROM runs")[0][0]
    assert "changes (first run on this folder" in text1 and "60 new samples in 2 new shards" in text1
    n_kept1 = sql(out, "SELECT count(*) FILTER (keep) FROM decisions")[0][0]
    night1_files = digests(dest)
    assert sum(r["status"] == "success" for r in clean_rows(dest)) == n_kept1 > 0
    decisions1 = dict(((s, k), keep) for s, k, keep in sql(out, "SELECT shard, key, keep FROM decisions"))

    # ---- night 2: a third shard with byte copies of 8 accepted night-1 images + 20 fresh ones ----
    accepted = sql(out, "SELECT shard, key FROM decisions WHERE keep ORDER BY shard, key LIMIT 8")
    src = {s: read_samples(inp / f"{s}.tar") for s in ("00000", "00001")}
    copies = [(f"copy{i}", src[s][k]) for i, (s, k) in enumerate(accepted)]
    fresh = list(read_samples(demo_sample / "00002.tar").items())[:20]
    write_tar(inp / "00002.tar", copies + fresh)
    text2 = night(config, capsys)
    run2 = sql(out, "SELECT max(run_id) FROM runs")[0][0]
    assert run2 > run1 and "1 processed" in text2
    # completed shards were not reprocessed: their rows still come from night 1 only
    assert sql(out, "SELECT shard, min(run_id), max(run_id) FROM samples GROUP BY shard ORDER BY shard") == [
        ("00000", run1, run1), ("00001", run1, run1), ("00002", run2, run2)]
    # the copies are dropped as duplicates of the accepted night-1 samples; night-1 decisions stand
    reasons = dict(((k), r) for k, r in sql(out, "SELECT key, reasons FROM decisions WHERE shard = '00002'"))
    for (s, k), (copy_key, _) in zip(accepted, copies):
        assert any(x in (f"exact_duplicate_of:{s}/{k}", f"near_duplicate_of:{s}/{k}") for x in reasons[copy_key]), \
            reasons[copy_key]
    assert {(s, k): keep for s, k, keep in sql(out, "SELECT shard, key, keep FROM decisions WHERE shard <> '00002'")} \
        == decisions1
    # clean shards appended: night-1 files byte for byte, no sample twice, counts reconcile
    after2 = digests(dest)
    assert {n: d for n, d in after2.items() if n in night1_files} == night1_files
    assert set(after2) > set(night1_files)
    rows = clean_rows(dest)
    written = [(r["source_shard"], r["source_key"]) for r in rows]
    assert len(written) == len(set(written))
    kept2 = set(sql(out, "SELECT shard, key FROM decisions WHERE keep"))
    assert set(written) == kept2 and not any(k.startswith("copy") for _, k in written)
    stats = [json.loads(p.read_text()) for p in dest.glob("*_stats.json")]
    assert sum(s["count"] for s in stats) == len(written) == len(kept2)
    assert len({r["key"] for r in rows}) == len(rows)  # clean keys unique across the appended shards
    # run_changes: exactly the new shard, its new duplicates (the copies among them), its errors
    changes = sql(out, "SELECT change, shard, key, previous_run_id FROM run_changes")
    assert {r[3] for r in changes} == {run1}
    assert {r[0] for r in changes} <= {"new_shard", "new_duplicate", "new_error"}
    assert [r[1] for r in changes if r[0] == "new_shard"] == ["00002"]
    dup_keys = {(r[1], r[2]) for r in changes if r[0] == "new_duplicate"}
    assert {("00002", k) for k, _ in copies} <= dup_keys
    assert dup_keys == set(sql(out, "SELECT DISTINCT shard, key FROM duplicates WHERE shard = '00002'"))
    assert {(r[1], r[2]) for r in changes if r[0] == "new_error"} == set(
        sql(out, f"SELECT shard, key FROM errors WHERE run_id = '{run2}'"))
    assert f"changes since run {run1}: 28 new samples in 1 new shard" in text2
    n_exact = sql(out, "SELECT count(DISTINCT (shard, key)) FROM run_changes WHERE after LIKE 'exact %'")[0][0]
    assert n_exact >= len(copies) and f"{len(dup_keys)} new duplicates (" in text2 and f"exact {n_exact}" in text2

    # ---- night 3: nothing new --------------------------------------------------------------
    text3 = night(config, capsys)
    run3 = sql(out, "SELECT max(run_id) FROM runs")[0][0]
    assert "0 processed" in text3 and f"changes since run {run2}: none" in text3
    assert sql(out, "SELECT run_id, change, previous_run_id FROM run_changes") == [(run3, "no_changes", run2)]
    assert digests(dest) == after2
    assert sql(out, "SELECT count(DISTINCT run_id) FROM run_changes_history")[0][0] == 3


def test_run_without_input_or_out_is_a_clear_error(tmp_path, capsys):
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({"out": str(tmp_path / "o")}))
    assert main(["run", "--config", str(config), "-q"]) == 2
    err = capsys.readouterr().err
    assert "--input" in err and "'input:'" in err and "--out" not in err
    assert main(["run", "-q"]) == 2
    assert "--input and --out" in capsys.readouterr().err


def test_flags_win_over_the_config(broken_dir, tmp_path, capsys):
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({"input": str(tmp_path / "nothing-here*.tar"), "out": str(tmp_path / "o"),
                                      "embed": {"enabled": False}}))
    assert main(["run", "--config", str(config), "-q", "--input", str(broken_dir / "bad_mixed.tar")]) == 0
    assert sql(tmp_path / "o", "SELECT shard FROM shards") == [("bad_mixed",)]
