import pytest

from audit.embeddings.embedder_specs import EmbedConfig, model_slug, plan_embedders
from audit.io.user_errors import UsageError


def test_default_plan_is_sscd_distilled_and_minilm_and_says_why_clip_is_skipped():
    specs, notes = plan_embedders(EmbedConfig())
    ids = [m for s in specs for m in s.model_ids]
    assert ids == ["sscd:sscd_distilled:onnx:288", "minilm:all-MiniLM-L6-v2"]
    assert any("CLIP skipped: no weights" in n for n in notes)


def test_random_clip_is_labelled_and_torchscript_replaces_onnx(tmp_path):
    specs, notes = plan_embedders(EmbedConfig(clip_random_init=True, sscd_torchscript=str(tmp_path / "s.pt")))
    ids = [m for s in specs for m in s.model_ids]
    assert "clip:ViT-B-32:random-init:image" in ids and ids[0].startswith("sscd:torchscript:")
    assert any("RANDOM weights" in n for n in notes)


def test_missing_checkpoint_fails_fast(tmp_path):
    with pytest.raises(UsageError, match="missing.pt"):
        plan_embedders(EmbedConfig(clip_checkpoint=str(tmp_path / "missing.pt")))


def test_model_slug_is_one_path_component():
    assert model_slug("clip:ViT-B/32:ckpt-ab:image") == "clip-ViT-B-32-ckpt-ab-image"
