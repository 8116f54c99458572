import io

import numpy as np
import pytest
from PIL import Image

from audit.ingest.image_decode import ImageLimits, ImageRejected, banded_rgb, decode_image, decode_rgb, pixel_hash, to_rgb


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


# ---- issue 19: EXIF, MPO, memory, guards for every reader ----

def test_malformed_exif_is_a_rejection_not_an_exception():
    from tests.image_mutations import malformed_exif_jpeg
    data = malformed_exif_jpeg()
    assert len(data) < 1000  # the class of the 829-byte JPEG that crashed every run
    with pytest.raises(ImageRejected) as e:
        decode_image(data)
    assert e.value.error_type == "CorruptExif" and "TypeError" in e.value.message
    with pytest.raises(ImageRejected, match="CorruptExif"):
        decode_rgb(data, min_side=8)


def test_mpo_decodes_as_its_first_picture():
    from tests.image_mutations import mpo_jpeg
    data, first = mpo_jpeg()
    d = decode_image(data, keep_rgb=True)
    assert d.format == "MPO" and (d.width, d.height) == first.size
    diff = np.abs(np.asarray(d.rgb, np.int16) - np.asarray(first, np.int16))
    assert diff.mean() < 2  # the first picture (same pixels, up to JPEG), not the second
    with pytest.raises(ImageRejected, match="UnsupportedFormat"):
        decode_image(data, ImageLimits(formats=("PNG",)))


def test_banded_pixel_hash_equals_the_whole_image_hash():
    import hashlib
    img = Image.new("P", (700, 3000), 0)
    img.putpalette([v for i in range(256) for v in (i, 255 - i, (i * 7) % 256)])
    for y in range(0, 3000, 7):
        img.paste((y // 7) % 256, (0, y, 700, y + 3))
    img.info["transparency"] = 5
    whole = to_rgb(img)
    want = hashlib.sha256(b"700x3000:" + whole.tobytes()).hexdigest()
    assert pixel_hash(img) == want
    assert banded_rgb(img).tobytes() == whole.tobytes()
    assert banded_rgb(img, 7).tobytes() == whole.reduce(7).tobytes()


def test_decode_memory_is_checked_from_the_header():
    data = _png(Image.new("RGBA", (1500, 1500)))  # 9 MB decoded
    assert decode_image(data, ImageLimits(max_decode_mb=16)).width == 1500
    big = _png(Image.new("RGBA", (2100, 2100)))  # 17.6 MB as RGBA
    with pytest.raises(ImageRejected, match="DecodeOverBudget"):
        decode_image(big, ImageLimits(max_decode_mb=16))
    with pytest.raises(ValueError, match="max_decode_mb"):
        ImageLimits(max_decode_mb=0)


def test_a_bomb_header_is_refused_by_every_decoder_before_any_pixel():
    from tests.image_mutations import declared_size_png
    bomb = declared_size_png(20000, 20000)  # 400 M pixels declared in 100 bytes
    for decode in (decode_image, decode_rgb):
        with pytest.raises(ImageRejected) as e:
            decode(bomb)
        assert e.value.error_type == "DecompressionBomb"
    assert Image.MAX_IMAGE_PIXELS == ImageLimits().max_pixels  # Pillow's own guard is on for the process
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(bomb))


def test_later_stages_get_images_reduced_right_after_decode():
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((3000, 2000)).convert("RGB").save(buf, "JPEG")
    img = decode_rgb(buf.getvalue(), min_side=144)
    assert img.mode == "RGB" and 288 <= min(img.size) < 4 * 144  # JPEG draft, then a box reduction
    assert abs(img.width / img.height - 1.5) < 0.02
    small = _png(Image.new("RGB", (300, 200), (1, 2, 3)))
    assert decode_rgb(small, min_side=144).size == (300, 200)  # under 4x the side: untouched


def _decode_peak_mb(data_path) -> float:
    import subprocess
    import sys
    code = ("import resource, sys\nfrom audit.ingest.image_decode import decode_image, decode_rgb\n"
            "data = open(sys.argv[1], 'rb').read()\n"
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "decode_image(data); decode_rgb(data, min_side=288)\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)")
    out = subprocess.run([sys.executable, "-c", code, str(data_path)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def test_a_large_palette_png_decodes_in_bounded_memory(tmp_path):
    from tests.image_mutations import large_palette_png
    path = tmp_path / "p8000.png"
    path.write_bytes(large_palette_png(8000))
    # 64 M palette pixels are 64 MB; converting the whole image to RGBA/RGB at once took ~1 GB
    assert _decode_peak_mb(path) < 200
