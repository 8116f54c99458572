"""The samples an ingest stored, read back: ok rows from the samples table and image bytes from
the shard's tar by (image_offset, image_bytes), with one open handle per shard.

Every later step that needs a stored image reads it here: the per-shard stages of shards
ingested by an earlier run (audit.ingest.shard_runner: `ok_rows`, `image_batches`), and, at random by
(shard, key), `StoredImages`: the copy check (audit.ingest.stored_images), the finding pages and the
report (audit.report.finding_pages), the perturbation corpus, and the clean job (by location).
Input: an OutputDir after ingest, the shard's URI (or the ingest markers, for StoredImages) and
an opener (`opener(uri) -> binary file`; callers pass one that retries transient errors,
audit.io.retrying_reads, or Beam's FileSystems.open).
Output: `ok_rows(out, shard)` -> the shard's ok samples rows; `image_batches(...)` -> batches of
(rows, image bytes, None) in offset order, read one batch ahead on a thread by `prefetch`;
`StoredImages(out, opener).get(shard, key)` / `.many(keys)` -> image bytes, at most `max_open`
tars open at once.
Failure: once a read fails for good (an OSError through the opener) that batch and every later
one come back as (rows, None, why), without reading again, so each stage makes its own
'ReadFailed' rows and caption-only work still goes on. StoredImages gives None for a sample
with no stored location, no ingest marker or a tar that cannot be read (its class doc).
"""

from __future__ import annotations

import io
import queue
import threading
import weakref
from collections import OrderedDict
from typing import Callable, Iterator

import pyarrow.parquet as pq

from audit.ingest.shard_ingest import STAGE as INGEST_STAGE
from audit.io.store import scan

OK_COLUMNS = ["key", "image_offset", "image_bytes", "caption", "status"]


def ok_rows(out, shard: str) -> list[dict]:
    """The shard's ok samples rows (key, image_offset, image_bytes, caption), [] before ingest."""
    files = out.shard_files("samples", shard)
    if not files:
        return []
    t = pq.read_table(files[-1], columns=OK_COLUMNS)
    return [r for r in t.to_pylist() if r["status"] == "ok"]


def byte_hashes(out, shard: str) -> dict[str, str]:
    """key -> byte_hash of the shard's ok samples (what keys the copy check's feature cache)."""
    files = out.shard_files("samples", shard)
    if not files:
        return {}
    t = pq.read_table(files[-1], columns=["key", "status", "byte_hash"]).to_pydict()
    return {k: h for k, st, h in zip(t["key"], t["status"], t["byte_hash"]) if st == "ok"}


def read_images(f: io.BufferedIOBase, rows: list[dict]) -> list[bytes]:
    """Image bytes by (image_offset, image_bytes); rows should be sorted by offset."""
    out = []
    for r in rows:
        f.seek(r["image_offset"])
        out.append(f.read(r["image_bytes"]))
    return out


