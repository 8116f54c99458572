"""Run a list of per-shard stages over one shard from one read and one decode per sample.

Input: the output folder, the shard id and URI, the stages (audit.ingest.shard_stages.ShardStage,
already set up), an opener (`opener(uri) -> binary file`), IngestLimits, and `ingest`: whether
this call may ingest the shard (False for a later step that only reads what ingest stored).
Two sources, one per shard:
  - not ingested yet: the tar is read once (audit.ingest.shard_ingest); each ok sample's image, decoded
    once by validation, is handed to every stage's `prepare` right away and then dropped;
  - ingested by an earlier run (a model added to the config, a stage that was off): the ok rows
    come from the samples table and the images from the tar by offset, one handle per shard,
    one batch read ahead (audit.ingest.sample_store), decoded once under ingest's guards.
Each stage's `process` gets batches of its own `batch_size` (default: the runner's `batch_size`).
Output: `ShardRun` (the ingest record, if this call ingested, and one marker record per stage
done). Side effects, in this order: ingest's tables and marker; then per stage its tables, its
errors file and its marker (written last; it holds n_inputs, n_ok, n_failed and `seconds`, the
stage's own time: its prepare, process and write). Stages whose marker exists are skipped;
files of an interrupted attempt are removed before a stage redoes the shard.
Failure rows: see audit.ingest.shard_stages (read or decode failures become each image stage's rows;
caption-only stages still run). Counts that do not add up (rows + errors != samples fed) raise
AssertionError: that would be a bug in a stage.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from audit.ingest.image_decode import ImageRejected, decode_oriented
from audit.io.retrying_reads import RetryHook, retrying_opener
from audit.ingest.sample_store import image_batches, ok_rows, prefetch
from audit.ingest.sample_validation import IngestLimits
from audit.ingest.shard_ingest import SHARD_TABLES, STAGE as INGEST_STAGE, ingest_shard, open_binary, record_ingest
from audit.ingest.shard_stages import Sample, ShardStage, StageRows
from schemas import ERRORS

log = logging.getLogger("shardguard.stages")
PROGRESS_SECONDS = 30.0  # a long shard logs how far it got this often (markers tell the driver only at its end)


@dataclass
class ShardRun:
    shard: str
    ingest: dict | None = None  # the ingest marker's record, when this call ingested the shard
    stages: dict[str, dict] = field(default_factory=dict)  # stage id -> its marker's record


class _Feeder:
    """Samples in, batches out to every stage; keeps each stage's rows and seconds."""

    def __init__(self, shard: str, run_id: str, stages: list[ShardStage], batch_size: int):
        self.shard, self.run_id, self.stages, self.batch_size = shard, run_id, stages, batch_size
        self.keep_bytes = any(st.needs_bytes for st in stages)
        self.rows = {st.id: StageRows() for st in stages}
        self.seconds = {st.id: 0.0 for st in stages}
        self.fed = {st.id: 0 for st in stages}
        self.taken, self.next_log = 0, time.monotonic() + PROGRESS_SECONDS
        self.pending: dict[str, list[Sample]] = {st.id: [] for st in stages}  # each stage batches at its own size
        self.sizes = {st.id: st.batch_size or batch_size for st in stages}

    def take(self, row: dict, data: bytes | None, image, failure: tuple[str | None, str] | None) -> None:
        """One ok sample. failure = (error_type or None for each stage's own, message) when its
        image could not be read or decoded."""
        s = Sample(row, data if self.keep_bytes else None)
        self.taken += 1
        if time.monotonic() >= self.next_log:
            self.next_log = time.monotonic() + PROGRESS_SECONDS
            log.info("shard %s: %d ok samples read so far (%s)", self.shard, self.taken,
                     ", ".join(f"{k} {v:.0f}s" for k, v in self.seconds.items()))
        for st in self.stages:
            if not (st.needs_image or st.needs_bytes):
                continue
            if failure is not None:
                s.failed[st.id] = (failure[0] or st.unreadable_type, failure[1])
                continue
            if not st.needs_image:
                continue
            t = time.perf_counter()
            try:
                s.views[st.id] = st.prepare(image, row)
            except Exception as e:  # one sample's pixels never end the shard: that stage's row
                s.failed[st.id] = (st.unreadable_type, f"{type(e).__name__}: {str(e)[:300]}")
            self.seconds[st.id] += time.perf_counter() - t
        for st in self.stages:
            self.pending[st.id].append(s)
            if len(self.pending[st.id]) >= self.sizes[st.id]:
                self._process(st)

    def flush(self) -> None:
        for st in self.stages:
            self._process(st)

    def _process(self, st: ShardStage) -> None:
        batch, self.pending[st.id] = self.pending[st.id], []
        if not batch:
            return
        t = time.perf_counter()
        ok = [s for s in batch if st.id not in s.failed]
        out = st.process(self.shard, self.run_id, ok) if ok else StageRows()
        out.errors.extend(st.error_row(self.run_id, self.shard, s.key, *s.failed[st.id])
                          for s in batch if st.id in s.failed)
        self.rows[st.id].extend(out)
        self.fed[st.id] += len(batch)
        self.seconds[st.id] += time.perf_counter() - t


