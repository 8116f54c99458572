"""Read webdataset samples from one tar, safely, without extracting anything to disk.

Input: a readable binary file object of a tar (seekable; a non-seekable one is buffered).
Output: `RawSample`s in tar order, one per run of consecutive members sharing a key
(webdataset's grouping: key = member name up to the first '.' of its base name), then the
shard verdict on the reader (`status`, `error`).

Failure rows: nothing raises for bad content. Problems are attached to the sample they hit
(`RawSample.problems`) and become its errors row downstream:
  DuplicateKey (same extension twice in a group, or a key that reappears later in the tar),
  MemberTooLarge, UnsafeMemberName (absolute or '..' paths), UnsupportedMember (links,
  devices), NonUtf8MemberName (the key is kept with the bad bytes as \\xNN escapes),
  TruncatedShard (the tar ended inside this sample), SampleTooLarge (the members read for one
  key would hold more than `max_sample_bytes`: the member that would cross it is not read).
Only the extensions the caller names (`extensions`; None = all) are read into memory; members
with other extensions are skipped unread and noted in `RawSample.skipped` (extension -> bytes),
so a key with twenty 60 MB extra members costs nothing.
Hostile headers: reads never ask the file for more than is left in it (a pax or GNU long-name
header declaring a terabyte allocates nothing), a header whose size points backwards ends the
read (no loop), and any error the tar parser raises on a corrupt header ends the read as
'truncated' rather than escaping.
Shard-level verdicts: 'complete', 'truncated' (the samples read so far are kept) or
'unreadable' (not a tar at all: no samples).
I/O failures are not content: `audit.io.retrying_reads.ReadFailed` (a read still failing after its
retries) propagates out of the iteration instead of being taken for a truncated tar; the
sample being read when it happened is not yielded.
"""

from __future__ import annotations

import io
import re
import tarfile
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

from audit.io.retrying_reads import ReadFailed

_KEY_EXT = re.compile(r"^((?:.*/|)[^./][^.]*)\.([^/]*)$")
_END_OF_ARCHIVE = 2 * tarfile.BLOCKSIZE


@dataclass
class RawSample:
    """The members of one sample: extension (lower case) -> bytes, plus where they lie."""

    key: str
    files: dict[str, bytes] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # members not read: extension -> size

    def problem(self, error_type: str, message: str) -> None:
        self.problems.append((error_type, message))


def split_member_name(name: str) -> tuple[str, str]:
    """'dir/000012.jpg' -> ('dir/000012', 'jpg'); a name without extension -> (name, '')."""
    name = name[2:] if name.startswith("./") else name
    m = _KEY_EXT.match(name)
    return (m.group(1), m.group(2).lower()) if m else (name, "")


def utf8_key(key: str) -> str:
    """The key as writable UTF-8: undecodable name bytes become '\\xNN' escapes."""
    try:
        key.encode("utf-8")
        return key
    except UnicodeEncodeError:
        try:
            raw = key.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = key.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "backslashreplace")


class _ClampedReads:
    """A seekable file whose read(n) asks for at most the bytes left: tarfile reads a pax or
    GNU long-name header with read(declared size), which would allocate that size up front."""

    def __init__(self, f: BinaryIO):
        self._f = f
        pos = f.tell()
        self._size = f.seek(0, io.SEEK_END)
        f.seek(pos)

    def read(self, n: int | None = -1) -> bytes:
        left = max(0, self._size - self._f.tell())
        return self._f.read(left if n is None or n < 0 else min(n, left))

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def seekable(self) -> bool:
        return True


