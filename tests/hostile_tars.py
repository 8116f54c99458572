"""Hostile webdataset tars for the fuzz tests: any member type, raw header-field edits.

Input: member specs `(name, kind, data)`; kind is one of KINDS (regular file, directory,
symlink, hardlink, character/block device, fifo).
Output: tar bytes (`build_tar`), the header offsets of a well-formed tar (`member_headers`),
byte edits of one header field with or without a valid checksum (`set_field`), and the
webdataset samples a reader must report for a well-formed tar (`expected_keys`).
Failure: `build_tar` raises ValueError when the format cannot hold a name (ustar, > 100 chars).
"""

from __future__ import annotations

import io
import tarfile

from PIL import Image

KINDS = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
         "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
         "fifo": tarfile.FIFOTYPE}
# ustar header fields: name -> (offset, length)
FIELDS = {"name": (0, 100), "mode": (100, 8), "uid": (108, 8), "gid": (116, 8), "size": (124, 12),
          "mtime": (136, 12), "chksum": (148, 8), "type": (156, 1), "linkname": (157, 100),
          "magic": (257, 6), "version": (263, 2), "uname": (265, 32), "gname": (297, 32),
          "devmajor": (329, 8), "devminor": (337, 8), "prefix": (345, 155)}


def small_jpeg(seed: int, side: int = 24) -> bytes:
    img = Image.new("RGB", (side, side), (seed * 37 % 256, seed * 91 % 256, seed * 13 % 256))
    img.putpixel((seed % side, 0), (255 - seed % 256, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def build_tar(members, fmt: int = tarfile.GNU_FORMAT, pax: dict | None = None) -> bytes:
    """`members`: (name, kind, data); links point at 'target' (or /etc/passwd for symlinks)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for i, (name, kind, data) in enumerate(members):
            info = tarfile.TarInfo(name)
            info.type, info.mtime, info.mode = KINDS[kind], 0, 0o644
            if pax and i == 0:
                info.pax_headers = dict(pax)
            if kind == "file":
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                info.linkname = "/etc/passwd" if kind == "symlink" else "target"
                tf.addfile(info)
    return buf.getvalue()


def member_headers(data: bytes) -> list[tarfile.TarInfo]:
    """The members of a well-formed tar, read by the standard library (offsets included)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        return tf.getmembers()


def end_of_members(data: bytes) -> int:
    """Byte offset of the end-of-archive blocks of a well-formed tar."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        tf.getmembers()
        return tf.offset


def checksum(header: bytes | bytearray) -> int:
    h = bytearray(header[:512])
    h[148:156] = b" " * 8
    return sum(h)


def set_field(data: bytes, header_at: int, field: str, raw: bytes, fix_checksum: bool = True) -> bytes:
    """Overwrite one field of the header at `header_at` (raw is cut or NUL-padded to fit)."""
    off, length = FIELDS[field]
    b = bytearray(data)
    b[header_at + off: header_at + off + length] = raw[:length].ljust(length, b"\0")
    if fix_checksum and field != "chksum":
        b[header_at + 148: header_at + 156] = b"%06o\0 " % checksum(b[header_at: header_at + 512])
    return bytes(b)


def webdataset_key(name: str) -> str:
    """webdataset's key: the member name up to the first '.' of its base name."""
    name = name[2:] if name.startswith("./") else name
    folder, _, base = name.rpartition("/")
    if base.startswith(".") or "." not in base:
        return name
    return (folder + "/" if folder else "") + base.split(".", 1)[0]


def escaped(name: str) -> str:
    """A name as UTF-8 text: bytes that were not UTF-8 written as \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def expected_keys(members: list[tarfile.TarInfo]) -> list[str]:
    """One key per run of consecutive non-directory members that share a key."""
    keys: list[str] = []
    for m in members:
        if m.isdir():
            continue
        k = escaped(webdataset_key(m.name))
        if not keys or keys[-1] != k:
            keys.append(k)
    return keys
