"""Beam stage: ingest shards into the samples, errors and shards tables.

Input: a PCollection of `(shard_id, uri)`; each element is a whole shard (a batch of
samples), so Beam's per-element overhead is paid once per shard, not per image.
Output: a PCollection with one shards-row dict per completed shard. Side effects, per shard
and atomic: OUT/samples|errors|shards/run=<run_id>/<shard>.parquet, then the completion
marker OUT/_manifest/ingest/<shard>.json (written last).
Failure rows: every bad sample is a samples row with status 'failed' plus an errors row
(see audit.sample_validation); a truncated or unreadable tar adds a shard-level errors row.
Transient read errors are retried (config `ingest.retry`, audit.retrying_reads): each retry is
logged as a warning and counted in `shardguard/ingest_read_retries`.
Metrics: counters `shardguard/ingest_{shards,samples,ok,failed}` on any runner (all names:
pipelines.progress.COUNTERS).
"""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from audit.output_dir import OutputDir
from audit.retrying_reads import log_retry
from audit.sample_validation import IngestLimits
from audit.shard_ingest import ingest_and_record
from pipelines.progress import ShardCounters, counter

log = logging.getLogger("shardguard.ingest")


def open_uri(uri: str):
    return FileSystems.open(uri)


class IngestShardFn(beam.DoFn):
    """Holds only paths and limits; the work is audit.shard_ingest.ingest_and_record."""

    def __init__(self, out_root: str, run_id: str, limits: IngestLimits):
        self.out_root, self.run_id, self.limits = out_root, run_id, limits
        self.counts = ShardCounters("ingest")
        self.read_retries = counter("ingest_read_retries")

    def setup(self):
        self.out = OutputDir(self.out_root)

    def _on_retry(self, *args):
        self.read_retries.inc()
        log_retry(*args)

    def process(self, element):
        shard, uri = element
        s = ingest_and_record(self.out, shard, uri, self.run_id, open_uri, self.limits, self._on_retry)
        if s is None:  # a retried bundle: the work is already done
            return
        self.counts.record(s["n_inputs"], s["n_ok"], s["n_failed"])
        log.info("shard %s %s: %d samples, %d ok, %d failed (%.1fs)",
                 shard, s["status"], s["n_inputs"], s["n_ok"], s["n_failed"], s["seconds"])
        yield s


class IngestShards(beam.PTransform):
    """(shard_id, uri) pairs -> shards rows; spreads shards over workers first."""

    def __init__(self, out_root: str, run_id: str, limits: IngestLimits):
        super().__init__()
        self.fn = IngestShardFn(out_root, run_id, limits)

    def expand(self, pcoll):
        return pcoll | "SpreadShards" >> beam.Reshuffle() | "IngestShard" >> beam.ParDo(self.fn)
