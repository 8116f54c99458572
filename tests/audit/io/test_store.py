"""audit.io.store: the sandboxed read-only `query`, views over the files the job wrote, the
store replaced atomically under a reader."""

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audit.io.output_dir import OutputDir
from audit.io.sql_literals import string_literal
from audit.io.store import DB_NAME, query, refresh_views
from schemas import DECISIONS, SAMPLES, TABLES

RUN = "20260101T000000Z-aaaaaa"


def _decision(shard, key, keep):
    return {"run_id": RUN, "shard": shard, "key": key, "keep": keep, "reasons": [] if keep else ["exact_duplicate"],
            "image_cluster": None, "representative": None}


def _sample(shard, key):
    return {"run_id": RUN, "shard": shard, "key": key, "status": "ok"}


@pytest.fixture
def out_dir(tmp_path) -> OutputDir:
    """An output folder the job's writers made: 2 shards of samples, a decisions run file
    dropping one sample, an ingest marker per shard, and the store. OUT's name holds a quote,
    a comment opener and a glob character; a secret file lies next to OUT."""
    out = OutputDir(tmp_path / "o'ut */--ü x")
    for shard in ("00000", "00001"):
        out.write_shard_table(SAMPLES, RUN, shard, [_sample(shard, "a"), _sample(shard, "b")])
        out.mark_complete("ingest", shard, {"shard": shard, "run_id": RUN})
    out.write_run_table(DECISIONS, RUN, [_decision("00000", "a", True), _decision("00000", "b", False),
                                         _decision("00001", "a", True), _decision("00001", "b", True)])
    refresh_views(out, TABLES)
    (tmp_path / "secret.txt").write_text("top secret\n")
    return out


def _snapshot(root: Path) -> dict:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _attacks(out: OutputDir, tmp: Path) -> list[str]:
    o, lit = out.root, string_literal
    stray = lit(str(o / "decisions" / f"run={RUN}" / "zz.parquet"))
    return [
        f"COPY (SELECT 42) TO {lit(str(tmp / 'x.csv'))}",
        f"COPY (SELECT * REPLACE (true AS keep) FROM decisions) TO {stray} (FORMAT parquet)",
        f"EXPORT DATABASE {lit(str(tmp / 'exported'))}",
        f"ATTACH {lit(str(tmp / 'other.duckdb'))} (READ_WRITE)",
        f"ATTACH {lit(str(tmp / 'other.duckdb'))} AS o; CREATE TABLE o.t AS SELECT 1 AS a; INSERT INTO o.t VALUES (2)",
        "SELECT * FROM read_csv('/etc/passwd')",
        f"SELECT * FROM read_text({lit(str(tmp / 'secret.txt'))})",
        f"SELECT * FROM read_text({lit(str(o / 'samples' / '..' / '..' / 'secret.txt'))})",
        f"SELECT * FROM read_text({lit(str(o / '_manifest' / 'ingest' / '00000.json'))})",
        "SELECT * FROM glob('/root/*')",
        "INSTALL httpfs", "LOAD httpfs",
        "SELECT 1; SELECT 2",
        f"SELECT 1; COPY (SELECT 1) TO {lit(str(tmp / 'y.csv'))}",
        "SET enable_external_access = true", "PRAGMA enable_profiling", "RESET allowed_directories",
        "CREATE TABLE evil (a INT)", "INSERT INTO shardguard_columns VALUES ('a', 'b', 'c', 'd', 1)",
        "DROP VIEW samples", "CHECKPOINT", "CALL pragma_version()",
        f"EXPLAIN ANALYZE COPY (SELECT 1) TO {stray}",
    ]


def test_every_attack_is_refused_with_one_line_and_writes_nothing(out_dir, tmp_path):
    before = _snapshot(tmp_path)
    for sql in _attacks(out_dir, tmp_path):
        with pytest.raises(ValueError) as e:
            query(out_dir.root, sql)
        assert str(e.value) and "\n" not in str(e.value), sql
        assert _snapshot(tmp_path) == before, sql
    # the store itself still answers, with the job's rows only
    assert query(out_dir.root, "SELECT count(*) FILTER (keep), count(*) FROM decisions")[1] == [(3, 4)]


def test_queries_still_read_every_table_and_the_documentation(out_dir):
    assert query(out_dir.root, "FROM samples SELECT count(*)")[1] == [(4,)]
    assert query(out_dir.root, "WITH t AS (SELECT * FROM errors) SELECT count(*) FROM t")[1] == [(0,)]
    cols, rows = query(out_dir.root, "DESCRIBE decisions")
    assert "keep" in [r[0] for r in rows]
    assert query(out_dir.root, "SELECT count(*) > 0 FROM shardguard_columns WHERE table_name = 'runs'")[1] == [(True,)]
    # naming the tables of a JOIN ... USING binds its columns: the views must exist for it
    assert query(out_dir.root, "SELECT count(*) FROM decisions d JOIN samples s USING (shard, key) "
                               "WHERE NOT d.keep")[1] == [(1,)]