def _is_unsafe(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or "\x00" in name


class TarSamples:
    """Iterate the samples of one tar. After iteration, `status`/`error`/`bytes_read` are set."""

    def __init__(self, fileobj: BinaryIO, max_member_bytes: int = 64 << 20,
                 extensions: tuple[str, ...] | None = None, max_sample_bytes: int | None = None):
        if not _seekable(fileobj):
            fileobj = io.BytesIO(fileobj.read())
        self._f = _ClampedReads(fileobj)
        self.max_member_bytes = max_member_bytes
        self.extensions = None if extensions is None else frozenset(e.lower() for e in extensions)
        self.max_sample_bytes = max_sample_bytes
        self.status = "complete"
        self.error: str | None = None
        self.bytes_read = 0

    def __iter__(self) -> Iterator[RawSample]:
        try:
            tf = tarfile.open(fileobj=self._f, mode="r:")
        except ReadFailed:
            raise
        except Exception as e:  # the parser on hostile bytes raises more than TarError
            self.status, self.error = "unreadable", f"not a readable tar: {type(e).__name__}: {e}"
            return
        seen: set[str] = set()
        current: RawSample | None = None
        last_offset = -1
        while True:
            try:
                member = tf.next()
            except ReadFailed:
                raise
            except Exception as e:  # TarError, OverflowError on a huge size field, ...
                self._truncated(current, f"tar ended early: {type(e).__name__}: {e}")
                break
            tf.members.clear()  # keep memory flat on large shards
            if member is None:
                self._check_end(tf, current)
                break
            if member.offset <= last_offset or member.size < 0:
                self._truncated(current, f"corrupt header at byte {member.offset}: size {member.size} "
                                         "points back into the tar")
                break
            last_offset = member.offset
            if member.isdir():
                continue
            key, ext = split_member_name(member.name)
            key = utf8_key(key)
            if current is None or key != current.key:
                if current is not None:
                    yield current
                current = RawSample(key)
                if key in seen:
                    current.problem("DuplicateKey", f"key {key!r} appears again later in the tar")
                seen.add(key)
            try:
                self._add_member(tf, member, current, ext)
            except ReadFailed:
                raise
            except Exception as e:  # TarError/OSError on a cut tar, anything on a corrupt one
                self._truncated(current, f"tar ended inside member {member.name!r}: {e}")
                break
        if current is not None:
            yield current
        try:
            self.bytes_read = self._f.tell()
        except OSError:
            pass

    def _add_member(self, tf: tarfile.TarFile, m: tarfile.TarInfo, s: RawSample, ext: str) -> None:
        if utf8_key(m.name) != m.name:
            s.problem("NonUtf8MemberName", f"member name {utf8_key(m.name)!r} is not valid UTF-8")
            return
        if _is_unsafe(m.name):
            s.problem("UnsafeMemberName", f"member name {m.name!r} is absolute or escapes the folder")
            return
        if not m.isfile():
            s.problem("UnsupportedMember", f"member {m.name!r} is a link or device, not a file")
            return
        if not ext:
            s.problem("MissingExtension", f"member {m.name!r} has no extension")
            return
        if ext in s.files or ext in s.offsets or ext in s.skipped:
            s.problem("DuplicateKey", f"member {m.name!r} appears twice for key {s.key!r}")
            return
        if self.extensions is not None and ext not in self.extensions:
            s.skipped[ext] = m.size  # not used by the job: never read
            return
        if m.size > self.max_member_bytes:
            s.offsets[ext] = m.offset_data
            s.problem("MemberTooLarge",
                      f"member {m.name!r} is {m.size} bytes, over the limit of {self.max_member_bytes}")
            return
        held = sum(len(d) for d in s.files.values())
        if self.max_sample_bytes is not None and held + m.size > self.max_sample_bytes:
            s.offsets[ext] = m.offset_data
            s.problem("SampleTooLarge", f"member {m.name!r} ({m.size} bytes) would bring key {s.key!r} to "
                                        f"{held + m.size} bytes, over the limit of {self.max_sample_bytes}")
            return
        data = tf.extractfile(m).read()
        s.files[ext] = data
        s.offsets[ext] = m.offset_data

    def _truncated(self, current: RawSample | None, message: str) -> None:
        self.status, self.error = "truncated", message
        if current is not None:
            current.problem("TruncatedShard", f"the tar ended inside this sample ({message})")

    def _check_end(self, tf: tarfile.TarFile, current: RawSample | None) -> None:
        """A whole tar ends in two zero blocks; anything else means it was cut short."""
        try:
            self._f.seek(tf.offset)
            tail = self._f.read(_END_OF_ARCHIVE)
        except ReadFailed:
            raise
        except (OSError, ValueError, OverflowError) as e:
            tail, e_msg = b"", str(e)
        else:
            e_msg = ""
        if len(tail) < _END_OF_ARCHIVE or tail.strip(b"\0"):
            self._truncated(current, f"no end-of-archive marker at byte {tf.offset} {e_msg}".strip())


def _seekable(f) -> bool:
    try:
        return bool(f.seekable())
    except ReadFailed:
        raise
    except (AttributeError, OSError, ValueError):
        return False
