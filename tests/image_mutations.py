"""Mutants of real JPEG, PNG and WebP files, for the decode fuzz test and benchmarks/fuzz_decode.py.

Input: real images (`seed_images`: the first demo-sample JPEGs, and PNG and WebP files made from
them with Pillow, each carrying EXIF, an ICC profile and XMP, so the metadata parsers are reached),
a format and a seeded `random.Random`.
Output: `mutate(data, fmt, rng) -> (bytes, kind)`, kind naming the mutation: bit flips, byte
insert/delete, truncation, a metadata segment's payload changed (JPEG APP1/APP2, PNG
eXIf/iCCP/iTXt, WebP EXIF/ICCP/XMP: random bytes, bit flips, a cut, or a structurally valid but
hostile EXIF IFD), and a segment or chunk length field edited. PNG chunk CRCs are recomputed
after payload edits, so a mutant gets past the CRC check to the parser behind it.
`malformed_exif_jpeg()` is the issue-19 reproducer: a small real JPEG whose EXIF makes Pillow's
`ImageOps.exif_transpose` raise TypeError.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

from PIL import Image

from tests.conftest import DEMO_SAMPLE

FORMATS = ("jpeg", "png", "webp")
EXT = {"jpeg": "jpg", "png": "png", "webp": "webp"}
TIFF_TYPES = range(0, 14)
XMP = (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
       b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
       b'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
       b'<?xpacket end="w"?>')


def exif_ifd(entries: list[tuple[int, int, int, bytes]], little: bool = False) -> bytes:
    """'Exif\\0\\0' + a TIFF header and one IFD of raw (tag, type, count, 4-byte value) entries."""
    e = "<" if little else ">"
    body = (b"II*\x00" if little else b"MM\x00*") + struct.pack(e + "I", 8) + struct.pack(e + "H", len(entries))
    for tag, typ, count, value in entries:
        body += struct.pack(e + "HHI", tag, typ, count) + value[:4].ljust(4, b"\0")
    return b"Exif\x00\x00" + body + b"\x00\x00\x00\x00"


def orientation_exif(value: int = 6) -> bytes:
    return exif_ifd([(0x0112, 3, 1, struct.pack(">H", value))])


def hostile_exif(rng: random.Random) -> bytes:
    """A well-formed IFD with a rotation (so exif_transpose rewrites the EXIF) next to a tag of a
    random type, count and value: the shape that made Pillow raise TypeError / struct.error."""
    tag = rng.choice([0x0112, 0x8769, 0x8825, 0x010F, 0x9286, 0xB205, 0xA005, rng.randrange(65536)])
    entries = [(0x0112, 3, 1, struct.pack(">H", rng.choice([2, 3, 4, 5, 6, 7, 8]))),
               (tag, rng.choice(TIFF_TYPES), rng.choice([0, 1, 2, 3, 255, 1 << 16, 1 << 31]), rng.randbytes(4))]
    rng.shuffle(entries)
    return exif_ifd(entries, little=rng.random() < 0.5)


def _icc() -> bytes:
    """LittleCMS's sRGB profile with its creation date (header bytes 24-35) zeroed: the same bytes every run."""
    from PIL import ImageCms
    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    icc[24:36] = bytes(12)
    return bytes(icc)


def demo_jpegs(n: int, sample: Path = DEMO_SAMPLE) -> list[bytes]:
    """The first n distinct .jpg members of the demo sample that Pillow decodes."""
    from audit.ingest.tar_samples import TarSamples
    out: list[bytes] = []
    for tar in sorted(sample.glob("*.tar")):
        with open(tar, "rb") as f:
            for s in TarSamples(f):
                data = s.files.get("jpg")
                if data and data not in out:
                    try:
                        Image.open(io.BytesIO(data)).load()
                    except Exception:
                        continue
                    out.append(data)
                    if len(out) == n:
                        return out
    return out


def seed_images(n: int = 4, side: int = 96) -> dict[str, list[bytes]]:
    """Per format, n real images (demo JPEGs; PNG and WebP made from them), each with EXIF
    (orientation 6), an ICC profile and XMP. Small (side px) so a mutant decodes in about a ms."""
    icc, out = _icc(), {f: [] for f in FORMATS}
    for i, data in enumerate(demo_jpegs(n)):
        img = Image.open(io.BytesIO(data)).convert("RGB")
        img.thumbnail((side, side))
        exif = orientation_exif(6 if i % 2 else 1)
        for fmt in FORMATS:
            buf = io.BytesIO()
            if fmt == "png":
                im = img.convert("P", palette=Image.Palette.ADAPTIVE) if i % 2 else img.convert("RGBA")
                im.save(buf, "PNG", exif=exif, icc_profile=icc, pnginfo=_png_xmp())
            elif fmt == "webp":
                img.save(buf, "WEBP", quality=80, exif=exif, icc_profile=icc, xmp=XMP)
            else:
                img.save(buf, "JPEG", quality=85, exif=exif, icc_profile=icc, xmp=XMP)
            out[fmt].append(buf.getvalue())
    return out


