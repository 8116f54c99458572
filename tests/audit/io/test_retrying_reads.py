"""Retried shard reads through Beam's filesystem layer: same bytes and samples as a clean read,
bounded exponential backoff, permanent failures as shard-level rows."""

import random

import numpy as np
import pytest
from apache_beam.io.filesystems import FileSystems

from audit.io.retrying_reads import ReadFailed, ReadRetry, RetryingFile
from audit.ingest.sample_validation import IngestLimits
from audit.embeddings.embedders import Embedded
from audit.embeddings.shard import embed_shard
from audit.ingest.shard_ingest import ingest_shard
from audit.ingest.tar_samples import TarSamples
from tests.audit.embeddings.test_shard import CountingEmbedder
from tests.flaky_filesystem import PREFIX, FaultPlan, FlakyFileSystem

FAST = ReadRetry(attempts=4, initial_seconds=0.001, max_seconds=0.002)


@pytest.fixture
def flaky():
    FlakyFileSystem.reset()
    yield FlakyFileSystem
    FlakyFileSystem.reset()


def _samples(f):
    return [(s.key, s.files, s.offsets, s.problems) for s in TarSamples(f)]


def test_mid_read_faults_give_the_bytes_and_samples_of_a_clean_read(broken_dir, flaky):
    tar = broken_dir / "bad_mixed.tar"
    with open(tar, "rb") as f:
        clean = _samples(f)
    flaky.reset({"bad_mixed.tar": FaultPlan(open_failures=2, fail_every_nth_read=5)})
    retried = []
    with RetryingFile(FileSystems.open, PREFIX + str(tar), FAST, lambda *a: retried.append(a)) as f:
        got = _samples(f)
    assert got == clean
    assert len(retried) == flaky.faults["bad_mixed.tar"] >= 10  # every fault retried once, none given up
    assert {type(a[2]).__name__ for a in retried} == {"ConnectionResetError", "OSError"}


def test_waits_grow_exponentially_within_the_jitter_and_the_cap():
    policy = ReadRetry(attempts=6, initial_seconds=1.0, multiplier=2.0, max_seconds=5.0, jitter=0.5)
    rng = random.Random(0)
    for retry, nominal in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (5, 5.0)]:
        waits = [policy.wait(retry, rng) for _ in range(200)]
        assert all(nominal * 0.5 <= w <= nominal for w in waits)
        assert max(waits) - min(waits) > nominal * 0.3  # jittered, not constant


def test_a_read_failing_for_good_raises_after_the_attempts_and_sleeps_between(broken_dir, flaky):
    tar = broken_dir / "bad_mixed.tar"
    flaky.reset({"bad_mixed.tar": FaultPlan(fail_from_byte=3000)})
    slept = []
    f = RetryingFile(FileSystems.open, PREFIX + str(tar), ReadRetry(attempts=3, initial_seconds=0.1, jitter=0),
                     lambda *a: None, sleep=slept.append)
    assert len(f.read(2000)) == 2000
    with pytest.raises(ReadFailed, match="at byte 2000 failed 3 times"):
        f.read(2000)
    assert slept == [0.1, 0.2] and f.retries == 2


def test_missing_files_are_not_retried(tmp_path):
    slept = []
    with pytest.raises(FileNotFoundError):
        RetryingFile(FileSystems.open, PREFIX + str(tmp_path / "nope.tar"), FAST, sleep=slept.append)
    assert slept == []


def test_ingest_retries_transparently_and_counts(broken_dir, flaky):
    tar = str(broken_dir / "bad_mixed.tar")
    clean = ingest_shard("bad_mixed", tar, "r1")
    flaky.reset({"bad_mixed.tar": FaultPlan(open_failures=1, fail_every_nth_read=4)})
    got = ingest_shard("bad_mixed", PREFIX + tar, "r1", FileSystems.open, IngestLimits(retry=FAST),
                       on_retry=lambda *a: None)
    assert got.samples == clean.samples and got.errors == clean.errors
    assert got.shard["status"] == "complete" and got.read_retries == flaky.faults["bad_mixed.tar"] > 0


