"""Atomic file writes: write to a temp name in the same folder, fsync, then rename.

A reader (DuckDB, a rerun) therefore sees either the old file or the whole new one, never a
partial file. Temp names are '.sg-tmp-<12 hex>-<name>.tmp' (`TEMP_NAME`): our own prefix, and
a suffix no '*.parquet' / '*.json' glob can match. `remove_stale_temps` clears the ones an
interrupted run left behind, matching exactly that pattern and only in the folders it is given
(audit.io.output_dir names ours): a file we did not name is never deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.declare import TableSpec

TEMP_PREFIX = ".sg-tmp-"
TEMP_NAME = re.compile(r"\.sg-tmp-[0-9a-f]{12}-.+\.tmp")  # full match: the only names cleanup deletes


def temp_for(path: Path) -> Path:
    return path.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}-{path.name}.tmp")


def is_temp_name(name: str) -> bool:
    return TEMP_NAME.fullmatch(name) is not None


def _commit(tmp: Path, path: Path) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def writing(path: str | os.PathLike):
    """A binary file to stream into; it appears at `path` whole on success, never partially."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_for(path)
    try:
        with open(tmp, "wb") as f:
            yield f
        _commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_for(path)
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
    tmp = temp_for(path)
    try:
        pq.write_table(table, tmp, compression="zstd")
        _commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def remove_stale_temps(root: str | os.PathLike, folders: list[str]) -> int:
    """Delete our temp files (exactly `TEMP_NAME`) an interrupted run left in root itself (not
    its subfolders) and anywhere under root/<folder> for each of `folders` (symlinks are not
    followed); returns how many."""
    root = Path(root)
    dirs = [(root, False)] + [(root / f, True) for f in folders]
    n = 0
    for top, recursive in dirs:
        if not top.is_dir() or top.is_symlink():
            continue
        walk = os.walk(top) if recursive else [(str(top), [], os.listdir(top))]
        for folder, _, names in walk:
            for name in names:
                p = Path(folder) / name
                if is_temp_name(name) and p.is_file() and not p.is_symlink():
                    p.unlink(missing_ok=True)
                    n += 1
    return n
