"""The output folder: where each table's Parquet files live, completion markers, the lock.

Layout (OUT is local):
  OUT/<table>/run=<run_id>/<shard>.parquet   per-shard rows of a per-shard table
  OUT/<table>/run=<run_id>/<shard>.<part>.parquet   more rows for the shard from a later stage
  OUT/embeddings/<model>/run=<run_id>/<shard>.parquet and OUT/vectors/<model>/<shard>.npy|.fbin
  OUT/<table>/run=<run_id>/run.parquet       rows written once per run (runs table)
  OUT/<table>/_schema.parquet                zero rows: gives the DuckDB view its columns
  OUT/_manifest/<stage>/<shard>.json         completion marker: written last, atomically
  OUT/_files/<path of a table file>.json     written-file record: the file's size in bytes
  OUT/features/copy_check/run=<run_id>.parquet   the copy check's prepared images (audit.copy_check.feature_cache), recorded too
  OUT/exports/perturbation_sanitizer.json    for training code and the clean job: the perturbation tests' sanitizer and
                                             training recommendation (PERTURBATION_EXPORT; written by pipelines.perturbations)
  OUT/audit.duckdb                           views over all of the above
  OUT/.lock                                  held by the run that writes OUT
  OUT/.shardguard.json                       layout marker: OUT is ours (audit.io.folder_ownership)
  OUT/_tmp/sg-run-<8 hex>/                   a run's private temp folder (removed when it ends)

A shard is complete for a stage iff its marker exists. Files of a shard without a marker
are leftovers of an interrupted run: `remove_orphans` deletes them before the shard is
redone, so the union over runs never holds a shard twice.
Cleanup (`remove_leftovers`) deletes only what we name: temp files matching
atomic_files.TEMP_NAME in OUT's own folders (`OWN_FOLDERS` and the table folders) and private
temp folders matching `RUN_TMP` in OUT/_tmp; any other file stays where it is.

Which files the views read: every table file the job writes (`write_shard_table`,
`write_run_table`, `ensure_schema_file`) gets a written-file record right after it, naming it
and its size. `read_sql` and the views read an explicit list of the files whose record exists
and whose size still matches; any other Parquet file under a table folder (copied in, written
by hand or by an attacker, overwritten since) is a stray: `stray_files` lists it, `shardguard
status` and the view refresh report it, nothing reads it.
Migration: a folder written before these records existed has no OUT/_files/. There, a file is
read iff its name is one the job gives: `_schema.parquet` at the table's top, `run.parquet` in
a run folder, or `<shard>.parquet` / `<shard>.<part>.parquet` of a shard with an ingest
completion marker (any name in caption_variants, named by clean's output shards) in a run
folder that holds no `run.parquet` (run-level tables hold only that file). The first writer of
the new version (`adopt_legacy_files`, at the start of a run or before any other record)
records exactly those files, once; from then on records decide. Symbolic links are never read.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from audit.io import atomic_files, sql_literals
from schemas import TABLES
from schemas.declare import TableSpec


FILES_DIR = "_files"  # written-file records, one per table file, mirroring OUT's layout
LEGACY_ANY_SHARD_NAME = {"caption_variants"}  # named by clean's output shards, not by ingested ones


class OutputLocked(RuntimeError):
    pass


PERTURBATION_EXPORT = "exports/perturbation_sanitizer.json"  # written last by the perturbation tests
OWN_FOLDERS = ("_manifest", "_files", "embeddings", "vectors", "index", "features", "reports", "exports")  # besides the table folders
PRIVATE_TMP = "_tmp"
RUN_TMP = re.compile(r"sg-run-[0-9a-f]{8}")  # full match: a run's private temp folder under OUT/_tmp


class OutputDir:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self._lock_fd: int | None = None

    # ---- tables -------------------------------------------------------------------------
    def table_dir(self, table: str) -> Path:
        return self.root / table

    def read_sql(self, table: str) -> str:
        """DuckDB table expression over the Parquet files of `table` the job wrote, in every run
        (`table` may be a sub-path such as 'embeddings/<model>'). Failure: FileNotFoundError
        when there is none."""
        files = self.written_files(table)
        if not files:
            raise FileNotFoundError(f"no Parquet file of table {table!r} written by ShardGuard in {self.root}")
        return sql_literals.read_parquet(files)

    def shard_file(self, table: str, run_id: str, shard: str, part: str = "") -> Path:
        """`table` may be a sub-path such as 'embeddings/<model>'; `part` names a later stage's file."""
        suffix = f".{part}" if part else ""
        return self.table_dir(table) / f"run={run_id}" / f"{_safe(shard)}{suffix}.parquet"

    def shard_files(self, table: str, shard: str) -> list[Path]:
        """The shard's main file of `table` in every run (one, once the shard is complete)."""
        return sorted(self.table_dir(table).glob(f"run=*/{_safe(shard)}.parquet"))

    def write_shard_table(self, spec: TableSpec, run_id: str, shard: str, rows,
                          table: str = "", part: str = "") -> Path:
        path = self.shard_file(table or spec.name, run_id, shard, part)
        return self._record_written(atomic_files.write_table(path, spec, rows))

    def write_run_table(self, spec: TableSpec, run_id: str, rows) -> Path:
        path = self.table_dir(spec.name) / f"run={run_id}" / "run.parquet"
        return self._record_written(atomic_files.write_table(path, spec, rows))

    def ensure_schema_file(self, spec: TableSpec) -> Path:
        path = self.table_dir(spec.name) / "_schema.parquet"
        return self._record_written(atomic_files.write_table(path, spec, spec.empty()))

    def remove_orphans(self, shard: str, tables: list[str], part: str = "") -> int:
        n = 0
        suffix = f".{part}" if part else ""
        for t in tables:
            for p in self.table_dir(t).glob(f"run=*/{_safe(shard)}{suffix}.parquet"):
                p.unlink(missing_ok=True)
                self._record_of(p).unlink(missing_ok=True)
                n += 1
        return n

    # ---- written-file records (which table files the views read) ------------------------
    def _record_of(self, path: Path) -> Path:
        rel = str(path)[len(str(self.root)) + 1:]  # path is under root (table files only): no pathlib cost
        if str(path)[: len(str(self.root)) + 1] != str(self.root) + os.sep:
            raise ValueError(f"{path} is not under {self.root}")
        return Path(f"{self.root}{os.sep}{FILES_DIR}{os.sep}{rel}.json")

    def _record_written(self, path: Path) -> Path:
        if not (self.root / FILES_DIR).is_dir():
            self.adopt_legacy_files()
        atomic_files.write_json(self._record_of(path), {"bytes": path.stat().st_size})
        return path

    def record_file(self, path: Path) -> Path:
        """Records a file the job wrote outside the table folders (e.g. OUT/features/): readers
        of such files trust only recorded ones (`is_recorded`)."""
        return self._record_written(Path(path))

    def is_recorded(self, path: Path) -> bool:
        return self._is_recorded(Path(path))

    def forget_file(self, path: Path) -> None:
        """Deletes a file the job recorded, and its record (a file without a record is left alone)."""
        if self._is_recorded(Path(path)):
            Path(path).unlink(missing_ok=True)
            self._record_of(Path(path)).unlink(missing_ok=True)

    def _is_recorded(self, path: Path) -> bool:
        try:
            return json.loads(self._record_of(path).read_text()).get("bytes") == path.stat().st_size
        except (OSError, ValueError, AttributeError):
            return False

    def _table_parquet(self, table: str) -> list[Path]:
        base = self.table_dir(table)
        return sorted(p for p in base.rglob("*.parquet") if p.is_file() and not p.is_symlink()) if base.is_dir() else []

    def _legacy_named(self) -> Callable[[Path], bool]:
        """The migration rule (module doc): is this file one the job of an older version wrote?"""
        ingested = {p.stem for p in self.manifest_dir("ingest").glob("*.json")}

        def named(p: Path) -> bool:
            if p.name == "_schema.parquet":
                return not p.parent.name.startswith("run=")
            if not p.parent.name.startswith("run="):
                return False
            if p.name == "run.parquet" or (p.parent / "run.parquet").exists():
                return p.name == "run.parquet"
            if p.relative_to(self.root).parts[0] in LEGACY_ANY_SHARD_NAME:
                return True
            stem = p.name[: -len(".parquet")]
            return any(stem[:i] in ingested for i in range(len(stem), 0, -1) if i == len(stem) or stem[i] == ".")
        return named

    def written_files(self, table: str) -> list[Path]:
        """The Parquet files of `table` (or a sub-path) that the job wrote, sorted."""
        if not (self.root / FILES_DIR).is_dir():
            named = self._legacy_named()
            return [p for p in self._table_parquet(table) if named(p)]
        return [p for p in self._table_parquet(table) if self._is_recorded(p)]

    def stray_files(self, tables: Iterable[str]) -> list[Path]:
        """Parquet files under the tables' folders that the job did not write: never read."""
        strays = []
        for t in tables:
            written = set(self.written_files(t))
            strays += [p for p in self._table_parquet(t) if p not in written]
        return strays

    def adopt_legacy_files(self) -> int:
        """Record the files of a folder written before records existed (migration rule of the
        module doc); a no-op once OUT/_files/ exists. Returns how many were recorded."""
        if (self.root / FILES_DIR).is_dir():
            return 0
        named, n = self._legacy_named(), 0
        for t in TABLES:
            for p in self._table_parquet(t):
                if named(p):
                    atomic_files.write_json(self._record_of(p), {"bytes": p.stat().st_size})
                    n += 1
        (self.root / FILES_DIR).mkdir(parents=True, exist_ok=True)
        return n

    # ---- completion markers ---------------------------------------------------------------
    def manifest_dir(self, stage: str) -> Path:
        return self.root / "_manifest" / stage

    def marker(self, stage: str, shard: str) -> Path:
        return self.manifest_dir(stage) / f"{_safe(shard)}.json"

    def is_complete(self, stage: str, shard: str) -> bool:
        return self.marker(stage, shard).exists()

    def mark_complete(self, stage: str, shard: str, record: dict) -> None:
        atomic_files.write_json(self.marker(stage, shard), record)

    def forget_shard(self, shard: str) -> int:
        """Remove the shard's completion markers in every stage (ingest marker last), so the next
        run redoes it everywhere; its files become orphans that each stage removes first."""
        ingest = self.root / "_manifest" / "ingest" / f"{_safe(shard)}.json"
        found = [p for p in (self.root / "_manifest").rglob(f"{_safe(shard)}.json") if p != ingest]
        for p in found + [ingest]:
            p.unlink(missing_ok=True)
        return len(found) + 1

    def markers(self, stage: str) -> list[dict]:
        out = []
        for p in sorted(self.manifest_dir(stage).glob("*.json")):
            out.append(json.loads(p.read_text()))
        return out

    # ---- our leftovers --------------------------------------------------------------------
    def new_private_tmp(self) -> Path:
        """A fresh private temp folder OUT/_tmp/sg-run-<hex> (named so cleanup can tell it is ours)."""
        path = self.root / PRIVATE_TMP / f"sg-run-{secrets.token_hex(4)}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def remove_private_tmp(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
        try:
            path.parent.rmdir()  # only when nothing else is in it
        except OSError:
            pass

    def remove_leftovers(self, tables=()) -> int:
        """What killed runs left, and only that (call while holding the lock): our temp files in
        OUT itself, OWN_FOLDERS and the folders of `tables`, and our private temp folders."""
        n = atomic_files.remove_stale_temps(self.root, list(OWN_FOLDERS) + [t for t in tables if t not in OWN_FOLDERS])
        tmp = self.root / PRIVATE_TMP
        if tmp.is_dir() and not tmp.is_symlink():
            for p in tmp.iterdir():
                if RUN_TMP.fullmatch(p.name) and p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                    n += 1
            try:
                tmp.rmdir()
            except OSError:
                pass
        return n

    # ---- lock -------------------------------------------------------------------------------
    def lock(self) -> None:
        """Hold OUT/.lock for this process; a second concurrent run gets OutputLocked."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            raise OutputLocked(f"{self.root} is in use by another ShardGuard run ({holder or 'unknown'}); "
                               "wait for it to finish or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None


def _safe(shard: str) -> str:
    """Shard ids become file names: keep them to one path component."""
    return shard.replace("/", "_").replace("\\", "_").lstrip(".") or "_"


def shard_file_stem(shard: str) -> str:
    """The name a shard id's files and markers get: two ids with one stem would share files
    (pipelines.shard_uris refuses such an input)."""
    return _safe(shard)
