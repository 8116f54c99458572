"""The copy check's prepared images (audit.copy_check.prepared.Prepared) kept between runs, so an
incremental run does not decode and re-describe the accepted samples it checks again.

Layout: OUT/features/copy_check/run=<run_id>.parquet, one file per dedup run that checked
pairs (partitioned dedup: run=<run_id>-<model>-g<group>.parquet, one per group that did), written atomically (audit.io.atomic_files) and recorded in OUT/_files like every table
file (audit.io.output_dir): a file without a record, or whose size no longer matches it, is
never read. A row per sample prepared in that run: shard, key, byte_hash (the sample's bytes
as ingested: a re-ingested sample with other bytes misses), a CRC32 over the row's encoded
arrays, and per field of Prepared (dataclasses.fields, so a field added there is stored too)
its bytes, shape and encoding: bool arrays as packed bits, numeric arrays as they are (the
descriptors are SIFT's uint8 values: exact, so a cached check is the same check). The mirrored
image (a private field) is not stored: Prepared.mirrored() derives it without SIFT. Row groups
of `ROWS_PER_GROUP` rows, zstd: a lookup decodes only its row's group.

Validity: the file's metadata holds `signature()`: the format version, the check's
preparation parameters (MAX_SIDE, N_FEATURES, PREPARE_VERSION),
OpenCV's version and the field names. Any difference makes the whole file a miss (the next
run writes a fresh one; files of ours that no longer match are deleted when it does).
Input: an OutputDir, the verifier's row space as (shard, key) and byte_hash per row, a run id.
Output: `get(row)` -> Prepared or None (a miss); `put(row, prepared)`; `close()` commits.
Failure: a missing, truncated, corrupt or foreign file, a row whose CRC, dtypes or shapes do
not check out, or a hash that differs is a miss (the image is prepared again); nothing in a
cache file is pickled or executed. Writing errors propagate (the run fails as for any file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import zlib
from collections import OrderedDict
from collections.abc import Sequence

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from audit.io import atomic_files
from audit.copy_check import prepared as cp
from audit.copy_check.prepared import Prepared
from audit.io.output_dir import OutputDir

FORMAT = 2  # 2: uint8 SIFT descriptors, the mirrored image not stored
FOLDER = "features/copy_check"
ROWS_PER_GROUP = 4
GROUPS_KEPT = 8  # decoded row groups held for the next lookups
META_KEY = b"shardguard.copy_features"
MAX_DIMS = 3
MAX_ELEMENTS = 1 << 24  # a stored array larger than this is not believed


def _field_names() -> list[str]:
    """Prepared's public fields; private ones (the mirrored image) are derived, not stored."""
    return [f.name for f in dataclasses.fields(Prepared) if not f.name.startswith("_")]


COLUMNS = _field_names()  # gray, points, descriptors, ink


def signature() -> dict:
    """What a cache file must have been written under to be read (module doc)."""
    return {"format": FORMAT, "max_side": cp.MAX_SIDE, "n_features": cp.N_FEATURES,
            "prepare_version": cp.PREPARE_VERSION, "opencv": cv2.__version__,
            "fields": COLUMNS}


def _schema() -> pa.Schema:
    cols = [pa.field("shard", pa.string()), pa.field("key", pa.string()), pa.field("byte_hash", pa.string()),
            pa.field("crc", pa.int64())]
    for c in COLUMNS:
        cols += [pa.field(c, pa.binary()), pa.field(f"{c}#shape", pa.list_(pa.int32())),
                 pa.field(f"{c}#enc", pa.string())]
    return pa.schema(cols, metadata={META_KEY: json.dumps(signature(), sort_keys=True).encode()})


def _encode_array(name: str, v: np.ndarray) -> tuple[bytes, list[int], str]:
    if v.dtype == np.bool_:
        return np.packbits(v, axis=None).tobytes(), list(v.shape), "bits"
    if v.dtype.kind not in "biuf":
        raise TypeError(f"{name}: dtype {v.dtype} is not stored")
    return np.ascontiguousarray(v).tobytes(), list(v.shape), v.dtype.str


def encode(p: Prepared) -> dict:
    """One row's columns (module doc) for a prepared image; TypeError for a field it cannot store."""
    row: dict = {}
    crc = 0
    for c in COLUMNS:
        v = getattr(p, c)
        if v is None:
            row[c] = row[f"{c}#shape"] = row[f"{c}#enc"] = None
            continue
        if not isinstance(v, np.ndarray):
            raise TypeError(f"{c}: {type(v).__name__} is not stored")
        blob, shape, enc = _encode_array(c, v)
        row[c], row[f"{c}#shape"], row[f"{c}#enc"] = blob, shape, enc
        crc = zlib.crc32(blob, zlib.crc32(f"{c}{shape}{enc}".encode(), crc))
    row["crc"] = crc
    return row


