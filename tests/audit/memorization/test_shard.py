"""score_shard: one shard's samples -> score rows + errors rows, never an exception from an image."""

import pytest


@pytest.mark.slow  # builds a random diffusers checkpoint
def test_images_that_no_longer_decode_are_memorization_errors_rows(tmp_path):
    from audit.memorization.diffusion_models import DiffusionModel
    from audit.memorization.scoring import ScoreConfig
    from audit.memorization.shard import MemorizationConfig, score_shard
    from tests.diffusion_checkpoints import random_checkpoint
    from tests.image_mutations import changed_since_ingest
    uri, rows, want = changed_since_ingest(tmp_path)
    model = DiffusionModel.load(random_checkpoint(tmp_path / "ck"))
    cfg = MemorizationConfig(model="x", pairs_per_batch=len(rows), score=ScoreConfig(timesteps=(600,), seeds=(0,)))
    scores, errors = score_shard("s", uri, rows, model, cfg, lambda u: open(u, "rb"), "r1")
    assert sorted(s["key"] for s in scores) == ["good0", "good1", "good2"]
    got = {e["key"]: e for e in errors}
    assert set(got) == set(want)
    for key, error_type in want.items():
        assert got[key]["stage"] == "memorization" and got[key]["error_type"] == "ImageUnreadable"
        assert error_type in got[key]["message"]
