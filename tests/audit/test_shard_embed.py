import numpy as np

from audit.embedders import Embedded, Embedder
from audit.shard_embed import embed_shard, prefetch
from audit.shard_ingest import ingest_shard


class CountingEmbedder(Embedder):
    """A deterministic toy model (mean colour of the bytes), to test the shard loop alone."""
    modality, dim, model_id = "image", 4, "toy:bytes"

    def __init__(self, fail_on_batch: int | None = None):
        self.calls, self.fail_on_batch = 0, fail_on_batch

    def embed(self, items):
        self.calls += 1
        if self.calls == self.fail_on_batch:
            raise RuntimeError("CUDA error: out of memory")
        raw = np.array([[len(b), sum(b[:64]) + 1, 1, 1] for b in items], np.float32)
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