def _png_xmp():
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    return info


def malformed_exif_jpeg() -> bytes:
    """Issue 19's reproducer, from a real demo image: a ~800-byte JPEG whose EXIF (orientation 6
    next to a type-7 tag 0xB205 of count 1) makes ImageOps.exif_transpose raise TypeError."""
    img = Image.open(io.BytesIO(demo_jpegs(1)[0])).convert("RGB").resize((16, 16))
    exif = exif_ifd([(0xB205, 7, 1, b"\xaf\xb6\xc6\xf5"), (0x0112, 3, 1, b"\x00\x06")])
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    return buf.getvalue()


# ---- container structure: (kind, start of length field, start of payload, payload length) ----

def jpeg_segments(data: bytes) -> list[tuple[int, int, int, int]]:
    """(marker, offset of the 2-byte length, payload offset, payload length) up to SOS."""
    out, i = [], 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xD9 or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        n = struct.unpack(">H", data[i + 2:i + 4])[0]
        out.append((marker, i + 2, i + 4, n - 2))
        if marker == 0xDA:
            break
        i += 2 + n
    return out


def png_chunks(data: bytes) -> list[tuple[bytes, int, int, int]]:
    """(type, offset of the 4-byte length, payload offset, payload length)."""
    out, i = [], 8
    while i + 8 <= len(data):
        n = struct.unpack(">I", data[i:i + 4])[0]
        out.append((data[i + 4:i + 8], i, i + 8, n))
        i += 12 + n
    return out


def webp_chunks(data: bytes) -> list[tuple[bytes, int, int, int]]:
    """(fourcc, offset of the 4-byte little-endian size, payload offset, payload length)."""
    out, i = [], 12
    while i + 8 <= len(data):
        n = struct.unpack("<I", data[i + 4:i + 8])[0]
        out.append((data[i:i + 4], i + 4, i + 8, n))
        i += 8 + n + (n & 1)
    return out


META = {"jpeg": {0xE1, 0xE2}, "png": {b"eXIf", b"iCCP", b"iTXt", b"zTXt", b"tEXt"},
        "webp": {b"EXIF", b"ICCP", b"XMP "}}


def _structure(data: bytes, fmt: str) -> list[tuple]:
    return {"jpeg": jpeg_segments, "png": png_chunks, "webp": webp_chunks}[fmt](data)


def _fix_png_crc(data: bytearray, length_at: int) -> None:
    n = struct.unpack(">I", data[length_at:length_at + 4])[0]
    end = length_at + 8 + n
    if end + 4 <= len(data):
        data[end:end + 4] = struct.pack(">I", zlib.crc32(bytes(data[length_at + 4:end])) & 0xFFFFFFFF)


def _with_length(data: bytes, fmt: str, length_at: int, payload_at: int, old: int, payload: bytes) -> bytes:
    """`data` with one segment's payload replaced and its length field (and PNG CRC, RIFF size) fixed."""
    out = bytearray(data[:payload_at] + payload + data[payload_at + old:])
    if fmt == "jpeg":
        out[length_at:length_at + 2] = struct.pack(">H", min(0xFFFF, len(payload) + 2))
    elif fmt == "png":
        out[length_at:length_at + 4] = struct.pack(">I", len(payload))
        _fix_png_crc(out, length_at)
    else:
        out[length_at:length_at + 4] = struct.pack("<I", len(payload))
        out[4:8] = struct.pack("<I", len(out) - 8)
    return bytes(out)


def _flip(buf: bytes, rng: random.Random, n: int) -> bytes:
    b = bytearray(buf)
    for _ in range(n if b else 0):
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b)


def mutate_metadata(data: bytes, fmt: str, rng: random.Random) -> tuple[bytes, str]:
    segs = [s for s in _structure(data, fmt) if s[0] in META[fmt]]
    if not segs:
        return _flip(data, rng, 4), "bitflip"
    kind, length_at, at, n = rng.choice(segs)
    payload = data[at:at + n]
    how = rng.choice(["random", "flip", "cut", "exif"])
    if how == "random":
        new = rng.randbytes(rng.randrange(0, max(2, len(payload) * 2)))
    elif how == "flip":
        new = _flip(payload, rng, rng.randint(1, 16))
    elif how == "cut":
        new = payload[:rng.randrange(0, max(1, len(payload)))]
    elif fmt == "jpeg" and kind == 0xE1 and payload.startswith(b"Exif"):
        new = hostile_exif(rng)  # a hostile but well-formed IFD where the EXIF lives
    elif (fmt, kind) in (("png", b"eXIf"), ("webp", b"EXIF")):
        new = hostile_exif(rng)[6:]
    else:
        new = _flip(payload, rng, 8)
    return _with_length(data, fmt, length_at, at, n, new), f"meta-{how}"


