"""GPU paths (nvJPEG decode, bf16 TorchScript SSCD): run on a CUDA machine with `make test-gpu`."""

import numpy as np
import pytest
import torch

from audit.embeddings.image_tensors import decode_batch, resize_square
from audit.embeddings.sscd_models import SscdTorchScript, build_reference_sscd
from tests.demo_images import demo_images

pytestmark = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@needs_cuda
def test_nvjpeg_decode_matches_pillow(demo_sample):
    datas = [b for _, b, _, _ in demo_images(16)] + [b"junk"]
    gpu = decode_batch(datas, torch.device("cuda"))
    cpu = decode_batch(datas, torch.device("cpu"))
    assert gpu.index == cpu.index and len(gpu.errors) == 1
    for g, c in zip(gpu.images, cpu.images):
        assert g.is_cuda and g.shape == c.shape
        assert (g.cpu().float() - c.float()).abs().mean() < 3.0  # IDCT rounding differs slightly
    a = resize_square(gpu.images, 320).cpu()
    b = resize_square(cpu.images, 320)
    assert (a - b).abs().mean() < 3.0


@needs_cuda
def test_sscd_torchscript_bf16_on_gpu_matches_cpu(demo_sample, tmp_path):
    path = build_reference_sscd(tmp_path / "sscd.pt")
    datas = [b for _, b, _, _ in demo_images(16)]
    g = SscdTorchScript(path, "cuda", 288).embed(datas)
    c = SscdTorchScript(path, "cpu", 288).embed(datas)
    cos = np.sum(g.vectors * c.vectors, axis=1)
    assert cos.min() > 0.98, cos.min()


@needs_cuda
def test_memorization_scores_in_bf16_on_gpu_match_cpu_float32(tmp_path):
    from audit.memorization.diffusion_models import DiffusionModel
    from audit.memorization.scoring import ScoreConfig, score_pairs
    from tests.diffusion_checkpoints import random_checkpoint
    ck = random_checkpoint(tmp_path / "ck", vae=True)
    cfg = ScoreConfig(timesteps=(200, 700), seeds=(0, 1), batch_rows=64)
    pixels = torch.rand(24, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    captions = [f"caption number {i}" for i in range(24)]
    gpu = DiffusionModel.load(ck, "cuda")
    assert gpu.dtype == torch.bfloat16
    a = score_pairs(gpu, pixels, captions, cfg)
    b = score_pairs(DiffusionModel.load(ck, "cpu"), pixels, captions, cfg)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98
    assert np.abs(a - b).mean() / np.abs(b).mean() < 0.05