def test_a_shard_failing_mid_stream_for_good_is_a_shard_level_row(broken_dir, flaky):
    tar = str(broken_dir / "bad_mixed.tar")
    clean = ingest_shard("bad_mixed", tar, "r1")
    cut = clean.samples[5]["image_offset"]  # inside the sixth sample
    flaky.reset({"bad_mixed.tar": FaultPlan(fail_from_byte=cut)})
    got = ingest_shard("bad_mixed", PREFIX + tar, "r1", FileSystems.open, IngestLimits(retry=FAST),
                       on_retry=lambda *a: None)
    assert got.shard["status"] == "unreadable" and "failed 4 times" in got.shard["error"]
    [shard_row] = [e for e in got.errors if e["key"] is None]
    assert (shard_row["stage"], shard_row["error_type"]) == ("read", "ReadFailed")
    assert got.samples == clean.samples[:5]  # the samples read before it; the cut one is not invented
    assert got.read_retries == 3


def test_embed_reads_retry_and_a_lost_file_fails_only_the_image_models(broken_dir, flaky):
    tar = str(broken_dir / "bad_mixed.tar")
    rows = [r for r in ingest_shard("bad_mixed", tar, "r1").samples if r["status"] == "ok"]
    clean = embed_shard("s", tar, rows, [[CountingEmbedder()]], FileSystems.open, "r1", batch_size=2)["toy:bytes"]
    flaky.reset({"bad_mixed.tar": FaultPlan(open_failures=1, fail_every_nth_read=3)})
    got = embed_shard("s", PREFIX + tar, rows, [[CountingEmbedder()]], FileSystems.open, "r1", batch_size=2,
                      retry=FAST, on_retry=lambda *a: None)["toy:bytes"]
    assert got.keys == clean.keys and (got.matrix() == clean.matrix()).all() and not got.errors
    flaky.reset({"bad_mixed.tar": FaultPlan(open_failures=10**6)})
    lost = embed_shard("s", PREFIX + tar, rows, [[CountingEmbedder(), TextLength()]], FileSystems.open, "r1",
                       batch_size=2, retry=FAST, on_retry=lambda *a: None)
    assert [e["error_type"] for e in lost["toy:bytes"].errors] == ["ReadFailed"] * len(rows)
    assert all(e["stage"] == "embed" for e in lost["toy:bytes"].errors)
    assert lost["toy:text"].keys == [r["key"] for r in sorted(rows, key=lambda r: r["image_offset"])]


class TextLength(CountingEmbedder):
    modality, model_id = "text", "toy:text"

    def embed(self, items):
        self.calls += 1
        return Embedded.from_raw(np.array([[len(t) + 1, 1, 1, 1] for t in items], np.float32), list(range(len(items))))


@pytest.mark.slow  # builds a random diffusers checkpoint
def test_memorization_scores_a_readable_shard_through_faults_and_rows_a_lost_one(broken_dir, flaky, tmp_path):
    from audit.memorization.diffusion_models import DiffusionModel
    from audit.memorization.scoring import ScoreConfig
    from audit.memorization.shard import MemorizationConfig, score_shard
    from audit.io.retrying_reads import retrying_opener
    from tests.diffusion_checkpoints import random_checkpoint
    model = DiffusionModel.load(random_checkpoint(tmp_path / "ck"))
    cfg = MemorizationConfig(model="x", pairs_per_batch=2, score=ScoreConfig(timesteps=(600,), seeds=(0,)))
    tar = str(broken_dir / "bad_mixed.tar")
    rows = [r for r in ingest_shard("bad_mixed", tar, "r1").samples if r["status"] == "ok"][:4]
    opener = retrying_opener(FileSystems.open, FAST, lambda *a: None)
    clean, _ = score_shard("s", tar, rows, model, cfg, FileSystems.open, "r1")
    flaky.reset({"bad_mixed.tar": FaultPlan(open_failures=1, fail_every_nth_read=2)})
    scores, errors = score_shard("s", PREFIX + tar, rows, model, cfg, opener, "r1")
    assert scores == clean and not errors and flaky.faults["bad_mixed.tar"] > 1
    flaky.reset({"bad_mixed.tar": FaultPlan(open_failures=10**6)})
    scores, errors = score_shard("s", PREFIX + tar, rows, model, cfg, opener, "r1")
    assert not scores and [e["error_type"] for e in errors] == ["ReadFailed"] * len(rows)
    assert all(e["stage"] == "memorization" for e in errors)
