"""open_clip embedders. No CLIP weights can be had offline: these tests build ViT-B-32 with
RANDOM weights (pretrained=None) and check the real code path, not embedding quality."""

import numpy as np
import pytest
import torch

from audit.embeddings.clip_models import OpenClip
from tests.demo_images import demo_images


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return OpenClip("ViT-B-32", random_init=True)


@pytest.mark.slow
def test_image_and_text_embeddings(clip, demo_sample):
    imgs = [b for _, b, _, _ in demo_images(3)]
    out = clip.image.embed(imgs + [b"\x89PNG broken"])
    assert out.vectors.shape == (3, 512) and out.errors[0][:2] == (3, "UndecodableImage")
    assert clip.image.model_id == "clip:ViT-B-32:random-init:image"
    t = clip.text.embed(["a photo of a cat", "猫"])
    assert t.vectors.shape == (2, 512)
    assert np.allclose(np.linalg.norm(t.vectors, axis=1), 1, atol=1e-4)


@pytest.mark.slow
def test_checkpoint_file_loads_the_same_weights(clip, tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in clip.model.state_dict().items()}, str(path))
    loaded = OpenClip("ViT-B-32", checkpoint=str(path))
    assert loaded.image.model_id.startswith("clip:ViT-B-32:ckpt-")
    a, b = clip.text.embed(["a dog on a beach"]), loaded.text.embed(["a dog on a beach"])
    assert np.allclose(a.vectors, b.vectors, atol=1e-5)


def test_no_weights_is_an_error_not_random():
    with pytest.raises(ValueError, match="needs weights"):
        OpenClip("ViT-B-32")


@pytest.mark.slow
def test_a_pickled_checkpoint_is_refused_without_unpickling(clip, tmp_path):
    """torch.save files (.pt/.ckpt/.bin) are pickles: refused from their first bytes, never loaded."""
    import pickle

    from audit.io.user_errors import UsageError

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "unpickled"), "w"))
    torch.save(clip.model.state_dict(), tmp_path / "clip.pt")
    (tmp_path / "evil.ckpt").write_bytes(pickle.dumps({"state_dict": Evil()}))
    (tmp_path / "renamed.safetensors").write_bytes((tmp_path / "clip.pt").read_bytes())
    for name in ("clip.pt", "evil.ckpt", "renamed.safetensors"):
        with pytest.raises(UsageError, match="not a .safetensors file"):
            OpenClip("ViT-B-32", checkpoint=str(tmp_path / name))
    assert not (tmp_path / "unpickled").exists()
