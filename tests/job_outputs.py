"""Small real inputs for end-to-end job tests, and an output folder's tables as comparable rows.

`demo_subset` writes a few img2dataset-format shards cut from the committed demo sample:
`per_shard` real samples per shard (every k-th key, so several categories), plus, in the second
shard, an exact copy and a re-encoded (near) copy of two samples of the first shard, and, in the
first shard, one truncated JPEG (a failed sample with an errors row). Deterministic: same bytes on
every call.

`table_rows` reads an output folder's audit tables through its DuckDB views (latest run for
corpus-level tables) and returns, per table, the sorted rows without the columns that differ
between equivalent runs (run ids, timings). Failure: a missing store raises FileNotFoundError.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from PIL import Image

from audit.io.store import query

# Columns that legitimately differ between two runs over the same input.
VOLATILE = {"run_id", "seconds", "wall_seconds", "started_at", "finished_at"}

COMPARED_TABLES = ("samples", "errors", "shards", "duplicates", "decisions", "embeddings",
                   "perturbation_samples", "perturbation_flags", "perturbation_tests")


def read_samples(tar: Path) -> dict[str, dict[str, bytes]]:
    """{key: {ext: bytes}} of a webdataset tar, in tar order."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(tar) as tf:
        for m in tf.getmembers():
            if m.isfile():
                key, _, ext = m.name.partition(".")
                samples.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return samples


def write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    """A webdataset tar of (key, {ext: bytes}) samples, deterministic bytes."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for key, files in samples:
            for ext in sorted(files):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(files[ext]), 1_700_000_000, 0o644
                tf.addfile(info, io.BytesIO(files[ext]))


def _reencoded(jpeg: bytes) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).convert("RGB").save(buf, "JPEG", quality=60)
    return buf.getvalue()


def demo_subset(demo_dir: Path, dst: Path, shards: tuple[str, ...] = ("00000", "00001", "00003"),
                per_shard: int = 40) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    picked: dict[str, list[tuple[str, dict[str, bytes]]]] = {}
    for s in shards:
        samples = read_samples(demo_dir / f"{s}.tar")
        keys = sorted(samples)
        step = max(1, len(keys) // per_shard)
        picked[s] = [(k, dict(samples[k])) for k in keys[::step][:per_shard]]
    first, second = shards[0], shards[1]
    (k0, f0), (k1, f1) = picked[first][0], picked[first][1]
    picked[second].append((f"{k0}9", dict(f0)))                            # exact copy
    picked[second].append((f"{k1}9", {**f1, "jpg": _reencoded(f1["jpg"])}))  # near copy
    k2, f2 = picked[first][2]
    picked[first][2] = (k2, {**f2, "jpg": f2["jpg"][: len(f2["jpg"]) // 3]})  # truncated JPEG
    for s in shards:
        write_tar(dst / f"{s}.tar", picked[s])
    return dst


def _cell(v):
    if isinstance(v, list):
        return tuple(_cell(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _cell(x)) for k, x in v.items()))
    return v


def table_rows(out: Path, tables: tuple[str, ...] = COMPARED_TABLES) -> dict[str, list[tuple]]:
    rows = {}
    for t in tables:
        cols, _ = query(out, f"SELECT * FROM {t} LIMIT 0")
        keep = [c for c in cols if c not in VOLATILE]
        _, data = query(out, f"SELECT {', '.join(f'"{c}"' for c in keep)} FROM {t}")
        rows[t] = sorted((tuple(_cell(v) for v in r) for r in data), key=repr)
    return rows