def _from_store(rows: list[dict], uri: str, feeder: _Feeder, opener: Callable, limits: IngestLimits,
                on_retry: RetryHook | None) -> None:
    rows = sorted(rows, key=lambda r: r["image_offset"])
    need_image = any(st.needs_image for st in feeder.stages)
    need_pixels = need_image or feeder.keep_bytes
    reads = image_batches(uri, rows, retrying_opener(opener, limits.retry, on_retry), feeder.batch_size, need_pixels)
    for chunk, datas, read_error in prefetch(reads):
        for i, r in enumerate(chunk):
            if need_pixels and datas is None:
                feeder.take(r, None, None, ("ReadFailed", read_error))
                continue
            data, image, failure = datas[i] if datas else None, None, None
            if need_image:
                try:
                    image = decode_oriented(data, limits.image)
                except ImageRejected as e:  # decoded at ingest; the bytes may have changed since
                    failure = (None, f"{e.error_type}: {e.message}")
            feeder.take(r, data, image, failure)
    feeder.flush()


def stage_rows(stages: list[ShardStage], shard: str, uri: str, rows: list[dict], run_id: str,
               opener: Callable = open_binary, limits: IngestLimits = IngestLimits(), batch_size: int = 64,
               on_retry: RetryHook | None = None) -> dict[str, StageRows]:
    """Plain use (notebooks, tests, benchmarks): set-up `stages` over given ok samples rows (key,
    image_offset, image_bytes, caption) of the tar at `uri`, read by offset; nothing is written.
    Returns stage id -> its rows and errors rows."""
    feeder = _Feeder(shard, run_id, stages, batch_size)
    _from_store(rows, uri, feeder, opener, limits, on_retry)
    return feeder.rows


def _ingesting(shard: str, uri: str, run_id: str, feeder: _Feeder, opener: Callable, limits: IngestLimits,
               on_retry: RetryHook | None):
    need_image = any(st.needs_image for st in feeder.stages)

    def on_sample(raw, row, image):
        ext = row.get("image_ext")
        feeder.take(row, raw.files.get(ext) if feeder.keep_bytes else None, image, None)
    t = time.perf_counter()
    result = ingest_shard(shard, uri, run_id, opener, limits, on_sample=on_sample if feeder.stages else None,
                          on_retry=on_retry, keep_images=need_image)
    feeder.flush()
    # the stages worked inside the read: ingest's own seconds are the rest
    result.shard["seconds"] = max(0.0, time.perf_counter() - t - sum(feeder.seconds.values()))
    return result


def run_shard(out, shard: str, uri: str, run_id: str, stages: list[ShardStage], opener: Callable,
              limits: IngestLimits = IngestLimits(), ingest: bool = True, batch_size: int = 64,
              on_retry: RetryHook | None = None) -> ShardRun:
    todo = [st for st in stages if not out.is_complete(st.id, shard)]
    do_ingest = ingest and not out.is_complete(INGEST_STAGE, shard)
    run = ShardRun(shard)
    if not do_ingest and not todo:
        return run  # a retried bundle, or nothing configured is missing
    if not do_ingest and not out.is_complete(INGEST_STAGE, shard):
        raise RuntimeError(f"shard {shard}: not ingested, and this step does not ingest")
    if do_ingest:
        out.remove_orphans(shard, [t.name for t in SHARD_TABLES])
    for st in todo:
        out.remove_orphans(shard, list(st.outputs))
        out.remove_orphans(shard, ["errors"], part=st.error_part)
    feeder = _Feeder(shard, run_id, todo, batch_size)
    if do_ingest:
        result = _ingesting(shard, uri, run_id, feeder, opener, limits, on_retry)
        run.ingest = record_ingest(out, run_id, shard, result)
    else:
        _from_store(ok_rows(out, shard), uri, feeder, opener, limits, on_retry)
    for st in todo:
        got = feeder.rows[st.id]
        if len(got.rows) + len(got.errors) != feeder.fed[st.id]:
            raise AssertionError(f"{st.id} on {shard}: {len(got.rows)} rows + {len(got.errors)} errors "
                                 f"!= {feeder.fed[st.id]} samples")
        t = time.perf_counter()
        extra = st.write(out, run_id, shard, got.rows)
        out.write_shard_table(ERRORS, run_id, shard, ERRORS.from_rows(got.errors), part=st.error_part)
        seconds = feeder.seconds[st.id] + time.perf_counter() - t
        record = {"run_id": run_id, "shard": shard, **extra, "n_inputs": feeder.fed[st.id],
                  "n_ok": len(got.rows), "n_failed": len(got.errors), "seconds": round(seconds, 4)}
        out.mark_complete(st.id, shard, record)
        run.stages[st.id] = record
    return run
