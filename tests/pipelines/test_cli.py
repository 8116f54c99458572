import json
import subprocess
import sys

from pipelines.cli import main


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
    assert main(["run", "--input", str(tmp_path / "none*.tar"), "--out", str(tmp_path), "-q", "--no-embed"]) == 1


def test_sql_cannot_write(broken_dir, tmp_path, capsys):
    main(["run", "--input", str(broken_dir / "bad_truncated.tar"), "--out", str(tmp_path), "-q", "--no-embed"])
    assert main(["sql", "--out", str(tmp_path), "DROP VIEW samples"]) == 1
    assert "read-only" in capsys.readouterr().err


def test_tables_lists_documented_columns(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "tables"], capture_output=True, text=True, check=True)
    assert "samples v1" in r.stdout and "pixel_hash" in r.stdout


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
