"""Faults inside `shardguard run`: flaky shard reads (through a Beam FileSystem test double),
a model failing on one batch, and the run's failure threshold (exit code 4)."""

from dataclasses import dataclass, replace

import apache_beam as beam
import pytest

from audit.dedup.duplicate_clusters import DedupConfig
from audit.embeddings.embedder_specs import EmbedConfig, EmbedderSpec
from audit.runs.failure_threshold import TooManyFailures
from audit.io.output_dir import OutputDir
from audit.perturbations.perturbation_audit import PerturbationConfig
from audit.io.retrying_reads import ReadRetry
from audit.ingest.sample_validation import IngestLimits
from audit.embeddings.sscd_models import SscdOnnx
from audit.io.store import query
from pipelines.cli import main
from pipelines.config import JobConfig
from audit.embeddings.stage import EmbedStage, stage_id as embed_stage
from pipelines.job import run_ingest
from pipelines.shard_stages import ShardStages
from tests.flaky_filesystem import PREFIX, FaultPlan, FlakyFileSystem

pytestmark = pytest.mark.beam  # runs Beam jobs (tests/conftest.py)

FAST = IngestLimits(retry=ReadRetry(attempts=4, initial_seconds=0.001, max_seconds=0.002))
INGEST_ONLY = JobConfig(progress_seconds=0, ingest=FAST, embed=EmbedConfig(enabled=False),
                        dedup=DedupConfig(enabled=False), perturbations=PerturbationConfig(features=False, tests=False))
SSCD_ONLY = EmbedConfig(sscd="sscd_distilled", captions=False, batch_size=4)


@pytest.fixture
def flaky():
    FlakyFileSystem.reset()
    yield FlakyFileSystem
    FlakyFileSystem.reset()


def _tables(out):
    """Every row the per-shard stages wrote, without what differs between two runs by design."""
    sql = {
        "samples": "SELECT * EXCLUDE (run_id) FROM samples ORDER BY ALL",
        "errors": "SELECT * EXCLUDE (run_id) FROM errors ORDER BY ALL",
        "shards": "SELECT * EXCLUDE (run_id, uri, seconds) FROM shards ORDER BY ALL",
        "embeddings": "SELECT shard, key, model, vector FROM embeddings ORDER BY ALL",
        "features": "SELECT * EXCLUDE (run_id) FROM perturbation_samples ORDER BY ALL",
    }
    return {name: query(out, q)[1] for name, q in sql.items()}


def test_flaky_reads_give_the_tables_of_a_clean_run(broken_dir, flaky, tmp_path, caplog):
    caplog.set_level("INFO")
    pattern = f"{broken_dir}/bad_{{mixed,truncated}}.tar"
    cfg = replace(INGEST_ONLY, embed=SSCD_ONLY, perturbations=PerturbationConfig(tests=False))
    run_ingest(pattern, str(tmp_path / "clean"), cfg)
    flaky.reset({"bad_mixed.tar": FaultPlan(open_failures=2, fail_every_nth_read=7),
                 "bad_truncated.tar": FaultPlan(fail_every_nth_read=3)})
    s = run_ingest(PREFIX + pattern, str(tmp_path / "flaky"), cfg)
    assert sorted(x["shard"] for x in s.shards) == ["bad_mixed", "bad_truncated"]
    clean, got = _tables(tmp_path / "clean"), _tables(tmp_path / "flaky")
    assert all(clean[t] for t in ("samples", "errors", "embeddings", "features"))
    assert got == clean
    n_faults = sum(flaky.faults.values())
    retries_logged = [r for r in caplog.records if r.name == "shardguard.io" and "retrying" in r.getMessage()]
    assert n_faults > 10 and len(retries_logged) == n_faults  # every fault retried, none given up
    recorded = {m["shard"]: m["read_retries"] for m in OutputDir(tmp_path / "flaky").markers("ingest")}
    assert recorded["bad_mixed"] >= 2 and recorded["bad_truncated"] > 0
    [counters] = [r.getMessage() for r in caplog.records
                  if r.name == "shardguard.counters" and "ingest/embed pipeline counters" in r.getMessage()][-1:]
    # one read per shard: every retry is ingest's (the stages take their images from that read)
    assert f"ingest_read_retries={sum(recorded.values())}" in counters and "store_read_retries=" not in counters


