"""Ingest one shard: read every sample, validate it, count, and reconcile.

Input: the shard id, its URI and an `opener(uri) -> binary file` (Beam's FileSystems.open in
the pipeline, `open` in plain code), plus `IngestLimits`.
Output: `ShardResult` with the samples rows (one per input sample), the errors rows (one per
failed sample, plus one shard-level row when the tar is truncated or unreadable) and the
shards row. `check()` raises if the counts do not reconcile, which would be a bug.
Failure rows: an unopenable URI is a shard-level 'unreadable' row, never an exception.
Transient I/O errors (OSError at open or in the middle of a read) are retried per
`limits.retry` by `audit.io.retrying_reads.RetryingFile`: it reopens and seeks back, so a retried
shard has exactly the rows of a clean read. A read still failing after its retries ends the
shard as 'unreadable' with a shard-level 'ReadFailed' errors row; the samples read before it
are kept (like a truncated tar). `ShardResult.read_retries` counts the retries; the completion
marker records it.
Only the members ingest uses (images, .txt, .json) are read, at most `limits.max_sample_bytes`
per key; other members are skipped unread and counted (`skipped_members`, `skipped_bytes`, also
in the completion marker).
`ingest_and_record` adds the side effects: per-shard tables, then the completion marker.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator

from audit.io.output_dir import OutputDir
from audit.io.retrying_reads import ReadFailed, RetryHook, RetryingFile, log_retry, retrying_opener
from audit.ingest.sample_validation import USED_EXTS, IngestLimits, validate_and_decode
from audit.ingest.tar_samples import RawSample, TarSamples
from schemas import ERRORS, SAMPLES, SHARDS

STAGE = "ingest"
SHARD_TABLES = [SAMPLES, ERRORS, SHARDS]

Opener = Callable[[str], BinaryIO]


def open_binary(uri: str) -> BinaryIO:
    """Default opener for plain (non-Beam) use: a local path, read as bytes."""
    return open(uri, "rb")


@dataclass
class ShardResult:
    shard: dict
    samples: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    read_retries: int = 0
    skipped_members: int = 0  # members with extensions ingest does not use: not read (tar_samples)
    skipped_bytes: int = 0
    retryable: bool = False  # the read failed on I/O (not a bad tar): a later run tries the shard again

    def check(self) -> None:
        s = self.shard
        n_ok = sum(r["status"] == "ok" for r in self.samples)
        failed_keys = sorted(r["key"] for r in self.samples if r["status"] == "failed")
        error_keys = sorted(e["key"] for e in self.errors if e["key"] is not None)
        if not (s["n_inputs"] == len(self.samples) == s["n_ok"] + s["n_failed"] and s["n_ok"] == n_ok
                and failed_keys == error_keys):
            raise AssertionError(f"shard {s['shard']}: counts do not reconcile: {s}")


def read_expected_count(stats_uri: str, opener: Opener) -> int | None:
    """img2dataset's NNNNN_stats.json 'successes', or None when absent or unreadable."""
    try:
        with opener(stats_uri) as f:
            return int(json.loads(f.read())["successes"])
    except Exception:  # a missing or odd stats file only means we have nothing to compare
        return None


def iter_validated(raw_samples: Iterator[RawSample], shard: str, run_id: str, limits: IngestLimits,
                   keep_images: bool = False):
    for raw in raw_samples:
        yield raw, validate_and_decode(raw, shard, run_id, limits, keep_images)


