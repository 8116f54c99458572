"""The counterfactual fine-tune check on a small random-weight checkpoint: the loss is a fixed
function of the UNet, fine-tuning changes only a copy, training on the query lowers its loss
more than training without it, and leaving everything out is refused."""

import pytest
import torch

from audit.memorization.counterfactual import FineTune, compare, denoising_loss, fine_tune
from audit.memorization.diffusion_models import DiffusionModel
from tests.diffusion_checkpoints import random_checkpoint


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model = DiffusionModel.load(random_checkpoint(tmp_path_factory.mktemp("ckpt")), "cpu", dtype="float32")
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand((12, *model.latent_shape), generator=g) * 2 - 1
    emb = model.encode_prompts([f"caption {i}" for i in range(12)])
    return model, x0, emb


def test_loss_is_deterministic_and_fine_tuning_leaves_the_model_alone(setup):
    model, x0, emb = setup
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    a = denoising_loss(model, model.unet, x0[:1], emb[:1], draws=16, seed=3)
    assert a == denoising_loss(model, model.unet, x0[:1], emb[:1], draws=16, seed=3)
    tuned = fine_tune(model, x0, emb, [0], FineTune(steps=3, batch=4, lr=1e-3))
    assert all(torch.equal(v, model.unet.state_dict()[k]) for k, v in before.items())
    assert denoising_loss(model, tuned, x0[:1], emb[:1], draws=16, seed=3) != a
    with pytest.raises(ValueError, match="nothing to fine-tune"):
        fine_tune(model, x0, emb, range(12), FineTune(steps=1))


def test_leaving_the_query_out_costs_more_than_leaving_others_out(setup):
    """Rows 0-2 are the query itself: fine-tuning without them leaves the query's loss higher
    than fine-tuning without three other rows (each arm sees the same stream and noise)."""
    model, x0, emb = setup
    x0, emb = x0.clone(), emb.clone()
    x0[1:3], emb[1:3] = x0[0], emb[0]
    cfg = FineTune(steps=25, batch=6, lr=3e-3, eval_draws=64)
    r = compare(model, x0, emb, [0, 1, 2], x0[:1], emb[:1], cfg)
    assert set(r) == {"base", "without_topk", "without_random", "without_random_2"}
    assert r["without_random"] < r["base"]  # trained on the query: its loss fell
    assert r["without_topk"] > max(r["without_random"], r["without_random_2"]), r
    zero = compare(model, x0, emb, [0], x0[:1], emb[:1], FineTune(steps=0))
    assert zero["base"] == zero["without_topk"] == zero["without_random"] == zero["without_random_2"]