def test_a_stray_parquet_file_is_reported_and_never_read(out_dir, caplog):
    """The attack of issue 19 done with write access to OUT: a Parquet file the job did not
    write lands in a decisions run folder (and one job file is overwritten)."""
    run_dir = out_dir.table_dir("decisions") / f"run={RUN}"
    flipped = pa.Table.from_pylist([_decision("00000", "b", True)], schema=DECISIONS.schema)
    pq.write_table(flipped, run_dir / "zz.parquet")
    pq.write_table(pa.Table.from_pylist([_sample("00000", "c")], schema=SAMPLES.schema),
                   out_dir.table_dir("samples") / f"run={RUN}" / "00000.parquet")  # overwritten: size changes
    with caplog.at_level(logging.WARNING, logger="shardguard.store"):
        refresh_views(out_dir, TABLES)
    assert "not written by ShardGuard" in caplog.text and "zz.parquet" in caplog.text
    assert {p.name for p in out_dir.stray_files(TABLES)} == {"zz.parquet", "00000.parquet"}
    assert query(out_dir.root, "SELECT count(*) FROM decisions WHERE NOT keep")[1] == [(1,)]
    assert query(out_dir.root, "SELECT DISTINCT shard FROM samples")[1] == [("00001",)]
    assert run_dir / "zz.parquet" not in out_dir.written_files("decisions")


def test_a_folder_from_before_file_records_keeps_working(out_dir):
    """Migration: without OUT/_files/ (older versions), files with the job's names are read
    (shards with an ingest marker; only run.parquet in run-level folders); the first writer
    records exactly those, and from then on a new unrecorded file is a stray."""
    shutil.rmtree(out_dir.root / "_files")
    run_dir = out_dir.table_dir("decisions") / f"run={RUN}"
    pq.write_table(pa.Table.from_pylist([_decision("00000", "b", True)], schema=DECISIONS.schema), run_dir / "zz.parquet")
    pq.write_table(pa.Table.from_pylist([_decision("00000", "b", True)], schema=DECISIONS.schema), run_dir / "00000.parquet")
    samples_dir = out_dir.table_dir("samples") / f"run={RUN}"
    pq.write_table(pa.Table.from_pylist([_sample("nope", "x")], schema=SAMPLES.schema), samples_dir / "nope.parquet")
    # sql answers at once (before any new run), by the names rule
    assert query(out_dir.root, "SELECT count(*) FROM samples")[1] == [(4,)]
    assert [p.name for p in out_dir.written_files("decisions")] == ["_schema.parquet", "run.parquet"]
    assert sorted(p.name for p in out_dir.written_files("samples")) == ["00000.parquet", "00001.parquet", "_schema.parquet"]
    assert out_dir.adopt_legacy_files() == sum(len(out_dir.written_files(t)) for t in TABLES)
    assert out_dir.adopt_legacy_files() == 0  # once
    pq.write_table(pa.Table.from_pylist([_sample("00001", "z")], schema=SAMPLES.schema), samples_dir / "00001.more.parquet")
    refresh_views(out_dir, TABLES)
    assert query(out_dir.root, "SELECT count(*) FROM samples")[1] == [(4,)]
    assert query(out_dir.root, "SELECT count(*) FILTER (NOT keep) FROM decisions")[1] == [(1,)]
    assert {p.name for p in out_dir.stray_files(TABLES)} == {"zz.parquet", "00000.parquet", "nope.parquet",
                                                             "00001.more.parquet"}


def test_refresh_replaces_the_store_under_a_notebooks_read_only_connection(out_dir):
    """A notebook (another process) holds audit.duckdb open read-only while a run refreshes
    the views: the refresh succeeds, the notebook keeps its snapshot, new connections see the new views."""
    db = out_dir.root / DB_NAME
    notebook = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys\n"
         f"con = duckdb.connect({str(db)!r}, read_only=True)\n"
         "print(con.execute('SELECT count(*) FROM samples').fetchone()[0], flush=True)\n"
         "sys.stdin.readline()\n"
         "print(con.execute('SELECT count(*) FROM shardguard_columns').fetchone()[0] > 0, flush=True)\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert notebook.stdout.readline().strip() == "4"
        out_dir.write_shard_table(SAMPLES, RUN, "00002", [_sample("00002", "a")])
        refresh_views(out_dir, TABLES)
        assert query(out_dir.root, "SELECT count(*) FROM samples")[1] == [(5,)]
        notebook.stdin.write("\n")
        notebook.stdin.flush()
        assert notebook.stdout.readline().strip() == "True"
    finally:
        notebook.kill()
        notebook.wait()
    assert not [p for p in out_dir.root.iterdir() if p.name.startswith(DB_NAME) and p.name != DB_NAME]


def test_sql_on_a_moved_folder_reads_the_moved_files(out_dir, tmp_path):
    moved = tmp_path / "moved [copy]"
    shutil.copytree(out_dir.root, moved)
    shutil.rmtree(out_dir.root)
    assert query(moved, "SELECT count(*) FROM samples")[1] == [(4,)]
    assert query(moved, "SELECT count(*) FROM decisions WHERE NOT keep")[1] == [(1,)]


def test_store_views_read_an_explicit_file_list(out_dir):
    con = duckdb.connect(str(out_dir.root / DB_NAME), read_only=True)
    try:
        [(sql,)] = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'samples'").fetchall()
    finally:
        con.close()
    assert "**" not in sql and "00001.parquet" in sql
