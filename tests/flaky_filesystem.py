"""A Beam FileSystem for tests: `flaky:///abs/path` is the local file, with planned I/O faults.

It is the only test double in the fault tests: everything above it (FileSystems.open, the
retrying reader, tarfile, the pipeline) is the real code. It wraps Beam's LocalFileSystem and
registers itself by subclassing (Beam finds filesystems by scheme among FileSystem subclasses),
so importing this module is enough. Faults are planned per file base name in the class-level
`FlakyFileSystem.plans`, so they work with in-process runners (DirectRunner's default).

A `FaultPlan` fails deterministically:
  open_failures       the first N opens of the file raise ConnectionResetError;
  fail_every_nth_read every n-th read() call on one opened handle reads part of what was asked
                      (the stream moves on), then raises OSError(EIO): a fault mid-read;
  fail_from_byte      every read that reaches this byte reads up to it, then raises: a file
                      that can never be read past that point (permanent).
`FlakyFileSystem.faults` counts the faults raised per base name.
"""

from __future__ import annotations

import errno
import os
from collections import Counter
from dataclasses import dataclass

from apache_beam.io.filesystem import CompressionTypes, FileMetadata, MatchResult
from apache_beam.io.localfilesystem import LocalFileSystem

PREFIX = "flaky://"


@dataclass
class FaultPlan:
    open_failures: int = 0
    fail_every_nth_read: int = 0
    fail_from_byte: int | None = None


class FlakyFile:
    def __init__(self, f, name: str, plan: FaultPlan):
        self._f, self._name, self._plan, self._reads = f, name, plan, 0

    def _fault(self, message: str):
        FlakyFileSystem.faults[self._name] += 1
        return OSError(errno.EIO, f"flaky: {message} ({self._name})")

    def read(self, n: int = -1) -> bytes:
        self._reads += 1
        pos = self._f.tell()
        want = n if n is not None and n >= 0 else 1 << 62
        stop = self._plan.fail_from_byte
        if stop is not None and pos + want > stop and want > 0:
            self._f.read(max(0, stop - pos))
            raise self._fault(f"read past byte {stop}")
        every = self._plan.fail_every_nth_read
        if every and self._reads % every == 0 and want > 0:
            self._f.read(want // 2)  # the stream moved before the error: a naive retry would skip bytes
            raise self._fault(f"read {self._reads} failed mid-stream")
        return self._f.read(n)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self._f.close()

    @property
    def closed(self) -> bool:
        return self._f.closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FlakyFileSystem(LocalFileSystem):
    plans: dict[str, FaultPlan] = {}
    faults: Counter = Counter()

    @classmethod
    def scheme(cls):
        return "flaky"

    @classmethod
    def reset(cls, plans: dict[str, FaultPlan] | None = None) -> None:
        cls.plans = dict(plans or {})
        cls.faults = Counter()

    @staticmethod
    def local(path: str) -> str:
        return path[len(PREFIX):] if path.startswith(PREFIX) else path

    def match(self, patterns, limits=None):
        results = super().match([self.local(p) for p in patterns], limits)
        return [MatchResult(PREFIX + r.pattern, [FileMetadata(PREFIX + m.path, m.size_in_bytes,
                                                              m.last_updated_in_seconds)
                                                 for m in r.metadata_list]) for r in results]

    def open(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        name = os.path.basename(self.local(path))
        plan = self.plans.get(name, FaultPlan())
        if plan.open_failures > 0:
            plan.open_failures -= 1
            FlakyFileSystem.faults[name] += 1
            raise ConnectionResetError(errno.ECONNRESET, f"flaky: open refused ({name})")
        return FlakyFile(super().open(self.local(path), mime_type, compression_type), name, plan)
