"""audit.ingest.shard_runner: one read and one decode per sample feed every stage; counts add up; the
ingest path and the stored-sample path give the same rows; markers hold seconds."""

import pyarrow.parquet as pq
import pytest

import audit.ingest.image_decode as image_decode
from audit.io.output_dir import OutputDir
from audit.perturbations.feature_stage import FEATURE_STAGE, FeatureStage
from audit.ingest.shard_ingest import STAGE as INGEST_STAGE, ingest_and_record, open_binary
from audit.ingest.shard_runner import run_shard, stage_rows
from audit.ingest.shard_stages import ModelPool, Sample, ShardStage, StageRows


class SizeStage(ShardStage):
    """Records each image's size as its stage saw it; fails the samples whose key is in `bad`."""
    id, outputs, error_stage, error_part, unreadable_type = "sizes", (), "sizes", "sizes", "SizeFailed"

    def __init__(self, bad=()):
        self.bad, self.written = set(bad), {}

    def prepare(self, image, row):
        if row["key"] in self.bad:
            raise ValueError("refused by the test stage")
        return image.size

    def process(self, shard, run_id, batch):
        return StageRows([(s.key, s.views[self.id]) for s in batch])

    def write(self, out, run_id, shard, rows):
        self.written[shard] = rows
        return {}


class CaptionStage(SizeStage):
    id, error_stage, error_part = "captions", "captions", "captions"
    needs_image = False

    def process(self, shard, run_id, batch):
        return StageRows([(s.key, s.row["caption"]) for s in batch])


def counting_opener(opened):
    def opener(uri):
        opened.append(uri)
        return open_binary(uri)
    return opener


def test_one_read_and_one_decode_per_sample_feed_every_stage(broken_dir, tmp_path, monkeypatch):
    decodes = []
    real = image_decode.open_image
    monkeypatch.setattr(image_decode, "open_image", lambda *a, **k: decodes.append(1) or real(*a, **k))
    out, opened = OutputDir(tmp_path), []
    stages = [SizeStage(), CaptionStage(), FeatureStage()]
    for st in stages:
        st.setup(ModelPool())
    uri = str(broken_dir / "bad_mixed.tar")
    run = run_shard(out, "bad_mixed", uri, "r1", stages, counting_opener(opened))
    assert opened.count(uri) == 1  # one read of the tar for ingest and all three stages
    samples = pq.read_table(out.shard_files("samples", "bad_mixed")[0]).to_pylist()
    ok = [r["key"] for r in samples if r["status"] == "ok"]
    errors = pq.read_table(out.shard_files("errors", "bad_mixed")[0]).to_pylist()
    reached_decode = len(ok) + sum(e["stage"] == "decode" for e in errors)
    assert len(decodes) == reached_decode  # each image decoded once (validation), none again for the stages
    assert [k for k, _ in stages[0].written["bad_mixed"]] == ok
    assert {k for k, _ in stages[1].written["bad_mixed"]} == set(ok)
    assert run.ingest["n_ok"] == len(ok)
    for st in stages:
        marker = out.markers(st.id)[0]
        assert (marker["n_inputs"], marker["n_ok"], marker["n_failed"]) == (len(ok), len(ok), 0)
        assert marker["seconds"] >= 0 and run.stages[st.id] == marker
    feats = pq.read_table(out.shard_files("perturbation_samples", "bad_mixed")[0]).to_pylist()
    assert [f["key"] for f in feats] == ok
    # a rerun does nothing and reads nothing
    opened.clear()
    again = run_shard(out, "bad_mixed", uri, "r2", stages, counting_opener(opened))
    assert again.ingest is None and again.stages == {} and opened == []


def test_the_stored_sample_path_gives_the_rows_of_the_ingest_path(demo_sample, tmp_path):
    uri = str(demo_sample / "00000.tar")
    one = OutputDir(tmp_path / "one")
    run_shard(one, "00000", uri, "r1", [FeatureStage()], open_binary)
    two = OutputDir(tmp_path / "two")
    ingest_and_record(two, "00000", uri, "r1")
    assert two.is_complete(INGEST_STAGE, "00000") and not two.is_complete(FEATURE_STAGE, "00000")
    opened = []
    run = run_shard(two, "00000", uri, "r2", [FeatureStage()], counting_opener(opened))
    assert run.ingest is None and opened == [uri]  # the stored images, one handle
    a = pq.read_table(one.shard_files("perturbation_samples", "00000")[0]).drop(["run_id"])
    b = pq.read_table(two.shard_files("perturbation_samples", "00000")[0]).drop(["run_id"])
    assert a.num_rows > 50 and a.equals(b)


def test_a_stage_refusing_a_sample_makes_its_own_errors_row_only(demo_sample, tmp_path):
    uri = str(demo_sample / "00000.tar")
    out = OutputDir(tmp_path)
    ingest_and_record(out, "00000", uri, "r1")
    keys = [r["key"] for r in pq.read_table(out.shard_files("samples", "00000")[0]).to_pylist() if r["status"] == "ok"]
    sizes, feats = SizeStage(bad=keys[:2]), FeatureStage()
    run_shard(out, "00000", uri, "r2", [sizes, feats], open_binary, batch_size=7)
    assert [k for k, _ in sizes.written["00000"]] == keys[2:]
    errors = pq.read_table(out.shard_file("errors", "r2", "00000", "sizes")).to_pylist()
    assert [(e["key"], e["stage"], e["error_type"]) for e in errors] == [(k, "sizes", "SizeFailed") for k in keys[:2]]
    assert "refused by the test stage" in errors[0]["message"]
    assert out.markers(FEATURE_STAGE)[0]["n_ok"] == len(keys)


def test_a_tar_that_cannot_be_read_back_gives_read_failed_rows_and_captions_still_run(demo_sample, tmp_path):
    uri = str(demo_sample / "00000.tar")
    out = OutputDir(tmp_path)
    ingest_and_record(out, "00000", uri, "r1")
    rows = [r for r in pq.read_table(out.shard_files("samples", "00000")[0]).to_pylist() if r["status"] == "ok"]

    def gone(u):
        raise FileNotFoundError(u)
    from audit.io.retrying_reads import ReadRetry
    from audit.ingest.sample_validation import IngestLimits
    limits = IngestLimits(retry=ReadRetry(attempts=1))
    got = stage_rows([SizeStage(), CaptionStage()], "00000", uri, rows, "r2", gone, limits)
    assert got["sizes"].rows == [] and {e["error_type"] for e in got["sizes"].errors} == {"ReadFailed"}
    assert len(got["sizes"].errors) == len(rows) and len(got["captions"].rows) == len(rows)


def test_counts_that_do_not_add_up_are_a_bug(demo_sample, tmp_path):
    class Lossy(SizeStage):
        def process(self, shard, run_id, batch):
            return StageRows([(s.key, 0) for s in batch[1:]])
    out = OutputDir(tmp_path)
    with pytest.raises(AssertionError, match="rows"):
        run_shard(out, "00000", str(demo_sample / "00000.tar"), "r1", [Lossy()], open_binary)
    assert not out.is_complete("sizes", "00000")


def test_sample_key_property():
    assert Sample({"key": "k"}).key == "k"