def _decode_array(blob: bytes, shape, enc: str) -> np.ndarray:
    shape = tuple(int(s) for s in shape)
    if not 1 <= len(shape) <= MAX_DIMS or min(shape) < 0 or int(np.prod(shape)) > MAX_ELEMENTS:
        raise ValueError(f"shape {shape}")
    n = int(np.prod(shape))
    if enc == "bits":
        if len(blob) != (n + 7) // 8:
            raise ValueError("bits length")
        return np.unpackbits(np.frombuffer(blob, np.uint8), count=n).reshape(shape).astype(bool)
    dtype = np.dtype(enc)
    if dtype.kind not in "biuf" or len(blob) != n * dtype.itemsize:
        raise ValueError(f"{enc}: {len(blob)} bytes for {shape}")
    a = np.frombuffer(blob, dtype).reshape(shape)
    return a.copy()


def decode(row: dict) -> Prepared:
    """A stored row back to a Prepared; ValueError when anything in it does not check out."""
    crc = 0
    values: dict[str, np.ndarray | None] = {}
    for c in COLUMNS:
        blob, shape, enc = row.get(c), row.get(f"{c}#shape"), row.get(f"{c}#enc")
        if blob is None or shape is None or enc is None:
            values[c] = None
            continue
        crc = zlib.crc32(blob, zlib.crc32(f"{c}{[int(s) for s in shape]}{enc}".encode(), crc))
        values[c] = _decode_array(blob, shape, enc)
    if crc != row.get("crc"):
        raise ValueError("crc")
    return _plausible(Prepared(**values))


def _plausible(p: Prepared) -> Prepared:
    """The checks a Prepared from prepare() always passes (where its fields exist)."""
    gray, ink = getattr(p, "gray", None), getattr(p, "ink", None)
    pts, desc = getattr(p, "points", None), getattr(p, "descriptors", None)
    if gray is None or gray.ndim != 2 or gray.dtype != np.uint8 or max(gray.shape) > 4 * cp.MAX_SIDE:
        raise ValueError("gray")
    if ink is not None and (ink.shape != gray.shape or ink.dtype != np.bool_):
        raise ValueError("ink")
    if pts is not None and (pts.ndim != 2 or pts.shape[1] != 2 or pts.dtype != np.float32
                            or not np.isfinite(pts).all()):
        raise ValueError("points")
    if desc is not None and (desc.ndim != 2 or pts is None or len(desc) != len(pts) or desc.dtype != np.uint8):
        raise ValueError("descriptors")
    return p


