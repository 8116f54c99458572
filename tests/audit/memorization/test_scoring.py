"""Scorer, prompt-only detector, trigger tokens and the training filter, on a randomly
initialized checkpoint (the planted-pair separation is tested on the trained demo model in
tests/pipelines/test_memorization.py)."""

import numpy as np
import pytest
import torch

from audit.memorization.diffusion_models import DiffusionModel
from audit.memorization.diffusion_sampling import SamplerConfig
from audit.memorization.scoring import ScoreConfig, score_pairs, score_prompts
from audit.memorization.training_filter import MemorizationFilter, filtered_loss
from audit.memorization.trigger_tokens import _merge_pieces, token_influence
from tests.diffusion_checkpoints import random_checkpoint

CAPTIONS = ["a red fox in the snow", "", "flag of mongolia", "a red fox in the snow"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return DiffusionModel.load(random_checkpoint(tmp_path_factory.mktemp("m") / "ck"))


@pytest.fixture(scope="module")
def pixels():
    return torch.rand(len(CAPTIONS), 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.slow
def test_pair_scores_do_not_depend_on_batching(model, pixels):
    cfg = ScoreConfig(timesteps=(100, 600), seeds=(0, 1), batch_rows=64)
    big = score_pairs(model, pixels, CAPTIONS, cfg)
    small = score_pairs(model, pixels, CAPTIONS, ScoreConfig(timesteps=(100, 600), seeds=(0, 1), batch_rows=2))
    assert big.shape == (4, 2)
    np.testing.assert_allclose(big, small, rtol=1e-4, atol=1e-5)


def test_empty_caption_scores_zero_and_real_captions_do_not(model, pixels):
    px = pixels.clone()
    px[3] = px[0]
    d = score_pairs(model, px, CAPTIONS, ScoreConfig(timesteps=(300,), seeds=(0,)))
    assert d[1, 0] == pytest.approx(0.0, abs=1e-6)   # e_caption == e_empty: no text-conditional part
    assert (d[[0, 2, 3], 0] > 1e-4).all()
    assert d[0, 0] == pytest.approx(d[3, 0], rel=1e-5)  # same pair, same noise, same score


def test_pair_score_is_the_norm_of_the_conditional_difference(model, pixels):
    cfg = ScoreConfig(timesteps=(500,), seeds=(3,))
    d = score_pairs(model, pixels[:1], CAPTIONS[:1], cfg)[0, 0]
    noise = torch.randn(model.latent_shape, generator=torch.Generator().manual_seed(3))[None]
    t = torch.tensor([500])
    x_t = model.scheduler.add_noise(pixels[:1], noise, t)
    e_c = model.predict_eps(x_t, t, model.encode_prompts(CAPTIONS[:1]))
    e_u = model.predict_eps(x_t, t, model.empty_embedding())
    assert d == pytest.approx(float((e_c - e_u).norm()), rel=1e-4)


@pytest.mark.slow
def test_prompt_scores_batching_and_steps(model):
    cfg = ScoreConfig(first_steps=3, seeds=(0, 1), sampler=SamplerConfig(inference_steps=10), batch_rows=4)
    a = score_prompts(model, CAPTIONS, cfg)
    b = score_prompts(model, CAPTIONS, ScoreConfig(first_steps=3, seeds=(0, 1), sampler=SamplerConfig(inference_steps=10),
                                                   batch_rows=64))
    assert a.shape == (4, 3)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert a[1].max() == pytest.approx(0.0, abs=1e-6)


def test_trigger_tokens_cover_the_caption_words_and_sum_to_one(model, pixels):
    cfg = ScoreConfig(timesteps=(300,), seeds=(0,))
    out = token_influence(model, [CAPTIONS[0], CAPTIONS[2]], cfg, pixels[[0, 2]])
    assert [w for w, _ in out[0]] == ["a", "red", "fox", "in", "the", "snow"]
    assert [w for w, _ in out[1]] == ["flag", "of", "mongolia"]
    for words in out:
        assert sum(s for _, s in words) == pytest.approx(1.0)
        assert all(s >= 0 for _, s in words)
    prompt_mode = token_influence(model, [CAPTIONS[0]], ScoreConfig(seeds=(0,), sampler=SamplerConfig(inference_steps=10)))
    assert [w for w, _ in prompt_mode[0]] == ["a", "red", "fox", "in", "the", "snow"]


def test_word_pieces_merge_for_bert_and_clip_bpe():
    assert _merge_pieces(["mon", "##gol", "##ia", "flag"], [0.1, 0.2, 0.3, 0.4]) == [("mongolia", pytest.approx(0.6)), ("flag", 0.4)]
    assert _merge_pieces(["mon", "golia</w>", "flag</w>"], [0.1, 0.2, 0.3]) == [("mongolia", pytest.approx(0.3)), ("flag", 0.3)]


def test_training_filter_drops_pairs_over_the_threshold_of_their_timestep():
    filt = MemorizationFilter(threshold=5.0, timesteps=(100, 700), step_thresholds=(10.0, 2.0))
    eps_u = torch.zeros(4, 3, 4, 4)
    eps_c = torch.zeros(4, 3, 4, 4)
    eps_c[:, 0, 0, 0] = torch.tensor([5.0, 5.0, 1.0, 1.0])          # d = 5, 5, 1, 1
    keep = filt.keep(eps_c, eps_u, torch.tensor([50, 800, 800, 650]))  # cuts 10, 2, 2, 2
    assert keep.tolist() == [True, False, True, True]
    pred = torch.randn(4, 3, 4, 4, requires_grad=True)
    target = torch.zeros(4, 3, 4, 4)
    loss = filtered_loss(pred, target, keep)
    assert loss.item() == pytest.approx(pred[keep].pow(2).mean().item(), rel=1e-6)
    loss.backward()
    assert pred.grad[1].abs().max() == 0 and pred.grad[0].abs().max() > 0
    none = filtered_loss(pred, target, torch.zeros(4, dtype=torch.bool))
    assert none.item() == 0.0 and none.requires_grad