def ingest_shard(shard: str, uri: str, run_id: str, opener: Opener = open_binary,
                 limits: IngestLimits = IngestLimits(), on_sample: Callable | None = None,
                 on_retry: RetryHook | None = None, keep_images: bool = False) -> ShardResult:
    """Read and validate every sample of one shard. `on_sample(raw, row, image)` sees each ok
    sample as it is read (image: the decoded, upright image with keep_images, else None);
    `on_retry(uri, attempt, error, wait)` each retried I/O error (default: a warning in the log)."""
    t0 = time.perf_counter()
    result = ShardResult(shard={})
    status, error, error_type, nbytes = "complete", None, "UnreadableShard", 0

    def count_retry(*args):
        result.read_retries += 1
        (on_retry or log_retry)(*args)
    try:
        with RetryingFile(opener, uri, limits.retry, count_retry) as f:
            reader = TarSamples(f, max_member_bytes=limits.max_member_bytes, extensions=USED_EXTS,
                                max_sample_bytes=limits.max_sample_bytes)
            for raw, (row, err, image) in iter_validated(iter(reader), shard, run_id, limits, keep_images):
                result.samples.append(row)
                result.skipped_members += len(raw.skipped)
                result.skipped_bytes += sum(raw.skipped.values())
                if err is not None:
                    result.errors.append(err)
                elif on_sample is not None:
                    on_sample(raw, row, image)
            status, error, nbytes = reader.status, reader.error, reader.bytes_read
    except ReadFailed as e:
        status, error, error_type, result.retryable = "unreadable", str(e), "ReadFailed", True
    except OSError as e:
        status, error, result.retryable = "unreadable", f"cannot open {uri}: {e}", True
    if status != "complete":
        result.errors.append({"run_id": run_id, "stage": "read", "shard": shard, "key": None,
                              "error_type": "TruncatedShard" if status == "truncated" else error_type,
                              "message": error})
    n_ok = sum(r["status"] == "ok" for r in result.samples)
    stats_uri = uri[: -len(".tar")] + "_stats.json" if uri.endswith(".tar") else None
    result.shard = {
        "run_id": run_id, "shard": shard, "uri": uri, "status": status, "error": error,
        "n_inputs": len(result.samples), "n_ok": n_ok, "n_failed": len(result.samples) - n_ok,
        "n_expected": read_expected_count(stats_uri, retrying_opener(opener, limits.retry, count_retry))
        if stats_uri else None,
        "tar_bytes": nbytes, "seconds": time.perf_counter() - t0,
    }
    result.check()
    return result


def retry_unreadable(out: OutputDir) -> list[str]:
    """Shards whose last read failed on I/O (storage down, object missing, retries exhausted)
    are forgotten: every completion marker of theirs is removed, so this run redoes them in
    every stage and each stage's orphan cleanup replaces their earlier rows. Call it holding
    the run lock. Shards that are not tars at all or are truncated stay done. Returns their ids."""
    shards = [m["shard"] for m in out.markers(STAGE) if m.get("retryable")]
    for shard in shards:
        out.forget_shard(shard)
    return shards


def ingest_and_record(out: OutputDir, shard: str, uri: str, run_id: str, opener: Opener = open_binary,
                      limits: IngestLimits = IngestLimits(), on_retry: RetryHook | None = None) -> dict | None:
    """Ingest one shard and record it in `out`: tables first, completion marker last.

    Returns the shards row plus 'read_retries' (also in the marker), or None when the shard was
    already complete (a retried bundle).
    Leftover files of an interrupted attempt at this shard are removed first.
    """
    if out.is_complete(STAGE, shard):
        return None
    out.remove_orphans(shard, [t.name for t in SHARD_TABLES])
    result = ingest_shard(shard, uri, run_id, opener, limits, on_retry=on_retry)
    return record_ingest(out, run_id, shard, result)


def record_ingest(out: OutputDir, run_id: str, shard: str, result: ShardResult) -> dict:
    """Write one ingested shard's tables, then its completion marker (last); returns the marker's record."""
    out.write_shard_table(SAMPLES, run_id, shard, result.samples)
    out.write_shard_table(ERRORS, run_id, shard, result.errors)
    out.write_shard_table(SHARDS, run_id, shard, [result.shard])
    record = {**result.shard, "read_retries": result.read_retries, "retryable": result.retryable,
              "skipped_members": result.skipped_members, "skipped_bytes": result.skipped_bytes}
    out.mark_complete(STAGE, shard, record)
    return record
