"""Shard reads that survive transient I/O errors: retries with exponential backoff and jitter.

Input: an opener `uri -> binary file` (Beam's FileSystems.open in the pipelines, `open` in
plain code), a URI and a `ReadRetry` policy (job config `ingest.retry`).
Output: `RetryingFile`, a read-only file object for tarfile and the by-offset readers. It keeps
its own position; when an open, read or seek raises a transient `OSError` (also one raised in
the middle of a read, after the underlying stream moved), it waits, reopens the URI, seeks to
the position the caller last saw and repeats the call, so the caller gets each byte exactly
once (no duplicated or skipped samples). A non-seekable stream is reopened and read up to the
position instead.
Failure: after `attempts` tries of one call, `ReadFailed` (an OSError) naming the URI, the byte
position and the last error. Errors that cannot heal by retrying (file not found, permission,
is a directory, unsupported operation) are raised at once, unchanged. Every retry calls
`on_retry(uri, attempt, error, wait_seconds)` and is counted in `retries`.
"""

from __future__ import annotations

import io
import logging
import random
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable

log = logging.getLogger("shardguard.io")

Opener = Callable[[str], BinaryIO]
# OSErrors that say the file is not there or not allowed: waiting does not change them.
PERMANENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, io.UnsupportedOperation)


@dataclass(frozen=True)
class ReadRetry:
    """How often and how patiently one open/read/seek of a shard is retried."""

    attempts: int = 5  # tries per call, the first included (1 = never retry)
    initial_seconds: float = 0.5  # wait before the first retry
    multiplier: float = 2.0  # each further wait is this much longer...
    max_seconds: float = 30.0  # ...up to this
    jitter: float = 0.5  # each wait is drawn uniformly from [(1 - jitter) * w, w]

    def wait(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        w = min(self.max_seconds, self.initial_seconds * self.multiplier ** (retry - 1))
        return w * (1.0 - self.jitter * rng.random())


class ReadFailed(OSError):
    """A shard read still failing after every retry: the shard, not the sample, is at fault."""


def is_transient(e: BaseException) -> bool:
    return isinstance(e, OSError) and not isinstance(e, (PERMANENT, ReadFailed))


RetryHook = Callable[[str, int, BaseException, float], None]


def log_retry(uri: str, attempt: int, error: BaseException, wait: float) -> None:
    log.warning("transient read error on %s (try %d): %s: %s; retrying in %.2fs",
                uri, attempt, type(error).__name__, error, wait)


class RetryingFile(io.RawIOBase):
    """Read-only file over `opener(uri)` that reopens and seeks back after a transient error."""

    def __init__(self, opener: Opener, uri: str, policy: ReadRetry = ReadRetry(),
                 on_retry: RetryHook | None = None, sleep: Callable[[float], None] = time.sleep,
                 seed: int | None = None):
        super().__init__()
        self.opener, self.uri, self.policy = opener, uri, policy
        self.on_retry = on_retry or log_retry
        self.sleep, self.rng = sleep, random.Random(seed)
        self.retries = 0
        self._pos = 0
        self._f: BinaryIO | None = None
        self._call("open", lambda: None)

    # ---- the retry loop -------------------------------------------------------------------
    def _call(self, what: str, fn):
        last: BaseException | None = None
        for attempt in range(1, max(1, self.policy.attempts) + 1):
            try:
                if self._f is None:
                    self._reopen()
                return fn()
            except OSError as e:
                if not is_transient(e):
                    raise
                last = e
                self._drop()
                if attempt >= self.policy.attempts:
                    break
                wait = self.policy.wait(attempt, self.rng)
                self.retries += 1
                self.on_retry(self.uri, attempt, e, wait)
                self.sleep(wait)
        raise ReadFailed(f"{what} of {self.uri} at byte {self._pos} failed {self.policy.attempts} times; "
                         f"last error: {type(last).__name__}: {last}") from last

    def _reopen(self) -> None:
        f = self.opener(self.uri)
        try:
            if self._pos:
                if _seekable(f):
                    f.seek(self._pos)
                else:  # a stream: read up to where the caller is
                    left = self._pos
                    while left:
                        chunk = f.read(min(left, 1 << 20))
                        if not chunk:
                            raise OSError(f"{self.uri} is shorter than byte {self._pos} on reopen")
                        left -= len(chunk)
        except BaseException:
            f.close()
            raise
        self._f = f

    def _drop(self) -> None:
        f, self._f = self._f, None
        if f is not None:
            try:
                f.close()
            except Exception:  # closing a broken stream may fail too; it is replaced anyway
                pass

    # ---- file interface ---------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._call("seekable check", lambda: _seekable(self._f))

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        def once():
            data = self._f.read(size) if size is not None and size >= 0 else self._f.read()
            self._pos += len(data)
            return data
        return self._call("read", once)

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset, whence = self._pos + offset, io.SEEK_SET

        def once():
            self._pos = self._f.seek(offset, whence) if whence != io.SEEK_SET else _seek_to(self._f, offset)
            return self._pos
        return self._call("seek", once)

    def close(self) -> None:
        self._drop()
        super().close()


def _seek_to(f: BinaryIO, offset: int) -> int:
    f.seek(offset)
    return offset


def _seekable(f) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, ValueError):
        return False


def retrying_opener(opener: Opener, policy: ReadRetry = ReadRetry(), on_retry: RetryHook | None = None) -> Opener:
    """An opener whose files are `RetryingFile`s (for code that takes a plain opener)."""
    def open_with_retries(uri: str) -> RetryingFile:
        return RetryingFile(opener, uri, policy, on_retry)
    return open_with_retries
