"""DiffusionModel on randomly initialized checkpoints (tests/diffusion_checkpoints.py)."""

import shutil

import numpy as np
import pytest
import torch

from audit.memorization.diffusion_models import DiffusionModel, check_folder, image_pixels
from audit.io.user_errors import UsageError
from tests.diffusion_checkpoints import random_checkpoint


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {"eps": random_checkpoint(root / "eps"), "v": random_checkpoint(root / "v", "v_prediction"),
            "vae": random_checkpoint(root / "vae", vae=True)}


def test_pixel_and_latent_geometry(ckpts):
    pix, lat = DiffusionModel.load(ckpts["eps"]), DiffusionModel.load(ckpts["vae"])
    assert pix.vae is None and pix.resolution == 8 and pix.latent_shape == (3, 8, 8)
    assert lat.resolution == 16 and lat.latent_shape == (4, 8, 8)
    x0 = lat.to_model_space(torch.zeros(2, 3, 16, 16))
    assert x0.shape == (2, 4, 8, 8)
    assert lat.to_pixels(x0).shape == (2, 16, 16, 3)


def test_empty_prompt_encoded_like_any_prompt_padded_to_max_length(ckpts):
    m = DiffusionModel.load(ckpts["eps"])
    e = m.encode_prompts(["a red fox", ""])
    assert e.shape == (2, m.tokenizer.model_max_length, 32)
    assert torch.equal(m.empty_embedding()[0], e[1])


@pytest.mark.slow
def test_v_prediction_converts_to_epsilon(ckpts):
    m = DiffusionModel.load(ckpts["v"])
    x = torch.randn(3, 3, 8, 8)
    t = torch.tensor([10, 500, 900])
    emb = m.encode_prompts(["a", "b", "c"])
    v = m.predict(x, t, emb).float()
    a, s = m.alpha_sigma(t)
    assert torch.allclose(m.predict_eps(x, t, emb), s * x + a * v, atol=1e-6)


def test_refuses_pickled_weights_and_names_missing_parts(ckpts, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(ckpts["eps"], bad)
    for f in (bad / "unet").glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    with pytest.raises(ValueError, match="never unpickles"):
        check_folder(bad)
    shutil.rmtree(bad / "scheduler")
    with pytest.raises(UsageError, match="scheduler"):
        check_folder(bad)
    with pytest.raises(UsageError, match="does not exist"):
        DiffusionModel.load(tmp_path / "nope")
    (tmp_path / "model.ckpt").write_bytes(b"\x80\x02}q\x00.")  # a pickle: a file, never opened
    with pytest.raises(UsageError, match="is a file"):
        DiffusionModel.load(tmp_path / "model.ckpt")


def test_model_id_names_the_weights(ckpts, tmp_path):
    other = random_checkpoint(tmp_path / "eps", seed=1)
    assert DiffusionModel.load(ckpts["eps"]).model_id != DiffusionModel.load(other).model_id


def test_image_pixels_resizes_short_side_and_center_crops():
    from PIL import Image
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 4, 20))  # a blue strip on the left, cropped away
    x = image_pixels([im], 10)
    assert x.shape == (1, 3, 10, 10) and x.min() >= -1 and x.max() <= 1
    assert np.allclose(x[0, 0].numpy(), 1.0, atol=0.05)  # all red after the center crop