def mutate_length(data: bytes, fmt: str, rng: random.Random) -> tuple[bytes, str]:
    segs = _structure(data, fmt)
    if not segs:
        return _flip(data, rng, 4), "bitflip"
    _, length_at, _, n = rng.choice(segs)
    width = 2 if fmt == "jpeg" else 4
    new = rng.choice([0, 1, 2, n - 1, n + 1, n * 2, rng.randrange(1 << (8 * width)), (1 << (8 * width)) - 1])
    new = max(0, min(new, (1 << (8 * width)) - 1))
    out = bytearray(data)
    out[length_at:length_at + width] = struct.pack(">H" if fmt == "jpeg" else "<I" if fmt == "webp" else ">I", new)
    if fmt == "png" and rng.random() < 0.5:
        _fix_png_crc(out, length_at)
    return bytes(out), "length"


def mutate(data: bytes, fmt: str, rng: random.Random) -> tuple[bytes, str]:
    """One seeded mutant of `data` (a `fmt` file) and the name of the mutation."""
    r = rng.random()
    if r < 0.25:
        return _flip(data, rng, rng.choice([1, 2, 4, 8, 32])), "bitflip"
    if r < 0.35:
        at = rng.randrange(len(data) + 1)
        return data[:at] + rng.randbytes(rng.randint(1, 16)) + data[at:], "insert"
    if r < 0.45:
        at = rng.randrange(len(data))
        return data[:at] + data[at + rng.randint(1, 16):], "delete"
    if r < 0.55:
        return data[:rng.randrange(len(data))], "truncate"
    if r < 0.85:
        return mutate_metadata(data, fmt, rng)
    return mutate_length(data, fmt, rng)


def mutants(count: int, seed: int = 0, seeds: dict[str, list[bytes]] | None = None):
    """`count` (format, kind, bytes), formats in turn, deterministic for a seed."""
    seeds = seeds or seed_images()
    rng = random.Random(seed)
    for i in range(count):
        fmt = FORMATS[i % len(FORMATS)]
        data, kind = mutate(rng.choice(seeds[fmt]), fmt, rng)
        yield fmt, kind, data


def declared_size_png(width: int, height: int) -> bytes:
    """A real 32x32 PNG whose IHDR (CRC fixed) declares width x height: a decompression bomb's
    header, a few hundred bytes long; a decoder that trusts it allocates width x height pixels."""
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    length_at = png_chunks(bytes(data))[0][1]  # IHDR comes first
    data[length_at + 8:length_at + 16] = struct.pack(">II", width, height)
    _fix_png_crc(data, length_at)
    return bytes(data)


def mpo_jpeg(side: int = 64) -> tuple[bytes, Image.Image]:
    """A two-picture MPO (as phones write) made from two demo images, and its first picture as
    Pillow decodes it from a plain JPEG of the same pixels."""
    a, b = (Image.open(io.BytesIO(d)).convert("RGB").resize((side, side)) for d in demo_jpegs(2))
    buf = io.BytesIO()
    a.save(buf, format="MPO", save_all=True, append_images=[b], quality=90)
    first = io.BytesIO()
    a.save(first, "JPEG", quality=90)
    return buf.getvalue(), Image.open(first).convert("RGB")


def large_palette_png(side: int = 8000, transparent: bool = True) -> bytes:
    """A side x side palette PNG (64 M pixels at 8000: within the default pixel limit), drawn so it
    does not compress to nothing, with a transparent palette entry: the worst case of to_rgb."""
    img = Image.new("P", (side, side), 0)
    img.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256)])
    tile = Image.linear_gradient("L").resize((256, 256)).convert("P")
    for y in range(0, side, 1024):
        for x in range(0, side, 1024):
            img.paste(tile, (x, y))
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1, **({"transparency": 0} if transparent else {}))
    return buf.getvalue()


def changed_since_ingest(folder: Path, n_good: int = 3) -> tuple[str, list[dict], dict[str, str]]:
    """A shard whose samples rows say every sample is ok, while some images are now hostile (the
    bytes changed since ingest, or a stage decodes what ingest did not): (tar path, the ok samples
    rows a later stage gets, key -> the error_type its decoder must report). Good: n_good demo JPEGs."""
    from audit.ingest.tar_samples import TarSamples
    from tests.hostile_tars import build_tar
    good = demo_jpegs(n_good)
    hostile = {"exif": (malformed_exif_jpeg(), "CorruptExif"),
               "bomb": (declared_size_png(20000, 20000), "DecompressionBomb"),
               "cut": (good[0][: len(good[0]) // 2], "CorruptImage")}
    members = []
    for i, data in enumerate(good):
        members += [(f"good{i}.jpg", "file", data), (f"good{i}.txt", "file", f"a drawing {i}".encode())]
    for key, (data, _) in hostile.items():
        members += [(f"{key}.jpg", "file", data), (f"{key}.txt", "file", b"a drawing")]
    path = folder / "changed.tar"
    path.write_bytes(build_tar(members))
    with open(path, "rb") as f:
        rows = [{"key": s.key, "image_offset": s.offsets["jpg"], "image_bytes": len(s.files["jpg"]),
                 "caption": s.files["txt"].decode()} for s in TarSamples(f)]
    return str(path), rows, {k: et for k, (_, et) in hostile.items()}
