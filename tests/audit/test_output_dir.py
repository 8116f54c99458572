import os
import subprocess
import sys

import pytest

from audit import atomic_files
from audit.output_dir import OutputDir
from audit.store import query, refresh_views
from schemas import ERRORS, SAMPLES, TABLES


def test_write_table_is_atomic_and_leaves_no_temp(tmp_path):
    out = OutputDir(tmp_path)
    p = out.write_shard_table(ERRORS, "r1", "00000", [
        {"run_id": "r1", "stage": "read", "shard": "00000", "key": "k", "error_type": "X", "message": "m"}])
    assert p.exists() and not list(tmp_path.rglob("*.tmp-*"))


def test_stale_temps_and_orphans_are_removed(tmp_path):
    out = OutputDir(tmp_path)
    out.write_shard_table(SAMPLES, "r0", "00007", [])
    (tmp_path / "samples" / "x.parquet.tmp-abc").write_bytes(b"partial")
    assert atomic_files.remove_stale_temps(tmp_path) == 1
    assert out.remove_orphans("00007", ["samples", "errors"]) == 1


def test_second_run_on_the_same_folder_is_refused(tmp_path):
    out = OutputDir(tmp_path)
    out.lock()
    code = ("from audit.output_dir import OutputDir, OutputLocked\n"
            f"try:\n    OutputDir({str(tmp_path)!r}).lock()\nexcept OutputLocked as e:\n    print('LOCKED', e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "LOCKED" in r.stdout and f"pid {os.getpid()}" in r.stdout
    out.unlock()
    OutputDir(tmp_path).lock()


def test_views_exist_for_empty_tables_with_documented_columns(tmp_path):
    out = OutputDir(tmp_path)
    refresh_views(out, TABLES)
    cols, rows = query(tmp_path, "SELECT count(*) FROM errors")
    assert rows == [(0,)]
    _, docs = query(tmp_path, "SELECT comment FROM duckdb_columns() WHERE table_name='samples' AND column_name='key'")
    assert "Sample key" in docs[0][0]


def test_store_is_read_only(tmp_path):
    refresh_views(OutputDir(tmp_path), TABLES)
    with pytest.raises(Exception, match="read-only"):
        query(tmp_path, "CREATE TABLE evil (a INT)")
