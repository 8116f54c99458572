import json
import subprocess
import sys

import pytest

from pipelines.cli import main


@pytest.mark.beam
def test_run_then_sql_in_three_formats(broken_dir, tmp_path, capsys):
    assert main(["run", "--input", str(broken_dir / "bad_mixed.tar"), "--out", str(tmp_path), "-q", "--no-embed"]) == 0
    assert "20 in = 5 ok + 15 failed" in capsys.readouterr().out
    assert main(["sql", "--out", str(tmp_path), "--format", "json",
                 "SELECT key, error_type FROM errors ORDER BY key"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"key": "001", "error_type": "CorruptImage"} in rows
    assert main(["sql", "--out", str(tmp_path), "--format", "csv", "SELECT count(*) AS n FROM samples"]) == 0
    assert capsys.readouterr().out.split() == ["n", "20"]
    assert main(["sql", "--out", str(tmp_path), "SELECT status, count(*) AS n FROM samples GROUP BY ALL ORDER BY 1"]) == 0
    table = capsys.readouterr().out
    assert "failed" in table and "(2 rows)" in table


def test_errors_exit_nonzero_with_a_message(tmp_path, capsys):
    assert main(["sql", "--out", str(tmp_path), "SELECT 1"]) == 1
    assert "no audit store" in capsys.readouterr().err
    assert main(["run", "--input", str(tmp_path / "none*.tar"), "--out", str(tmp_path), "-q", "--no-embed"]) == 2


@pytest.mark.beam
def test_sql_cannot_write(broken_dir, tmp_path, capsys):
    main(["run", "--input", str(broken_dir / "bad_truncated.tar"), "--out", str(tmp_path), "-q", "--no-embed"])
    assert main(["sql", "--out", str(tmp_path), "DROP VIEW samples"]) == 1
    assert "read-only" in capsys.readouterr().err


def test_tables_lists_documented_columns(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "tables"], capture_output=True, text=True, check=True)
    assert "samples v1" in r.stdout and "pixel_hash" in r.stdout


@pytest.mark.beam
def test_contamination_finds_every_eval_sample_that_is_in_train(demo_sample, tmp_path, capsys):
    args = ["-q", "--no-dedup", "--sscd", "sscd_distilled"]
    assert main(["run", "--input", f"{demo_sample}/0000{{0,1}}.tar", "--out", str(tmp_path / "train")] + args) == 0
    assert main(["run", "--input", f"{demo_sample}/00001.tar", "--out", str(tmp_path / "eval")] + args) == 0
    capsys.readouterr()
    assert main(["contamination", "--train", str(tmp_path / "train"), "--eval", str(tmp_path / "eval")]) == 0
    assert "of 250 eval samples" in capsys.readouterr().out
    assert main(["sql", "--out", str(tmp_path / "eval"), "--format", "csv",
                 "SELECT count(*) FILTER (kind = 'exact'), count(*) FROM contamination"]) == 0
    n_exact, n = capsys.readouterr().out.split()[-1].split(",")
    assert int(n_exact) == int(n) == 250


def _evil_pickle(path, marker):
    """A torch-style checkpoint whose unpickling would create `marker`."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    path.write_bytes(pickle.dumps({"state_dict": Evil()}))


def test_user_errors_are_one_line_exit_2_and_pickles_are_never_loaded(broken_dir, tmp_path, capsys):
    shard = str(broken_dir / "bad_mixed.tar")
    marker = tmp_path / "unpickled"
    _evil_pickle(tmp_path / "evil.pt", marker)
    (tmp_path / "evil.safetensors").write_bytes((tmp_path / "evil.pt").read_bytes())  # the name is not enough
    (tmp_path / "model.ckpt").write_bytes((tmp_path / "evil.pt").read_bytes())
    (tmp_path / "bad.yaml").write_text("embed: {batch_size: 0}\n")
    (tmp_path / "tag.yaml").write_text("x: !!python/object/apply:os.getcwd []\n")
    cases = [
        (["--clip-checkpoint", str(tmp_path / "evil.pt")], "evil.pt"),
        (["--clip-checkpoint", str(tmp_path / "evil.safetensors")], "evil.safetensors"),
        (["--diffusion-model", str(tmp_path / "model.ckpt")], "model.ckpt"),
        (["--config", str(tmp_path / "bad.yaml")], "bad.yaml"),
        (["--config", str(tmp_path / "tag.yaml")], "tag.yaml"),
        (["--embed-batch-size", "0"], "batch_size"),
        (["--near-threshold", "nan"], "near_threshold"),
    ]
    for i, (flags, named) in enumerate(cases):
        out = tmp_path / f"out{i}"
        assert main(["run", "--input", shard, "--out", str(out), "-q"] + flags) == 2, flags
        err = capsys.readouterr().err
        assert named in err and err.count("\n") == 1 and err.startswith("error: "), err
    assert not marker.exists()


@pytest.mark.beam
def test_a_closed_stdout_ends_quietly(broken_dir, tmp_path):
    """`shardguard status --out X | head -1`: the reader is gone; no traceback, exit 0."""
    import os
    out = tmp_path / "out"
    assert main(["run", "--input", str(broken_dir / "bad_mixed.tar"), "--out", str(out), "-q", "--no-embed"]) == 0
    for args in (["status", "--out", str(out)], ["tables"]):
        r_fd, w_fd = os.pipe()
        os.close(r_fd)  # the reader has already gone: every write hits a broken pipe
        try:
            p = subprocess.run([sys.executable, "-m", "pipelines.cli"] + args, stdout=w_fd,
                               stderr=subprocess.PIPE, text=True, timeout=300)
        finally:
            os.close(w_fd)
        assert p.returncode == 0 and "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr


def test_contamination_writes_only_into_an_audit_folder(tmp_path, capsys):
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    for train, ev in ((home, home), (tmp_path / "missing", home), (home, tmp_path / "missing")):
        assert main(["contamination", "--train", str(train), "--eval", str(ev)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("is not a ShardGuard audit output folder" in err or "does not exist" in err)
    assert [p.name for p in home.iterdir()] == ["notes.txt"] and not (tmp_path / "missing").exists()


def test_an_object_store_out_is_refused_not_written_as_a_local_folder(broken_dir, tmp_path, capsys, monkeypatch):
    """Issue 24: `--out s3://bucket/audit` exited 0 and wrote a local folder 's3:/bucket/audit'.
    Until object storage is built, any URI is a usage error for every folder a command writes."""
    monkeypatch.chdir(tmp_path)
    shard = str(broken_dir / "bad_truncated.tar")
    for argv in (["run", "--input", shard, "--out", "s3://bucket/audit", "-q", "--no-embed"],
                 ["run", "--input", shard, "--out", "gs://bucket/audit", "-q", "--no-embed", "--dry-run"],
                 ["report", "--out", "s3://bucket/audit"],
                 ["clean", "--from", "s3://bucket/audit", "--to", "clean-out"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "object-store URI" in err and err.count("\n") == 1, (argv, err)
    assert list(tmp_path.iterdir()) == []
