"""Safe image decoding with explicit limits: the one way any stage turns image bytes into pixels.

Input: encoded image bytes and `ImageLimits`.
Output: `decode_image` (ingest): `DecodedImage` (format, size after EXIF orientation, pixel
hash, and the RGB image when asked for). `decode_rgb` (every later stage: embed, features,
memorization, replication, report pages, clean): the RGB image, optionally reduced right after
decoding (JPEG draft mode, then an integer box reduction) so that only its short side's
`min_side` pixels are kept; a batch then holds small images whatever sizes the headers declare.
Failure: raises `ImageRejected(error_type, message)` — never a bare Pillow exception, nor any
other exception from the bytes: every error Pillow or its EXIF code raises is mapped — for
empty or non-image bytes, formats outside the allow-list, truncated or corrupt data
(CorruptImage), EXIF that cannot be applied (CorruptExif), decompression bombs (pixel count
checked from the header before any pixel is decoded), images whose decoding would take more
than `max_decode_mb` (DecodeOverBudget, also from the header), and images that are too small,
too large or too elongated. MPO (multi-picture JPEG from phones) decodes as its first picture
when JPEG is allowed.
Memory: one image's decode takes at most `max_decode_mb` (pixels x bytes per pixel of the
decoded mode, twice when EXIF asks for a rotation); the RGB conversion and the pixel hash work
in bands of rows, so they add no full-size copy.
Pillow's process-wide bomb guard (`Image.MAX_IMAGE_PIXELS`) stays on at the default pixel
limit, so any `Image.open` in the process refuses more than twice that.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

BAND_PIXELS = 1 << 20  # pixels converted to RGB at a time (RGB conversion, pixel hash): about 4 MB


@dataclass(frozen=True)
class ImageLimits:
    """Acceptance limits; defaults suit LAION-style web images (documented in job.yaml)."""

    formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP")
    max_bytes: int = 32 << 20
    max_pixels: int = 64_000_000
    min_side: int = 16
    max_side: int = 16_384
    max_aspect_ratio: float = 20.0
    max_decode_mb: int = 512  # memory one image's decode may take, from its header (DecodeOverBudget)

    def __post_init__(self):
        if isinstance(self.max_decode_mb, bool) or not 16 <= self.max_decode_mb <= 65536:
            raise ValueError(f"ingest.image.max_decode_mb must be between 16 and 65536 (MB), "
                             f"not {self.max_decode_mb!r}")


# Pillow's own guard on for every Image.open in the process (warning over this, error over twice it).
Image.MAX_IMAGE_PIXELS = ImageLimits.max_pixels


@dataclass
class DecodedImage:
    format: str
    width: int
    height: int
    pixel_hash: str
    rgb: Image.Image | None = None
    image: Image.Image | None = None  # keep_image: the decoded image itself, upright, in its own mode


class ImageRejected(Exception):
    def __init__(self, error_type: str, message: str):
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


def _check_geometry(w: int, h: int, lim: ImageLimits, when: str) -> None:
    if w * h > lim.max_pixels:
        raise ImageRejected("DecompressionBomb",
                            f"{w}x{h} = {w * h} pixels {when}, over the limit of {lim.max_pixels}")
    if max(w, h) > lim.max_side:
        raise ImageRejected("ImageTooLarge", f"{w}x{h}: a side is over {lim.max_side} pixels")
    if min(w, h) < lim.min_side:
        raise ImageRejected("ImageTooSmall", f"{w}x{h}: a side is under {lim.min_side} pixels")
    if max(w, h) / min(w, h) > lim.max_aspect_ratio:
        raise ImageRejected("ExtremeAspectRatio",
                            f"{w}x{h}: aspect ratio {max(w, h) / min(w, h):.1f} is over {lim.max_aspect_ratio}")


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB view of any mode; transparent areas are composited on white, not left black."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return img.convert("RGB")


def _rgb_bands(img: Image.Image, factor: int = 1):
    """(output row, band): to_rgb(img) box-reduced by `factor`, in bands of rows top to bottom
    (band heights are multiples of factor, so the pieces are exactly the whole image's reduction)."""
    rows = max(factor, BAND_PIXELS // max(1, img.width) // factor * factor)
    for top in range(0, img.height, rows):
        band = to_rgb(img if rows >= img.height else img.crop((0, top, img.width, min(img.height, top + rows))))
        yield top // factor, band.reduce(factor) if factor > 1 else band


def pixel_hash(img: Image.Image) -> str:
    """sha256 of 'WxH:' and the RGB bytes of `img` (any mode: converted band by band)."""
    h = hashlib.sha256(f"{img.width}x{img.height}:".encode())
    for _, band in _rgb_bands(img):
        h.update(band.tobytes())
    return h.hexdigest()


def banded_rgb(img: Image.Image, factor: int = 1) -> Image.Image:
    """to_rgb(img), box-reduced by `factor`, converted band by band: no full-size RGBA or RGB
    copy of a large palette or alpha image (to_rgb of a whole 8000x8000 P image takes ~1 GB)."""
    if img.mode == "RGB" and factor == 1:
        return img
    bands = _rgb_bands(img, factor)
    top, first = next(bands)
    if first.height * factor >= img.height:
        return first
    out = Image.new("RGB", (-(-img.width // factor), -(-img.height // factor)))
    out.paste(first, (0, top))
    for top, band in bands:
        out.paste(band, (0, top))
    return out


def _bytes_per_pixel(mode: str) -> int:
    """Pillow's in-memory pixel size: 1 byte for 1/L/P, 2 for 16-bit gray, 4 for the rest (RGB is RGBX)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(0x0112, 1)
    except Exception:  # unreadable EXIF: exif_transpose below reports it
        return 1
    return value if isinstance(value, int) else 1


def open_image(data: bytes, limits: ImageLimits = ImageLimits(), min_side: int | None = None) -> Image.Image:
    """The opened (not yet decoded) image after every check that needs only its header: size,
    format, pixel count, geometry, decode memory. With min_side, a JPEG is set to decode at the
    smallest draft scale keeping its short side >= min_side (and its geometry checked as declared)."""
    if not data:
        raise ImageRejected("EmptyImage", "the image member is 0 bytes")
    if len(data) > limits.max_bytes:
        raise ImageRejected("ImageTooLarge", f"{len(data)} bytes, over the limit of {limits.max_bytes}")
    img = Image.open(io.BytesIO(data), formats=None)
    fmt = img.format or "unknown"
    if fmt not in limits.formats and not (fmt == "MPO" and "JPEG" in limits.formats):
        raise ImageRejected("UnsupportedFormat", f"format {fmt} is not one of {list(limits.formats)}")
    _check_geometry(img.width, img.height, limits, "declared in the header")
    if min_side and fmt in ("JPEG", "MPO") and min(img.size) >= 4 * min_side:
        img.draft(None, (2 * min_side, 2 * min_side))
    need = img.width * img.height * _bytes_per_pixel(img.mode) * (2 if _orientation(img) != 1 else 1)
    if need > limits.max_decode_mb << 20:
        raise ImageRejected("DecodeOverBudget", f"{fmt} {img.width}x{img.height} {img.mode} needs about "
                            f"{need >> 20} MB to decode, over ingest.image.max_decode_mb = {limits.max_decode_mb}")
    return img


def _oriented(img: Image.Image) -> Image.Image:
    """`img` turned upright per its EXIF orientation, in place (no copy when already upright)."""
    try:
        ImageOps.exif_transpose(img, in_place=True)
        return img
    except Exception as e:  # Pillow's EXIF code raises TypeError, struct.error, ... on hostile IFDs
        raise ImageRejected("CorruptExif", f"{img.format}: EXIF orientation cannot be applied: "
                            f"{type(e).__name__}: {e}") from None


def _guarded(decode):
    """Run decode(); every exception the bytes can cause becomes an ImageRejected."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # our own header checks decide; Pillow's warnings are noise here
            return decode()
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        raise ImageRejected("NotAnImage", "the bytes are not a recognizable image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageRejected("DecompressionBomb", str(e)) from None
    except MemoryError:
        raise ImageRejected("DecodeOverBudget", "out of memory while decoding") from None
    except Exception as e:  # OSError, SyntaxError, ValueError, EOFError, struct.error, TypeError, ...
        raise ImageRejected("CorruptImage", f"{type(e).__name__}: {str(e)[:300]}") from None


def decode_image(data: bytes, limits: ImageLimits = ImageLimits(), keep_rgb: bool = False,
                 keep_image: bool = False) -> DecodedImage:
    """Decode under the guards, apply EXIF orientation, hash the pixels. keep_image: the decoded
    image comes back too (`DecodedImage.image`), so later stages need no second decode."""
    def decode():
        img = open_image(data, limits)
        fmt = img.format
        img.load()
        img = _oriented(img)
        _check_geometry(img.width, img.height, limits, "after EXIF orientation")
        return DecodedImage(fmt, img.width, img.height, pixel_hash(img), banded_rgb(img) if keep_rgb else None,
                            img if keep_image else None)

    return _guarded(decode)


def decode_oriented(data: bytes, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """The decoded image in its own mode (no RGB copy yet), EXIF orientation applied, under the
    same guards as ingest: for callers that convert only a part of it (to_rgb(img.crop(box)))."""
    def decode():
        img = open_image(data, limits)
        img.load()
        return _oriented(img)

    return _guarded(decode)


def decode_rgb(data: bytes, limits: ImageLimits = ImageLimits(), min_side: int | None = None) -> Image.Image:
    """RGB pixels of `data` under the same guards as ingest, EXIF orientation applied. With
    min_side, reduced right after decoding (JPEG draft, then an integer box reduction) to the
    smallest size whose short side is still >= 2 * min_side (images already under that: untouched),
    so a caller resizing to min_side later loses nothing it could see."""
    def decode():
        img = open_image(data, limits, min_side)
        img.load()
        return reduced_rgb(_oriented(img), min_side)

    return _guarded(decode)


def reduced_rgb(img: Image.Image, min_side: int | None = None) -> Image.Image:
    """RGB of an already decoded image, with min_side integer box-reduced to the smallest size
    whose short side is still >= 2 * min_side (decode_rgb's reduction, for an image decoded once
    and shared by several stages)."""
    factor = min(img.size) // (2 * min_side) if min_side else 1
    return banded_rgb(img, max(1, factor))


def pil_rgb(data: bytes, min_side: int | None = None, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """RGB image of `data` under ingest's guards (ImageRejected when refused), reduced with min_side."""
    return decode_rgb(data, limits, min_side)
