"""Write the corpus of broken shards in tests/data/broken/ (committed; rerun to regenerate).

    python tests/data/make_broken_shards.py

Each sample is built to fail (or pass) in one known way; EXPECTED maps shard -> key -> the
error_type the ingest must report (None = ok). Images are drawn with Pillow: what is under
test is the damage, not the picture.
"""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).parent / "broken"

EXPECTED: dict[str, dict[str, str | None]] = {
    "bad_mixed": {
        "000": None, "001": "CorruptImage", "002": "EmptyImage", "003": "NotAnImage",
        "004": "MissingCaption", "005": "NonUtf8Caption", "006": "DuplicateKey",
        "007": "DecompressionBomb", "008": "ImageTooSmall", "009": "ImageTooLarge",
        "010": None, "011": "InvalidMeta", "012": "MissingImage", "013": None, "014": None,
        "../evil/015": "UnsafeMemberName", "016": None, "017": "UnsupportedMember",
        "018": "ExtremeAspectRatio",
    },
    "bad_truncated": {"000": None, "001": None, "002": None, "003": "TruncatedShard"},
    "bad_notatar": {},
    "bad_empty": {},
}
# "000" appears a second time at the end of bad_mixed: one more failed row (DuplicateKey).
EXPECTED_LATE_DUPLICATE = ("bad_mixed", "000")
SHARD_STATUS = {"bad_mixed": "complete", "bad_truncated": "truncated",
                "bad_notatar": "unreadable", "bad_empty": "unreadable"}


def picture(w: int, h: int, seed: int, mode: str = "RGB") -> Image.Image:
    rng = random.Random(seed)
    img = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
    d = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        d.ellipse([x0, y0, x0 + rng.randrange(1, w), y0 + rng.randrange(1, h)],
                  fill=tuple(rng.randrange(256) for _ in range(3)))
    return img.convert(mode)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def meta(key: str) -> bytes:
    return json.dumps({"url": f"https://example.com/{key}.jpg", "key": key, "status": "success"}).encode()


def add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tf.addfile(info, io.BytesIO(data))


def good(tf, key: str, seed: int) -> None:
    add(tf, f"{key}.jpg", encode(picture(96, 64, seed), "JPEG", quality=85))
    add(tf, f"{key}.txt", f"a test picture number {seed}".encode())
    add(tf, f"{key}.json", meta(key))


def exif_rotated() -> bytes:
    img = picture(80, 40, 14)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    return encode(img, "JPEG", exif=exif.tobytes())


def bomb() -> bytes:
    """A real PNG bomb: 20000x20000 1-bit pixels (400 Mpx) that zlib squeezes to ~50 KB."""
    return encode(Image.new("1", (20000, 20000)), "PNG", optimize=True)


def write_mixed(path: Path) -> None:
    jpg = encode(picture(96, 64, 1), "JPEG", quality=85)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        good(tf, "000", 0)
        add(tf, "001.jpg", jpg[: len(jpg) // 2]); add(tf, "001.txt", b"half a jpeg")
        add(tf, "002.jpg", b""); add(tf, "002.txt", b"zero bytes")
        add(tf, "003.jpg", b"<html><body>404 Not Found</body></html>"); add(tf, "003.txt", b"html page")
        add(tf, "004.jpg", jpg); add(tf, "004.json", meta("004"))
        add(tf, "005.jpg", jpg); add(tf, "005.txt", "caf\u00e9 cr\u00e8me".encode("latin-1"))
        add(tf, "006.jpg", jpg); add(tf, "006.txt", b"first"); add(tf, "006.jpg", jpg); add(tf, "006.txt", b"again")
        add(tf, "007.png", bomb()); add(tf, "007.txt", b"decompression bomb")
        add(tf, "008.png", encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG")); add(tf, "008.txt", b"one pixel")
        add(tf, "009.png", encode(Image.new("L", (20000, 20), 128), "PNG")); add(tf, "009.txt", b"very wide")
        add(tf, "010.png", encode(picture(64, 64, 10, "RGBA"), "PNG")); add(tf, "010.txt", b"png with alpha")
        add(tf, "011.jpg", jpg); add(tf, "011.txt", b"bad json"); add(tf, "011.json", b"{'url': nope")
        add(tf, "012.json", meta("012"))
        add(tf, "013.webp", encode(picture(64, 48, 13), "WEBP")); add(tf, "013.txt", b"a webp image")
        add(tf, "014.jpg", exif_rotated()); add(tf, "014.txt", b"rotated by exif")
        add(tf, "../evil/015.jpg", jpg); add(tf, "../evil/015.txt", b"path traversal")
        add(tf, "016.jpg", jpg); add(tf, "016.txt", "猫と犬 🐱🐶 שלום <script>alert(1)</script>".encode())
        link = tarfile.TarInfo("017.jpg"); link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link); add(tf, "017.txt", b"a symlink")
        add(tf, "018.png", encode(Image.new("L", (4000, 20), 60), "PNG")); add(tf, "018.txt", b"a thin strip")
        good(tf, "000", 99)  # the key comes back: a late duplicate


def write_truncated(path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for i in range(5):
            good(tf, f"{i:03d}", 100 + i)
    data = buf.getvalue()
    # Cut inside the image data of sample 003 (members 9, 10, 11 are 003.jpg/.txt/.json).
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        m = [m for m in tf.getmembers() if m.name == "003.jpg"][0]
    path.write_bytes(data[: m.offset_data + m.size // 2])


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    write_mixed(OUT / "bad_mixed.tar")
    write_truncated(OUT / "bad_truncated.tar")
    (OUT / "bad_notatar.tar").write_bytes(random.Random(3).randbytes(3000))
    (OUT / "bad_empty.tar").write_bytes(b"")
    for p in sorted(OUT.iterdir()):
        print(f"{p.name}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
