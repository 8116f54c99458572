"""The samples an ingest stored, read back: ok rows from the samples table and image bytes from
the shard's tar by (image_offset, image_bytes), with one open handle per shard.

Every later step that needs a stored image reads it here: the per-shard stages of shards
ingested by an earlier run (audit.shard_runner), the copy check (audit.stored_images), the
finding pages and the clean job.
Input: an OutputDir after ingest, the shard's URI and an opener (`opener(uri) -> binary file`;
callers pass one that retries transient errors, audit.retrying_reads).
Output: `ok_rows(out, shard)` -> the shard's ok samples rows; `image_batches(...)` -> batches of
(rows, image bytes, None) in offset order, read one batch ahead on a thread by `prefetch`.
Failure: once a read fails for good (an OSError through the opener) that batch and every later
one come back as (rows, None, why), without reading again, so each stage makes its own
'ReadFailed' rows and caption-only work still goes on.
"""

from __future__ import annotations

import io
import queue
import threading
from typing import Callable, Iterator

import pyarrow.parquet as pq

OK_COLUMNS = ["key", "image_offset", "image_bytes", "caption", "status"]


def ok_rows(out, shard: str) -> list[dict]:
    """The shard's ok samples rows (key, image_offset, image_bytes, caption), [] before ingest."""
    files = out.shard_files("samples", shard)
    if not files:
        return []
    t = pq.read_table(files[-1], columns=OK_COLUMNS)
    return [r for r in t.to_pylist() if r["status"] == "ok"]


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