class FeatureCache:
    """Prepared images of one row space (module doc). `write=False`: read only."""

    def __init__(self, out: OutputDir, keys: Sequence[tuple[str, str]], hashes: Sequence, run_id: str,
                 write: bool = True, part: str = ""):
        self.out, self.keys, self.hashes, self.run_id, self.write = out, keys, hashes, run_id, write
        self.part = part  # several writers in one run (partitioned dedup's groups): run=<id>-<part>.parquet
        self.folder = out.root / FOLDER
        self._index: dict[tuple[str, str], tuple[int, int, int, str | None]] | None = None
        self._files: list[pq.ParquetFile] = []
        self._groups: OrderedDict[tuple[int, int], list[dict]] = OrderedDict()
        self._rows: list[dict] = []
        self._put: set[int] = set()
        self._stack: contextlib.ExitStack | None = None
        self._writer: pq.ParquetWriter | None = None
        self.written = self.rejected = 0

    # ---- reading ------------------------------------------------------------------------
    def _cache_files(self) -> list:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob("run=*.parquet")
                      if p.is_file() and not p.is_symlink() and self.out.is_recorded(p))

    def _load_index(self) -> dict:
        index: dict = {}
        want = signature()
        mine = {(str(s), str(k)) for s, k in self.keys}  # only this row space's samples are indexed
        for path in self._cache_files():  # older first: a later run's row for a sample wins
            try:
                f = pq.ParquetFile(path)
                meta = f.schema_arrow.metadata or {}
                if json.loads(meta.get(META_KEY, b"null")) != want or f.schema_arrow != _schema():
                    continue
                ids = f.read(columns=["shard", "key", "byte_hash"]).to_pydict()
                n = len(self._files)
                self._files.append(f)
                offsets = np.cumsum([0] + [f.metadata.row_group(g).num_rows for g in range(f.num_row_groups)])
                for r, (s, k, h) in enumerate(zip(ids["shard"], ids["key"], ids["byte_hash"])):
                    if (s, k) not in mine:
                        continue
                    g = int(np.searchsorted(offsets, r, side="right") - 1)
                    index[(s, k)] = (n, g, r - int(offsets[g]), h)
            except (OSError, ValueError, pa.ArrowException):
                continue  # unreadable: every sample in it misses
        return index

    def get(self, row: int) -> Prepared | None:
        """The stored Prepared of row `row`, or None (a miss: prepare it)."""
        if self._index is None:
            self._index = self._load_index()
        found = self._index.get(tuple(str(v) for v in self.keys[row]))
        if found is None or found[3] is None or self.hashes[row] is None or found[3] != str(self.hashes[row]):
            return None
        n, g, r, _ = found
        try:
            if (n, g) not in self._groups:
                self._groups[(n, g)] = self._files[n].read_row_group(g).to_pylist()
                if len(self._groups) > GROUPS_KEPT:
                    self._groups.popitem(last=False)
            self._groups.move_to_end((n, g))
            return decode(self._groups[(n, g)][r])
        except (OSError, ValueError, TypeError, IndexError, pa.ArrowException):
            self.rejected += 1
            return None

    # ---- writing ------------------------------------------------------------------------
    def put(self, row: int, p: Prepared) -> None:
        """Stores `p` as row `row`'s prepared image in this run's file (written at close())."""
        if not self.write or self.hashes[row] is None or row in self._put:
            return  # (a row prepared twice in one run, after it left the verifier's LRU, is stored once)
        try:
            rec = encode(p)
        except TypeError:
            return  # a field this format cannot store: that sample is not cached
        shard, key = (str(v) for v in self.keys[row])
        rec.update(shard=shard, key=key, byte_hash=str(self.hashes[row]))
        self._rows.append(rec)
        self._put.add(row)
        if len(self._rows) >= ROWS_PER_GROUP:
            self._flush()

    def path(self):
        return self.folder / (f"run={self.run_id}-{self.part}.parquet" if self.part else f"run={self.run_id}.parquet")

    def _flush(self) -> None:
        if not self._rows:
            return
        if self._writer is None:
            self._stack = contextlib.ExitStack()
            f = self._stack.enter_context(atomic_files.writing(self.path()))
            self._writer = self._stack.enter_context(pq.ParquetWriter(f, _schema(), compression="zstd",
                                                                       compression_level=1))
        self._writer.write_table(pa.Table.from_pylist(self._rows, _schema()), row_group_size=ROWS_PER_GROUP)
        self.written += len(self._rows)
        self._rows = []

    def close(self) -> None:
        """Commits this run's file (nothing when nothing was put) and records it; then deletes
        our older files whose signature no longer matches."""
        self._flush()
        if self._stack is not None:
            self._stack.close()
            self._stack = self._writer = None
            self.out.record_file(self.path())
            for path in self._cache_files():
                if path != self.path() and not _current(path):
                    self.out.forget_file(path)

    def abort(self) -> None:
        """Drops this run's unfinished file (its temp file is removed)."""
        if self._stack is not None:
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
            self._stack = self._writer = None


def _current(path) -> bool:
    try:
        meta = pq.ParquetFile(path).schema_arrow.metadata or {}
        return json.loads(meta.get(META_KEY, b"null")) == signature()
    except (OSError, ValueError, pa.ArrowException):
        return False


class SplitFeatures:
    """Two caches over one verifier row space: rows < `n_first` are `first`'s rows, the others
    `second`'s (row - n_first); e.g. contamination's training rows (its own folder, read only)
    and eval rows (the folder the command writes)."""

    def __init__(self, first: FeatureCache, second: FeatureCache, n_first: int):
        self.first, self.second, self.n_first = first, second, n_first

    def _side(self, row: int) -> tuple[FeatureCache, int]:
        return (self.first, row) if row < self.n_first else (self.second, row - self.n_first)

    def get(self, row: int) -> Prepared | None:
        cache, r = self._side(row)
        return cache.get(r)

    def put(self, row: int, p: Prepared) -> None:
        cache, r = self._side(row)
        cache.put(r, p)

    def close(self) -> None:
        self.first.close()
        self.second.close()

    def abort(self) -> None:
        self.first.abort()
        self.second.abort()


def feature_cache(out: OutputDir, cfg, keys: Sequence[tuple[str, str]], hashes: Sequence,
                  run_id: str, part: str = "") -> FeatureCache | None:
    """The job's cache for one dedup run's row space, or None when `cfg.near_feature_cache`
    (a DedupConfig) is off."""
    return FeatureCache(out, keys, hashes, run_id, part=part) if getattr(cfg, "near_feature_cache", True) else None


@contextlib.contextmanager
def saving_features(verifier):
    """Around a dedup step: on success the verifier's prepared images are committed
    (PairVerifier.save_features); on failure this run's unfinished file is dropped."""
    try:
        yield
    except BaseException:
        if verifier is not None and verifier.features is not None:
            verifier.features.abort()
        raise
    if verifier is not None:
        verifier.save_features()
