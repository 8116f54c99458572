"""The output folder: where each table's Parquet files live, completion markers, the lock.

Layout (OUT is local):
  OUT/<table>/run=<run_id>/<shard>.parquet   per-shard rows of a per-shard table
  OUT/<table>/run=<run_id>/<shard>.<part>.parquet   more rows for the shard from a later stage
  OUT/embeddings/<model>/run=<run_id>/<shard>.parquet and OUT/vectors/<model>/<shard>.npy|.fbin
  OUT/<table>/run=<run_id>/run.parquet       rows written once per run (runs table)
  OUT/<table>/_schema.parquet                zero rows: gives the DuckDB view its columns
  OUT/_manifest/<stage>/<shard>.json         completion marker: written last, atomically
  OUT/audit.duckdb                           views over all of the above
  OUT/.lock                                  held by the run that writes OUT

A shard is complete for a stage iff its marker exists. Files of a shard without a marker
are leftovers of an interrupted run: `remove_orphans` deletes them before the shard is
redone, so the union over runs never holds a shard twice.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from audit import atomic_files
from schemas.declare import TableSpec


class OutputLocked(RuntimeError):
    pass


class OutputDir:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self._lock_fd: int | None = None

    # ---- tables -------------------------------------------------------------------------
    def table_dir(self, table: str) -> Path:
        return self.root / table

    def read_sql(self, table: str) -> str:
        """DuckDB table expression over every Parquet file of `table` in every run."""
        glob = str(self.table_dir(table) / "**" / "*.parquet").replace("'", "''")
        return f"read_parquet('{glob}', union_by_name=true, hive_partitioning=false)"

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
        return atomic_files.write_table(path, spec, rows)

    def write_run_table(self, spec: TableSpec, run_id: str, rows) -> Path:
        return atomic_files.write_table(self.table_dir(spec.name) / f"run={run_id}" / "run.parquet", spec, rows)

    def ensure_schema_file(self, spec: TableSpec) -> Path:
        path = self.table_dir(spec.name) / "_schema.parquet"
        return atomic_files.write_table(path, spec, spec.empty())

    def remove_orphans(self, shard: str, tables: list[str], part: str = "") -> int:
        n = 0
        suffix = f".{part}" if part else ""
        for t in tables:
            for p in self.table_dir(t).glob(f"run=*/{_safe(shard)}{suffix}.parquet"):
                p.unlink(missing_ok=True)
                n += 1
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
