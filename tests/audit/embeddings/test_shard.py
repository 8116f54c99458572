import numpy as np

from audit.embeddings.embedders import Embedded, Embedder
from audit.embeddings.shard import embed_shard
from audit.ingest.sample_store import prefetch
from audit.ingest.shard_ingest import ingest_shard


class CountingEmbedder(Embedder):
    """A deterministic toy model (size and mean colour of each decoded image), to test the shard loop alone."""
    modality, dim, model_id = "image", 4, "toy:bytes"

    def __init__(self, fail_on_batch: int | None = None):
        self.calls, self.fail_on_batch = 0, fail_on_batch

    def embed(self, items):
        self.calls += 1
        if self.calls == self.fail_on_batch:
            raise RuntimeError("CUDA error: out of memory")
        raw = np.array([[im.width, im.height, np.asarray(im).mean() + 1, 1] for im in items], np.float32)
        return Embedded.from_raw(raw, list(range(len(items))))


def _rows(broken_dir):
    res = ingest_shard("bad_mixed", str(broken_dir / "bad_mixed.tar"), "r1")
    return [r for r in res.samples if r["status"] == "ok"]


def test_every_ok_sample_gets_a_vector_or_an_error(broken_dir):
    rows = _rows(broken_dir)
    out = embed_shard("bad_mixed", str(broken_dir / "bad_mixed.tar"), rows,
                      [[CountingEmbedder()]], lambda u: open(u, "rb"), "r1", batch_size=2)
    res = out["toy:bytes"]
    assert sorted(res.keys) == sorted(r["key"] for r in rows) and not res.errors
    assert res.matrix().shape == (len(rows), 4)


def test_a_model_failing_on_one_batch_sends_that_batch_to_errors(broken_dir):
    rows = _rows(broken_dir)
    out = embed_shard("bad_mixed", str(broken_dir / "bad_mixed.tar"), rows,
                      [[CountingEmbedder(fail_on_batch=2)]], lambda u: open(u, "rb"), "r1", batch_size=2)
    res = out["toy:bytes"]
    assert len(res.errors) == 2 and len(res.keys) == len(rows) - 2
    assert res.errors[0]["error_type"] == "EmbedFailed" and "out of memory" in res.errors[0]["message"]


def test_two_replicas_split_batches_and_agree_with_one(broken_dir):
    rows = _rows(broken_dir)
    one = embed_shard("s", str(broken_dir / "bad_mixed.tar"), rows, [[CountingEmbedder()]],
                      lambda u: open(u, "rb"), "r1", batch_size=2)["toy:bytes"]
    a, b = CountingEmbedder(), CountingEmbedder()
    two = embed_shard("s", str(broken_dir / "bad_mixed.tar"), rows, [[a], [b]],
                      lambda u: open(u, "rb"), "r1", batch_size=2)["toy:bytes"]
    assert a.calls > 0 and b.calls > 0
    assert one.keys == two.keys and np.allclose(one.matrix(), two.matrix())


def test_prefetch_reraises_producer_errors():
    def gen():
        yield 1
        raise ValueError("boom")
    it = prefetch(gen())
    assert next(it) == 1
    try:
        next(it)
    except ValueError as e:
        assert "boom" in str(e)
    else:
        raise AssertionError("no error")


class BrokenOutputs(CountingEmbedder):
    """Returns NaN for every second item and, on its `short_batch`-th call, one vector too few."""

    def __init__(self, short_batch: int):
        super().__init__()
        self.short_batch = short_batch

    def embed(self, items):
        out = super().embed(items)
        if self.calls == self.short_batch:
            return Embedded(out.vectors[1:], out.index[1:], [], out.norms[1:]) if len(items) > 1 else out
        out.vectors[::2] = np.nan
        return out


def test_malformed_and_non_finite_outputs_become_errors_rows(broken_dir):
    rows = sorted(_rows(broken_dir), key=lambda r: r["image_offset"])
    res = embed_shard("s", str(broken_dir / "bad_mixed.tar"), rows, [[BrokenOutputs(short_batch=2)]],
                      lambda u: open(u, "rb"), "r1", batch_size=2)["toy:bytes"]
    kinds = {e["key"]: e["error_type"] for e in res.errors}
    assert [kinds[r["key"]] for r in rows[2:4]] == ["EmbedFailed"] * 2  # the short batch: whole batch
    assert all(kinds[r["key"]] == "NonFiniteEmbedding" for i, r in enumerate(rows) if i % 2 == 0 and i not in (2, 3))
    assert np.isfinite(res.matrix()).all() and len(res.keys) + len(res.errors) == len(rows)


def test_a_sample_that_fails_to_decode_in_embed_is_its_errors_row_and_the_batch_goes_on(tmp_path):
    """Issue 19: bytes that changed since ingest (malformed EXIF, a bomb header, a cut JPEG) in
    the same batch as good images: one embed errors row each, under ingest's decode guards."""
    from audit.embeddings.sscd_models import SscdOnnx
    from tests.image_mutations import changed_since_ingest
    uri, rows, want = changed_since_ingest(tmp_path)
    res = embed_shard("s", uri, rows, [[SscdOnnx("sscd_distilled")]], lambda u: open(u, "rb"), "r1",
                      batch_size=len(rows))["sscd:sscd_distilled:onnx:288"]
    assert sorted(res.keys) == ["good0", "good1", "good2"] and res.matrix().shape == (3, 512)
    got = {e["key"]: (e["stage"], e["error_type"], e["message"]) for e in res.errors}
    assert set(got) == set(want)
    for key, error_type in want.items():
        assert got[key][:2] == ("embed", "UndecodableImage") and error_type in got[key][2]