def test_a_shard_that_never_reads_becomes_errors_rows_and_the_run_goes_on(broken_dir, flaky, tmp_path):
    clean = run_ingest(str(broken_dir / "bad_mixed.tar"), str(tmp_path / "clean"), INGEST_ONLY)
    flaky.reset({"bad_truncated.tar": FaultPlan(open_failures=10**6),
                 "bad_mixed.tar": FaultPlan(fail_every_nth_read=5)})
    s = run_ingest(PREFIX + f"{broken_dir}/bad_{{mixed,truncated}}.tar", str(tmp_path / "out"), INGEST_ONLY)
    by_shard = {x["shard"]: x for x in s.shards}
    assert by_shard["bad_truncated"]["status"] == "unreadable" and by_shard["bad_truncated"]["n_inputs"] == 0
    assert (by_shard["bad_mixed"]["n_inputs"], by_shard["bad_mixed"]["n_failed"]) == (clean.n_inputs, clean.n_failed)
    _, rows = query(tmp_path / "out", "SELECT stage, key, error_type, message FROM errors WHERE shard = 'bad_truncated'")
    [(stage, key, error_type, message)] = rows
    assert (stage, key, error_type) == ("read", None, "ReadFailed") and "failed 4 times" in message
    _, [(status,)] = query(tmp_path / "out", "SELECT status FROM runs")
    assert status == "succeeded"


def test_the_next_run_retries_a_shard_whose_read_failed_and_only_that_one(broken_dir, flaky, tmp_path):
    alone = run_ingest(str(broken_dir / "bad_truncated.tar"), str(tmp_path / "alone"), INGEST_ONLY)
    pattern, out = PREFIX + f"{broken_dir}/bad_{{mixed,truncated}}.tar", tmp_path / "out"
    flaky.reset({"bad_truncated.tar": FaultPlan(open_failures=10**6)})
    first = run_ingest(pattern, str(out), INGEST_ONLY)
    flaky.reset({})  # storage is back
    second = run_ingest(pattern, str(out), INGEST_ONLY)
    assert [x["shard"] for x in second.shards] == ["bad_truncated"]  # bad_mixed stays done
    assert any("retrying 1 shard" in n for n in second.notes)
    [redone] = second.shards
    assert (redone["status"], redone["n_inputs"], redone["n_failed"]) == ("truncated", alone.n_inputs, alone.n_failed)
    _, rows = query(out, "SELECT shard, count(*) FROM shards GROUP BY ALL ORDER BY 1")
    assert rows == [("bad_mixed", 1), ("bad_truncated", 1)]  # the failed attempt's rows are gone
    _, rows = query(out, "SELECT count(*) FROM errors WHERE shard = 'bad_truncated' AND error_type = 'ReadFailed'")
    assert rows == [(0,)]
    _, [(n_samples,)] = query(out, "SELECT count(*) FROM samples WHERE shard = 'bad_truncated'")
    assert n_samples == alone.n_inputs
    third = run_ingest(pattern, str(out), INGEST_ONLY)  # a truncated tar is an answer, not a fault: not retried
    assert third.shards == [] and first.run_id < second.run_id < third.run_id


class FlakySscd(SscdOnnx):
    """The real SSCD ONNX model, raising on its k-th batch (a test double of the model only)."""

    def __init__(self, fail_on_batch: int):
        super().__init__("sscd_distilled", 288)
        self.calls, self.fail_on_batch = 0, fail_on_batch

    def embed(self, items):
        self.calls += 1
        if self.calls == self.fail_on_batch:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return super().embed(items)


@dataclass(frozen=True)
class FlakySscdSpec(EmbedderSpec):
    fail_on_batch: int = 2

    def load(self, device):
        return [FlakySscd(self.fail_on_batch)]


