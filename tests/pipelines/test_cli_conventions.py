"""CLI conventions: examples in every --help, documented and tested exit codes, --dry-run
writes nothing, `status` on a real run."""

import json
import shutil

import pytest

import pipelines.cli as cli
from audit.io.output_dir import OutputDir
from pipelines.cli import main
from pipelines.cli.dispatch import _parser

QUICK = ["-q", "--no-embed", "--no-dedup"]


def _subparsers():
    action = next(a for a in _parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def test_every_command_help_has_examples():
    subs = _subparsers()
    assert {"run", "sql", "tables", "status", "clean", "contamination", "prompts", "replication",
            "attribution"} <= set(subs)
    for name, sub in subs.items():
        assert "example" in sub.format_help(), f"`shardguard {name} --help` has no examples"
    assert "example" in _parser().format_help()


def test_exit_codes_are_documented_in_help_and_docstring():
    top = _parser().format_help()
    for code, what in (("0", "ok"), ("1", "error"), ("2", "usage"), ("3", "locked"), ("4", "too many failures")):
        assert f"{code} {what}" in top or f"{code} output folder {what}" in top, code
    assert "4 too many failures" in cli.__doc__ and "3 the output folder is locked" in cli.__doc__


@pytest.mark.beam
def test_exit_codes(broken_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert main(["run", "--input", str(broken_dir / "bad_mixed.tar"), "--out", str(out)] + QUICK) == 0
    with pytest.raises(SystemExit) as e:
        main(["no-such-command"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["sql", "SELECT 1"])  # --out missing
    assert e.value.code == 2
    holder = OutputDir(out)
    holder.lock()
    try:
        assert main(["run", "--input", str(broken_dir / "bad_mixed.tar"), "--out", str(out)] + QUICK) == 3
    finally:
        holder.unlock()
    capsys.readouterr()
    monkeypatch.setenv("SHARDGUARD_DEDUP__NEAR_THRESHOLD", "high")  # a user error: exit 2 (1 before issue 19)
    assert main(["run", "--input", str(broken_dir / "bad_mixed.tar"), "--out", str(out)] + QUICK) == 2
    assert "SHARDGUARD_DEDUP__NEAR_THRESHOLD" in capsys.readouterr().err
    monkeypatch.delenv("SHARDGUARD_DEDUP__NEAR_THRESHOLD")
    monkeypatch.setenv("SHARDGUARD_INGEST__MAX_FAILED_FRACTION", "0.1")  # bad_mixed: most samples fail
    assert main(["run", "--input", str(broken_dir / "bad_mixed.tar"), "--out", str(tmp_path / "out4")] + QUICK) == 4


def _snapshot(root):
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.beam
def test_dry_run_lists_the_jobs_to_do_and_writes_nothing(broken_dir, tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    shutil.copy(broken_dir / "bad_mixed.tar", inp / "00000.tar")
    assert main(["run", "--input", str(inp), "--out", str(out), "-q", "--no-embed"]) == 0
    shutil.copy(broken_dir / "bad_truncated.tar", inp / "00001.tar")
    before = _snapshot(out)
    capsys.readouterr()
    assert main(["run", "--input", str(inp), "--out", str(out), "--no-embed", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert _snapshot(out) == before  # byte for byte, no file added or removed
    assert "ingest: 1 to do: 00001" in printed and "perturbations/features: 1 to do: 00001" in printed
    assert "dedup: would run" in printed and "memorization flags: disabled" in printed
    fresh = tmp_path / "fresh"
    assert main(["run", "--input", str(inp), "--out", str(fresh), "--no-embed", "--dry-run"]) == 0
    assert "ingest: 2 to do: 00000, 00001" in capsys.readouterr().out and not fresh.exists()


@pytest.mark.beam
def test_status_after_a_run(broken_dir, tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    for name in ("bad_mixed", "bad_truncated"):
        shutil.copy(broken_dir / f"{name}.tar", inp / f"{name}.tar")
    assert main(["run", "--input", str(inp), "--out", str(out)] + QUICK) == 0
    shutil.copy(broken_dir / "bad_empty.tar", inp / "bad_empty.tar")  # matched now, not run yet
    capsys.readouterr()
    assert main(["status", "--out", str(out), "--format", "json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    state = {(r["shard"], r["stage"]): r["state"] for r in rep["shards"]}
    assert state[("bad_mixed", "ingest")] == "done" and state[("bad_truncated", "ingest")] == "failed"
    assert state[("bad_empty", "ingest")] == "pending" and rep["running"] is None
    [run] = rep["runs"]
    ingest = next(t for t in rep["stages"] if t["stage"] == "ingest")
    assert (ingest["done"], ingest["failed"], ingest["pending"]) == (1, 1, 1)
    assert ingest["n_inputs"] == run["n_inputs"] and run["status"] == "succeeded"
    assert not (out / "_manifest" / "_running.json").exists()
    assert main(["status", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "no run in progress" in table and "per stage:" in table and run["run_id"] in table
    assert main(["status", "--out", str(tmp_path / "nothing")]) == 2  # not an output folder: a user error


@pytest.mark.beam
def test_clean_dry_run_lists_output_shards_and_writes_nothing(broken_dir, tmp_path, capsys):
    out, dest = tmp_path / "out", tmp_path / "clean"
    assert main(["run", "--input", str(broken_dir / "bad_mixed.tar"), "--out", str(out), "-q", "--no-embed"]) == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert main(["clean", "--from", str(out), "--to", str(dest), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert _snapshot(out) == before and not dest.exists()
    assert "1 output shards to write" in printed and "00000:" in printed
    assert main(["clean", "--from", str(out), "--to", str(dest)]) == 0
    n_kept = int(printed.split(" kept")[0].split()[-1])
    assert f"00000: {n_kept} samples from bad_mixed" in printed
    capsys.readouterr()
    written = _snapshot(dest)
    assert main(["clean", "--from", str(out), "--to", str(dest), "--dry-run"]) == 0
    assert "0 output shards to write" in capsys.readouterr().out and _snapshot(dest) == written
