import pytest
"""The embed stage inside `shardguard run`: tables, vector files, joins, incremental models."""

import numpy as np
import pyarrow.parquet as pq

from audit.embeddings.embedder_specs import EmbedConfig
from audit.io.store import query
from pipelines.config import JobConfig
from pipelines.job import run_ingest

pytestmark = pytest.mark.beam  # runs Beam jobs (tests/conftest.py)


def test_embeddings_join_samples_and_match_vector_files(broken_dir, tmp_path):
    s = run_ingest(str(broken_dir), str(tmp_path), JobConfig(progress_seconds=0))
    assert s.embeddings["sscd:sscd_distilled:onnx:288"]["n_ok"] == s.n_ok
    assert s.embeddings["minilm:all-MiniLM-L6-v2"]["n_ok"] == s.n_ok
    _, [(unjoined,)] = query(tmp_path, """SELECT count(*) FROM samples s LEFT JOIN embeddings e
        ON s.shard = e.shard AND s.key = e.key WHERE s.status = 'ok' AND e.key IS NULL""")
    assert unjoined == 0
    f = next((tmp_path / "embeddings").glob("sscd-*/run=*/bad_mixed.parquet"))
    t = pq.read_table(f)
    npy = np.load(tmp_path / "vectors" / f.parent.parent.name / "bad_mixed.npy")
    fbin = (tmp_path / "vectors" / f.parent.parent.name / "bad_mixed.fbin").read_bytes()
    n, d = np.frombuffer(fbin[:8], np.int32)
    assert (n, d) == npy.shape == (t.num_rows, 512)
    vec = np.array(t.column("vector").to_pylist(), np.float16)
    assert np.array_equal(vec, npy)
    assert np.allclose(np.frombuffer(fbin[8:], np.float32).reshape(n, d), npy, atol=1e-3)


def test_adding_a_model_later_embeds_only_with_that_model(broken_dir, tmp_path):
    first = run_ingest(str(broken_dir / "bad_mixed.tar"), str(tmp_path), JobConfig(progress_seconds=0))
    cfg = JobConfig(progress_seconds=0, embed=EmbedConfig(clip_random_init=True))
    second = run_ingest(str(broken_dir / "bad_mixed.tar"), str(tmp_path), cfg)
    assert second.n_shards_skipped == 1 and not second.shards
    assert set(second.embeddings) == {"clip:ViT-B-32:random-init:image", "clip:ViT-B-32:random-init:text"}
    assert second.embeddings["clip:ViT-B-32:random-init:image"]["n_ok"] == first.n_ok
    _, rows = query(tmp_path, "SELECT model, count(DISTINCT run_id) FROM embeddings GROUP BY ALL")
    assert len(rows) == 4 and all(r[1] == 1 for r in rows)
    third = run_ingest(str(broken_dir / "bad_mixed.tar"), str(tmp_path), cfg)
    assert not third.embeddings
