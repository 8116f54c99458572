"""Periodic progress for long local runs, read from the completion markers.

Runner-independent: a thread in the driver counts the markers this run has written under
OUT/_manifest/<stage>/ for every stage (ingest, then one embed stage per model) and prints,
every few seconds to stderr, shards done per stage, samples ingested, rate and ETA.
Distributed runners report the same numbers through Beam metrics counters: every name is in
`COUNTERS` (namespace `shardguard`); per-shard stages count with `ShardCounters`, and
`finish_and_log` waits for a pipeline and logs its counters' final values (logger
`shardguard.counters`, on any runner).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path

from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

log = logging.getLogger("shardguard.counters")

NAMESPACE = "shardguard"
SHARD_STAGES = ("ingest", "embed", "memorization", "perturbation_features")
SHARD_COUNTS = ("shards", "samples", "ok", "failed")
# Every Beam metrics counter the jobs report, name -> meaning. Per-shard stages follow one
# pattern: <stage>_shards, <stage>_samples (inputs), <stage>_ok, <stage>_failed.
COUNTERS: dict[str, str] = {
    "ingest_shards": "shards ingested", "ingest_samples": "samples read from the tars",
    "ingest_ok": "samples valid", "ingest_failed": "samples failed (one errors row each)",
    "embed_shards": "(shard, model) pairs embedded", "embed_samples": "ok samples given to a model",
    "embed_ok": "vectors written", "embed_failed": "samples a model could not embed",
    "memorization_shards": "shards scored for memorization", "memorization_samples": "ok samples to score",
    "memorization_ok": "pairs scored", "memorization_failed": "pairs that could not be scored",
    "perturbation_features_shards": "shards through the perturbation features",
    "perturbation_features_samples": "ok samples analysed", "perturbation_features_ok": "feature rows written",
    "perturbation_features_failed": "samples whose features failed",
    "dedup_samples": "samples deduplicated", "dedup_kept": "samples dedup keeps", "dedup_dropped": "samples dedup drops (ingest failures too)",
    "dedup_near_checked": "near pairs given to the geometric check (global and incremental modes)",
    "dedup_near_rejected": "near pairs the geometric check found to be two different pictures",
    "dedup_near_prepared": "images the geometric check decoded and described (not in the feature cache)",
    "dedup_near_cache_hits": "images the geometric check took from the feature cache (OUT/features/copy_check)",
    "memorization_flagged": "pairs flagged by the calibrated threshold",
    "perturbation_tests_samples": "samples in the dataset tests", "perturbation_tests_failed": "tests that failed",
    "perturbation_tests_flagged": "samples flagged",
    "ingest_read_retries": "transient shard read errors retried by ingest (config ingest.retry)",
    "store_read_retries": "transient read errors retried while the per-shard stages read stored samples back "
                          "(shards ingested by an earlier run; config ingest.retry)",
}


def counter(name: str):
    """The Beam counter `shardguard/<name>`; `name` must be one of COUNTERS."""
    if name not in COUNTERS:
        raise KeyError(f"counter {name!r} is not declared in pipelines.progress.COUNTERS")
    return Metrics.counter(NAMESPACE, name)


class ShardCounters:
    """<stage>_{shards,samples,ok,failed} of one per-shard stage (a DoFn attribute)."""

    def __init__(self, stage: str):
        self.stage = stage
        self.counters = {k: counter(f"{stage}_{k}") for k in SHARD_COUNTS}

    def record(self, n_inputs: int, n_ok: int, n_failed: int) -> None:
        for k, n in (("shards", 1), ("samples", n_inputs), ("ok", n_ok), ("failed", n_failed)):
            self.counters[k].inc(n)


def counter_values(result) -> dict[str, int]:
    """Final values of the shardguard counters of a finished pipeline (committed where the
    runner supports it, else attempted); counters never incremented are absent."""
    values: dict[str, int] = {}
    for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        v = c.committed if c.committed is not None else c.attempted
        values[c.key.metric.name] = values.get(c.key.metric.name, 0) + int(v or 0)
    return values


def finish_and_log(result, pipeline: str) -> dict[str, int]:
    """Wait for `result` (a PipelineResult), log its counters in COUNTERS order, return them."""
    try:
        result.wait_until_finish()
    finally:
        client = getattr(result, "client", None)  # Beam's DaskRunner opens a dask Client per pipeline
        if client is not None and hasattr(client, "close"):
            client.close()
    try:
        values = counter_values(result)
    except (NotImplementedError, AttributeError) as e:  # a runner without metrics support
        log.info("%s pipeline: counters not available (%s)", pipeline, e)
        return {}
    names = [n for n in COUNTERS if n in values] + sorted(set(values) - set(COUNTERS))
    log.info("%s pipeline counters: %s", pipeline, ", ".join(f"{n}={values[n]}" for n in names) or "none")
    return values


class StageCounter:
    """Markers of one stage written by one run, read incrementally."""

    def __init__(self, label: str, manifest_dir: Path, run_id: str, total: int):
        self.label, self.dir, self.run_id, self.total = label, Path(manifest_dir), run_id, total
        self._seen: dict[str, dict] = {}

    def poll(self) -> list[dict]:
        if self.dir.exists():
            for p in self.dir.glob("*.json"):
                if p.name not in self._seen:
                    try:
                        rec = json.loads(p.read_text())
                    except (OSError, ValueError):
                        continue  # being replaced right now; the next poll sees it
                    self._seen[p.name] = rec if rec.get("run_id") == self.run_id else {}
        return [r for r in self._seen.values() if r]


class ProgressMonitor:
    def __init__(self, stages: list[StageCounter], every: float = 5.0, stream=sys.stderr):
        self.stages, self.every, self.stream = [s for s in stages if s.total > 0], every, stream
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._t0 = time.monotonic()

    def __enter__(self):
        if self.every > 0 and self.stages:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def line(self) -> str:
        dt = max(time.monotonic() - self._t0, 1e-9)
        parts, done_units, total_units, samples, failed = [], 0, 0, 0, 0
        for i, st in enumerate(self.stages):
            done = st.poll()
            parts.append(f"{st.label} {len(done)}/{st.total}")
            done_units += len(done)
            total_units += st.total
            if i == 0:
                samples = sum(r["n_inputs"] for r in done)
                failed = sum(r["n_failed"] for r in done)
        eta = f"{dt / done_units * (total_units - done_units):.0f}s" if done_units else "?"
        first = self.stages[0].label if self.stages else "ingest"
        what = "ingested" if first == "ingest" else f"done ({first})"
        return (f"[progress] {', '.join(parts)} shards; {samples} samples {what} ({failed} failed), "
                f"{samples / dt:.0f} samples/s, ETA {eta}")

    def _loop(self):
        while not self._stop.wait(self.every):
            print(self.line(), file=self.stream, flush=True)