def test_a_model_failing_on_one_batch_sends_that_batch_to_errors(broken_dir, tmp_path):
    out = tmp_path / "out"
    run_ingest(str(broken_dir / "bad_mixed.tar"), str(out), INGEST_ONLY)
    _, ok = query(out, "SELECT key FROM samples WHERE status = 'ok' ORDER BY image_offset")
    model_id = SscdOnnx("sscd_distilled", 288).model_id
    spec = FlakySscdSpec("flaky", (model_id,), fail_on_batch=2)
    cfg = replace(SSCD_ONLY, batch_size=2)
    with beam.Pipeline() as p:
        _ = (p | beam.Create([("bad_mixed", str(broken_dir / "bad_mixed.tar"))])
               | ShardStages(str(out), "embed-run", [EmbedStage(spec, model_id, cfg)], IngestLimits(), ingest=False,
                             batch_size=cfg.batch_size))
    _, errors = query(out, "SELECT stage, key, error_type, message FROM errors WHERE run_id = 'embed-run' ORDER BY key")
    second_batch = sorted(k for (k,) in ok[2:4])
    assert [e[1] for e in errors] == second_batch
    assert all(e[0] == "embed" and e[2] == "EmbedFailed" for e in errors)
    assert all("RuntimeError: CUDA error: an illegal memory access" in e[3] and model_id in e[3] for e in errors)
    _, embedded = query(out, "SELECT key FROM embeddings ORDER BY key")
    assert [k for (k,) in embedded] == sorted(k for (k,) in ok if k not in second_batch)
    [marker] = OutputDir(out).markers(embed_stage(model_id))  # the shard is complete for the model
    assert (marker["n_ok"], marker["n_failed"]) == (len(ok) - 2, 2)


def _config_file(tmp_path, **ingest):
    lines = ["progress_seconds: 0", "embed: {enabled: false}", "perturbations: {features: false, tests: false}",
             "ingest:"] + [f"  {k}: {v}" for k, v in ingest.items()]
    path = tmp_path / "job.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_too_many_failures_stops_with_exit_code_4_and_keeps_the_shards(broken_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", "--input", str(broken_dir), "--out", str(out), "-q",
                 "--config", _config_file(tmp_path, max_failed_fraction=0.25)])
    assert code == 4
    message = capsys.readouterr().err
    _, [(n_in, n_failed)] = query(out, """SELECT count(*), count(*) FILTER (status = 'failed') FROM samples""")
    _, top = query(out, "SELECT error_type FROM errors GROUP BY ALL ORDER BY count(*) DESC, error_type LIMIT 1")
    assert f"{n_failed} of {n_in} samples failed ({n_failed / n_in:.1%})" in message
    assert "ingest.max_failed_fraction = 25.0%" in message and top[0][0] in message
    _, [(status, notes)] = query(out, "SELECT status, notes FROM runs")
    assert status == "failed" and any("max_failed_fraction" in n for n in notes)
    assert len(OutputDir(out).markers("ingest")) == len(list(broken_dir.glob("*.tar")))  # shards stay complete
    assert not list(out.glob("decisions/run=*/*.parquet"))  # no corpus step on a failing input
    assert main(["run", "--input", str(broken_dir), "--out", str(tmp_path / "ok"), "-q",
                 "--config", _config_file(tmp_path, max_failed_fraction=0.99)]) == 0
    assert list((tmp_path / "ok").glob("decisions/run=*/*.parquet"))  # under the threshold: corpus steps ran


def test_the_absolute_failure_count_limit(broken_dir, tmp_path):
    one_shard = str(broken_dir / "bad_mixed.tar")
    with pytest.raises(TooManyFailures, match="over ingest.max_failed_samples = 3") as e:
        run_ingest(one_shard, str(tmp_path / "a"), replace(INGEST_ONLY, ingest=replace(FAST, max_failed_samples=3)))
    _, [(n_failed,)] = query(tmp_path / "a", "SELECT count(*) FILTER (status = 'failed') FROM samples")
    assert e.value.tally.n_failed == n_failed > 3
    s = run_ingest(one_shard, str(tmp_path / "b"), replace(INGEST_ONLY, ingest=replace(FAST, max_failed_samples=n_failed)))
    assert s.n_failed == n_failed
