"""Safe image decoding with explicit limits.

Input: encoded image bytes and `ImageLimits`.
Output: `DecodedImage` (format, size after EXIF orientation, pixel hash, and the RGB image
when asked for).
Failure: raises `ImageRejected(error_type, message)` — never a bare Pillow exception — for
empty or non-image bytes, formats outside the allow-list, truncated or corrupt data,
decompression bombs (pixel count checked from the header before any pixel is decoded),
and images that are too small, too large or too elongated.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

# Our own limit replaces Pillow's global one; the header check below runs before decode.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class ImageLimits:
    """Acceptance limits; defaults suit LAION-style web images (documented in job.yaml)."""

    formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP")
    max_bytes: int = 32 << 20
    max_pixels: int = 64_000_000
    min_side: int = 16
    max_side: int = 16_384
    max_aspect_ratio: float = 20.0


@dataclass
class DecodedImage:
    format: str
    width: int
    height: int
    pixel_hash: str
    rgb: Image.Image | None = None


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


def pixel_hash(rgb: Image.Image) -> str:
    h = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    h.update(rgb.tobytes())
    return h.hexdigest()


def decode_image(data: bytes, limits: ImageLimits = ImageLimits(), keep_rgb: bool = False) -> DecodedImage:
    if not data:
        raise ImageRejected("EmptyImage", "the image member is 0 bytes")
    if len(data) > limits.max_bytes:
        raise ImageRejected("ImageTooLarge", f"{len(data)} bytes, over the limit of {limits.max_bytes}")
    fmt = "unknown"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=None)
            fmt = img.format or "unknown"
            if fmt not in limits.formats:
                raise ImageRejected("UnsupportedFormat", f"format {fmt} is not one of {list(limits.formats)}")
            _check_geometry(img.width, img.height, limits, "declared in the header")
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = to_rgb(img)
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        raise ImageRejected("NotAnImage", "the bytes are not a recognizable image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageRejected("DecompressionBomb", str(e)) from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise ImageRejected("CorruptImage", f"{fmt}: {e}") from None
    _check_geometry(rgb.width, rgb.height, limits, "after EXIF orientation")
    return DecodedImage(fmt, rgb.width, rgb.height, pixel_hash(rgb), rgb if keep_rgb else None)
