"""Atomic file writes: write to a temp name in the same folder, fsync, then rename.

A reader (DuckDB, a rerun) therefore sees either the old file or the whole new one, never a
partial file. Temp names end in '.tmp-<random>' so no '*.parquet' glob can match them;
`remove_stale_temps` clears the ones an interrupted run left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.declare import TableSpec

TEMP_MARK = ".tmp-"


def _temp_for(path: Path) -> Path:
    return path.with_name(f"{path.name}{TEMP_MARK}{uuid.uuid4().hex[:12]}")


def _commit(tmp: Path, path: Path) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def writing(path: str | os.PathLike):
    """A binary file to stream into; it appears at `path` whole on success, never partially."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_for(path)
    try:
        with open(tmp, "wb") as f:
            yield f
        _commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_for(path)
    try:
        tmp.write_bytes(data)
        _commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: str | os.PathLike, obj) -> Path:
    return write_bytes(path, json.dumps(obj, indent=1, sort_keys=True, default=str).encode())


def write_table(path: str | os.PathLike, spec: TableSpec, data: pa.Table | list[dict]) -> Path:
    """Write `data` as Parquet with exactly the declared schema of `spec` (zstd)."""
    table = spec.from_rows(data) if isinstance(data, list) else data.cast(spec.schema)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_for(path)
    try:
        pq.write_table(table, tmp, compression="zstd")
        _commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def remove_stale_temps(root: str | os.PathLike) -> int:
    """Delete temp files an interrupted run left under `root`; returns how many."""
    n = 0
    for p in Path(root).rglob(f"*{TEMP_MARK}*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n