def prefetch(items: Iterator, depth: int = 2) -> Iterator:
    """Run the producer in a thread, `depth` items ahead; re-raise its error in the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def produce():
        try:
            for it in items:
                q.put(it)
        except BaseException as e:  # handed to the consumer below
            q.put(e)
        q.put(done)

    threading.Thread(target=produce, daemon=True).start()
    while (it := q.get()) is not done:
        if isinstance(it, BaseException):
            raise it
        yield it


def image_batches(uri: str, rows: list[dict], opener: Callable, size: int,
                  need_images: bool = True) -> Iterator[tuple[list[dict], list | None, str | None]]:
    """(rows, image bytes, None) per batch of `size` rows; once a read fails for good (an OSError
    through the opener, which should be retrying) (rows, None, why) for that batch and every
    later one, without reading again. need_images=False: (rows, None, None), the file unopened."""
    failed, f = None, None
    try:
        if need_images and rows:
            try:
                f = opener(uri)
            except OSError as e:
                failed = f"cannot read {uri}: {type(e).__name__}: {e}"
        for i in range(0, len(rows), size):
            chunk, images = rows[i:i + size], None
            if f is not None and failed is None:
                try:
                    images = read_images(f, chunk)
                except OSError as e:
                    failed = f"{type(e).__name__}: {e}"
            yield chunk, images, failed
    finally:
        if f is not None:
            f.close()


class StoredImages:
    """Stored images read back at random by (shard, key), for every step after ingest (the copy
    check, finding pages, perturbation corpus, report, clean job).

    Input: an OutputDir after ingest (None: only `read` by location is used) and an opener
    (`opener(uri) -> binary file`; callers pass one that retries, or Beam's FileSystems.open).
    Each shard's locations (image_offset, image_bytes of its ok samples rows) are looked up once
    (`many`: one query for all the keys asked; `get`: one query for the whole shard), the shards'
    URIs once from the ingest markers, and each tar is opened once and kept open; beyond
    `max_open` tars the least recently used one is closed (reopened if asked for again).
    Output: `get(shard, key)` -> the bytes as read (short when the tar now ends early: callers
    compare lengths or decode); `many(keys)` -> {(shard, key): bytes} for those that give bytes,
    read in offset order per shard; `read(uri, offset, length)` -> bytes by location.
    Failure: `get` gives None, and `many` leaves the key out, when the sample has no stored
    location (unknown (shard, key), not an ok sample, or no image_offset), when its shard has no
    ingest marker (no URI), or when its tar cannot be opened or read (an OSError through the
    opener); the last two are noted in `failed[shard]` (why), and a shard that failed is not
    read again. `read` lets the OSError propagate. A samples table with no file raises
    FileNotFoundError (OutputDir.read_sql). Handles are closed by `close()` (or `with`), else
    when the object is dropped.
    """

    def __init__(self, out, opener: Callable, max_open: int = 8):
        self.out, self.opener, self.max_open = out, opener, max(1, max_open)
        self.failed: dict[str, str] = {}
        self._handles: OrderedDict[str, object] = OrderedDict()  # uri -> open file, least recent first
        self._located: dict[str, dict[str, tuple[int, int] | None]] = {}  # shard -> key -> (offset, length)
        self._whole: set[str] = set()  # shards whose every location is in _located
        self._uris: dict[str, str] | None = None
        self._samples: str | None = None
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _close_all, self._handles)

    def __enter__(self) -> "StoredImages":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            _close_all(self._handles)

    # ---- by location ---------------------------------------------------------------------
    def read(self, uri: str, offset: int, length: int) -> bytes:
        """`length` bytes at `offset` of `uri` (fewer when the file ends early) through the
        shared handles. Failure: OSError from opening or reading; the handle is then dropped."""
        with self._lock:
            f = self._handles.get(uri)
            if f is None:
                while len(self._handles) >= self.max_open:  # closed before the next one opens
                    self._handles.popitem(last=False)[1].close()
                f = self._handles[uri] = self.opener(uri)
            else:
                self._handles.move_to_end(uri)
            try:
                f.seek(offset)
                return f.read(length)
            except OSError:
                self._handles.pop(uri, None)
                f.close()
                raise

    # ---- by (shard, key) -----------------------------------------------------------------
    def get(self, shard: str, key: str) -> bytes | None:
        """The sample's stored image bytes, or None (class doc: Failure)."""
        if shard not in self._whole and key not in self._located.get(shard, {}):
            self._look_up("shard = ?", [shard])
            self._whole.add(shard)
        return self._read_located(shard, self._located.get(shard, {}).get(key))

    def many(self, keys) -> dict[tuple[str, str], bytes]:
        """{(shard, key): bytes} of the stored images of `keys` that could be read (class doc:
        Failure), read shard by shard in offset order."""
        wanted = sorted({(str(s), str(k)) for s, k in keys})
        unknown = [(s, k) for s, k in wanted if s not in self._whole and k not in self._located.get(s, {})]
        if unknown:
            self._look_up("(shard, key) IN (SELECT (s, k) FROM (SELECT unnest(?::VARCHAR[]) AS s, "
                          "unnest(?::VARCHAR[]) AS k))", [[s for s, _ in unknown], [k for _, k in unknown]])
            for s, k in unknown:
                self._located.setdefault(s, {}).setdefault(k, None)
        order = sorted(wanted, key=lambda sk: (sk[0], (self._located.get(sk[0], {}).get(sk[1]) or (-1, 0))[0]))
        got = {}
        for s, k in order:
            data = self._read_located(s, self._located.get(s, {}).get(k))
            if data is not None:
                got[(s, k)] = data
        return got

    def _look_up(self, where: str, params: list) -> None:
        if self._samples is None:
            self._samples = self.out.read_sql("samples")
        for r in scan(f"SELECT shard, key, image_offset, image_bytes FROM {self._samples} "
                      f"WHERE status = 'ok' AND image_offset IS NOT NULL AND {where}", params):
            self._located.setdefault(r["shard"], {})[r["key"]] = (int(r["image_offset"]), int(r["image_bytes"]))

    def _read_located(self, shard: str, loc: tuple[int, int] | None) -> bytes | None:
        if loc is None or shard in self.failed:
            return None
        if self._uris is None:
            self._uris = {m["shard"]: m["uri"] for m in self.out.markers(INGEST_STAGE)}
        uri = self._uris.get(shard)
        if uri is None:
            self.failed[shard] = "no ingest marker: the shard's tar is not known"
            return None
        try:
            return self.read(uri, *loc)
        except OSError as e:
            self.failed[shard] = f"cannot read {uri}: {type(e).__name__}: {e}"
            return None


def _close_all(handles: OrderedDict) -> None:
    while handles:
        handles.popitem(last=False)[1].close()
