import io

import pytest
from PIL import Image

from audit.image_decode import ImageLimits, ImageRejected, decode_image, to_rgb


def _png(img):
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_decodes_and_hashes_pixels_identically_across_lossless_formats():
    img = Image.new("RGB", (40, 30), (10, 200, 30))
    a = decode_image(_png(img))
    buf = io.BytesIO()
    img.save(buf, "WEBP", lossless=True)
    b = decode_image(buf.getvalue())
    assert (a.format, b.format) == ("PNG", "WEBP")
    assert (a.width, a.height) == (40, 30)
    assert a.pixel_hash == b.pixel_hash


def test_transparent_pixels_are_composited_on_white():
    rgba = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    assert to_rgb(rgba).getpixel((5, 5)) == (255, 255, 255)


@pytest.mark.parametrize("data,etype", [
    (b"", "EmptyImage"),
    (b"GIF89a not really", "NotAnImage"),
])
def test_rejects_non_images(data, etype):
    with pytest.raises(ImageRejected) as e:
        decode_image(data)
    assert e.value.error_type == etype


def test_rejects_formats_outside_the_allow_list():
    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, "BMP")
    with pytest.raises(ImageRejected, match="UnsupportedFormat"):
        decode_image(buf.getvalue())


def test_bomb_is_rejected_from_the_header_before_decoding():
    limits = ImageLimits(max_pixels=10_000)
    with pytest.raises(ImageRejected) as e:
        decode_image(_png(Image.new("1", (200, 200))), limits)
    assert e.value.error_type == "DecompressionBomb"


def test_byte_limit():
    with pytest.raises(ImageRejected, match="ImageTooLarge"):
        decode_image(_png(Image.new("RGB", (64, 64))), ImageLimits(max_bytes=10))
