"""decode_batch: each image decoded under ingest's guards and reduced right after its own decode."""

import io

import torch
from PIL import Image

from audit.embeddings.image_tensors import _nvjpeg_ok, decode_batch
from tests.image_mutations import declared_size_png, malformed_exif_jpeg


def _jpeg(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((w, h)).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()


def test_a_batch_holds_reduced_images_whatever_their_declared_size():
    big, small = _jpeg(4000, 3000), _jpeg(300, 200)
    batch = decode_batch([big, small, declared_size_png(20000, 20000), malformed_exif_jpeg()],
                         torch.device("cpu"), min_side=144)
    assert batch.index == [0, 1]
    assert tuple(batch.images[0].shape) == (3, 375, 500)  # JPEG draft 1/8 of 4000x3000, >= 2 x 144
    assert tuple(batch.images[1].shape) == (3, 200, 300)  # small: untouched
    errors = {i: (et, msg) for i, et, msg in batch.errors}
    assert errors[2][0] == "UndecodableImage" and errors[2][1].startswith("DecompressionBomb")
    assert errors[3][1].startswith("CorruptExif")


def test_only_jpegs_that_need_no_reduction_go_to_nvjpeg():
    assert _nvjpeg_ok(_jpeg(300, 200), 144)
    assert not _nvjpeg_ok(_jpeg(4000, 3000), 144)  # would be decoded at full size on the GPU
    assert not _nvjpeg_ok(declared_size_png(20000, 20000), 144)
    assert not _nvjpeg_ok(b"\xff\xd8\xff" + b"\0" * 100, 144)  # refused by the header guards: Pillow makes the row
