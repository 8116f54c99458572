"""`shardguard sql` end to end on one real run: paths that SQL text would break, a sandbox that
reads only OUT's tables and writes nothing, output that never hands a terminal or a
spreadsheet raw control characters or formulas, a quiet end on a closed pipe, and stray files
that change nothing."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audit.io.sql_literals import file_pattern, string_literal
from pipelines.cli import main
from tests.job_outputs import demo_subset, read_samples, write_tar

pytestmark = pytest.mark.beam  # runs Beam jobs (tests/conftest.py)

HOSTILE_CAPTION = '=HYPERLINK("http://evil.example/x","click")\x1b]0;pwned\x07\x1b[2J\rgone\x9b31m\u202eevil'
QUICK = ["-q", "--no-embed"]


@pytest.fixture(scope="module")
def hostile_run(demo_sample, tmp_path_factory):
    """One --no-embed run (dedup on) whose --input folder and --out hold a quote, `*/`, `--`,
    unicode and spaces, over two small demo shards; one caption carries escape sequences, a CR,
    a C1 CSI, a bidi override and a spreadsheet formula. Returns (input dir, OUT, tmp root)."""
    root = tmp_path_factory.mktemp("sql-cmd")
    inp, out = root / "in'p */--ü x", root / "o'ut */--ü x [1]"
    demo_subset(demo_sample, inp, shards=("00000", "00001"), per_shard=6)
    samples = list(read_samples(inp / "00001.tar").items())
    samples[0] = (samples[0][0], {**samples[0][1], "txt": HOSTILE_CAPTION.encode()})
    write_tar(inp / "00001.tar", samples)
    assert main(["run", "--input", str(inp), "--out", str(out), *QUICK]) == 0
    return inp, out, root


def _sql(capsys, out, *args) -> tuple[int, str, str]:
    code = main(["sql", "--out", str(out), *args])
    got = capsys.readouterr()
    return code, got.out, got.err


def test_run_report_clean_and_sql_with_quotes_comments_unicode_and_globs_in_paths(hostile_run, capsys):
    inp, out, root = hostile_run
    code, text, _ = _sql(capsys, out, "--format", "json", "SELECT count(*) AS n, count(*) FILTER (status = 'ok') AS ok "
                         "FROM samples")
    assert code == 0 and json.loads(text) == [{"n": 14, "ok": 13}]
    code, text, _ = _sql(capsys, out, "--format", "json", "SELECT count(*) FILTER (keep) AS kept FROM decisions")
    kept = json.loads(text)[0]["kept"]
    code, text, _ = _sql(capsys, out, "--format", "json", "SELECT status, error FROM runs")
    assert json.loads(text) == [{"status": "succeeded", "error": None}]
    assert main(["report", "--out", str(out), "--to", str(root / "rep'ort */--ü x")]) == 0
    assert (root / "rep'ort */--ü x" / "index.html").stat().st_size > 0
    dest = root / "cl'ean */--ü x"
    assert main(["clean", "--from", str(out), "--to", str(dest)]) == 0
    assert f"= {kept} kept" in capsys.readouterr().out
    assert sum(len(read_samples(t)) for t in dest.glob("*.tar")) == kept
    assert main(["status", "--out", str(out)]) == 0
    assert "not written by ShardGuard" not in capsys.readouterr().out


def test_table_output_escapes_control_characters_in_values_and_names(hostile_run, capsys):
    _, out, _ = hostile_run
    code, text, _ = _sql(capsys, out, "SELECT substr(caption, strpos(caption, chr(27))) AS tail, "
                         "chr(27) || '[31m' AS \"co\x1bl\" FROM samples WHERE caption LIKE '=HYPERLINK%'")
    assert code == 0 and "(1 row)" in text
    assert not any(c in text for c in "\x1b\x07\r\x9b\u202e")
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\rgone\\x9b31m\\u202eevil" in text and "co\\x1bl" in text


def test_csv_neutralises_formulas_unless_raw_and_json_stays_exact(hostile_run, capsys):
    _, out, _ = hostile_run
    sql = "SELECT caption, '-1+2' AS m, '@SUM(A1)' AS a, 'plain' AS p, -3 AS n FROM samples WHERE caption LIKE '=HYPERLINK%'"
    _, text, _ = _sql(capsys, out, "--format", "csv", sql)
    header, row = list(csv.reader(io.StringIO(text)))
    assert row == ["'" + HOSTILE_CAPTION, "'-1+2", "'@SUM(A1)", "plain", "-3"]
    _, text, _ = _sql(capsys, out, "--format", "csv", "--raw-csv", sql)
    assert list(csv.reader(io.StringIO(text)))[1][0] == HOSTILE_CAPTION
    _, text, _ = _sql(capsys, out, "--format", "json", sql)
    assert json.loads(text)[0]["caption"] == HOSTILE_CAPTION
    assert not any(c in text for c in "\x1b\x07\r\x9b\u202e")


def test_a_closed_pipe_ends_sql_quietly(hostile_run):
    _, out, _ = hostile_run
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for fmt in ("table", "csv"):
        p = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "sql", "--out", str(out), "--format", fmt,
                              "SELECT range AS i, repeat('x', 100) AS pad FROM range(200000)"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        p.stdout.readline()
        p.stdout.close()  # what `| head -1` does
        err = p.stderr.read().decode()
        assert p.wait(timeout=120) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.parametrize("attack", [
    "COPY (SELECT 42) TO '{root}/x.csv'",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_blob('{inp}/00000.tar')",
    "ATTACH '{root}/other.duckdb' (READ_WRITE)",
    "INSTALL httpfs",
    "SELECT 1; COPY (SELECT 1) TO '{root}/y.csv'",
])
def test_sql_refuses_attacks_with_one_line_and_exit_1(hostile_run, capsys, attack):
    inp, out, root = hostile_run
    before = sorted(root.rglob("*"))
    code, text, err = _sql(capsys, out, attack.format(root=str(root).replace("'", "''"), inp=str(inp).replace("'", "''")))
    assert code == 1 and text == "" and err.startswith("error: ") and err.count("\n") == 1, err
    assert sorted(root.rglob("*")) == before


def test_a_stray_decisions_file_changes_neither_the_views_nor_clean(hostile_run, capsys):
    """Issue 19's attack, with write access to OUT: a Parquet file keeping every sample lands in
    the latest decisions run folder. The views, the clean plan and the next run ignore it;
    `status` reports it. (Last in this module: it leaves the stray behind for no other test.)"""
    import duckdb

    inp, out, root = hostile_run
    _, plan_before, _ = (main(["clean", "--from", str(out), "--to", str(root / "plan"), "--dry-run"]),
                         capsys.readouterr().out, None)
    [run_dir] = sorted((out / "decisions").glob("run=*"))[-1:]
    con = duckdb.connect()
    con.execute("COPY (SELECT * REPLACE (true AS keep, [] AS reasons) FROM read_parquet(?)) TO "
                f"{string_literal(str(run_dir / 'zz.parquet'))} (FORMAT parquet)", [file_pattern(run_dir / "run.parquet")])
    con.close()
    assert main(["run", "--input", str(inp), "--out", str(out), *QUICK]) == 0  # refreshes the views
    capsys.readouterr()
    code, text, _ = _sql(capsys, out, "--format", "json", "SELECT count(*) FILTER (NOT keep) AS dropped FROM decisions")
    assert json.loads(text)[0]["dropped"] > 0
    assert main(["clean", "--from", str(out), "--to", str(root / "plan"), "--dry-run"]) == 0
    assert capsys.readouterr().out == plan_before
    assert main(["status", "--out", str(out)]) == 0
    status = capsys.readouterr().out
    assert "1 Parquet file(s) in table folders were not written by ShardGuard" in status and "zz.parquet" in status
