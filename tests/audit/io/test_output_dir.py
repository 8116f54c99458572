import os
import subprocess
import sys

import pytest

from audit.io import atomic_files
from audit.io.output_dir import OutputDir
from audit.io.store import query, refresh_views
from schemas import ERRORS, SAMPLES, TABLES


def test_write_table_is_atomic_and_leaves_no_temp(tmp_path):
    out = OutputDir(tmp_path)
    p = out.write_shard_table(ERRORS, "r1", "00000", [
        {"run_id": "r1", "stage": "read", "shard": "00000", "key": "k", "error_type": "X", "message": "m"}])
    assert p.exists() and not list(tmp_path.rglob(".sg-tmp-*"))


def test_stale_temps_and_orphans_are_removed(tmp_path):
    out = OutputDir(tmp_path)
    out.write_shard_table(SAMPLES, "r0", "00007", [])
    (tmp_path / "samples" / ".sg-tmp-0123456789ab-x.parquet.tmp").write_bytes(b"partial")
    assert out.remove_leftovers(["samples"]) == 1
    assert out.remove_orphans("00007", ["samples", "errors"]) == 1


def test_temp_names_are_ours_and_match_no_table_glob(tmp_path):
    tmp = atomic_files.temp_for(tmp_path / "run=1" / "00000.parquet")
    assert atomic_files.is_temp_name(tmp.name) and tmp.name.startswith(".sg-tmp-")
    assert not tmp.name.endswith(".parquet") and not tmp.name.endswith(".json")


def test_cleanup_deletes_only_the_temp_names_we_generate_in_our_folders(tmp_path):
    """A file whose name merely looks temporary, anything under a foreign folder, and files in
    _tmp/ that are not a run's private temp folder are never deleted."""
    out = OutputDir(tmp_path)
    out.write_shard_table(SAMPLES, "r0", "00007", [])
    ours = [tmp_path / "samples" / "run=r0" / ".sg-tmp-0123456789ab-00008.parquet.tmp",
            tmp_path / "_manifest" / "ingest" / ".sg-tmp-abcdefabcdef-00008.json.tmp",
            tmp_path / ".sg-tmp-abcdefabcdef-audit.duckdb.tmp"]
    private = tmp_path / "_tmp" / "sg-run-0badc0de" / "beam-temp-x" / "f"
    foreign = [tmp_path / "docs" / "thesis.tex.tmp-backup", tmp_path / "docs" / ".sg-tmp-0123456789ab-mine.tmp",
               tmp_path / "samples" / "run=r0" / "x.parquet.tmp-0123456789ab", tmp_path / "samples" / "notes.tmp-1",
               tmp_path / "_tmp" / "keep.txt", tmp_path / "_tmp" / "0badc0de" / "f",
               tmp_path / "samples" / ".sg-tmp-nothex-x.tmp"]
    for p in ours + foreign + [private]:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert out.remove_leftovers(TABLES) == len(ours) + 1
    assert not any(p.exists() for p in ours) and not private.parent.parent.exists()
    assert all(p.read_bytes() == b"x" for p in foreign)


def test_second_run_on_the_same_folder_is_refused(tmp_path):
    out = OutputDir(tmp_path)
    out.lock()
    code = ("from audit.io.output_dir import OutputDir, OutputLocked\n"
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
