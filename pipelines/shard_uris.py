"""Expand an --input pattern into the shards to read.

Input: a URI pattern on any filesystem Beam supports (local paths, gs://, s3://, ...), with
brace ranges (`data/{00000..00099}.tar`), globs (`data/*.tar`), a folder (all its *.tar), or
several patterns separated by commas.
Output: sorted `(shard_id, uri)` pairs; shard_id = file name without '.tar'.
Failure: `UsageError` (CLI exit 2) with the pattern when nothing matches; naming both files
when two different files would get the same shard id, or ids that name the same output file
(`.b.tar` and `b.tar`, `x\\y.tar` and `x_y.tar`: audit.io.output_dir.shard_file_stem), since shard
ids name output files and completion markers; naming the path when a local match is not a
regular file (a folder or FIFO named *.tar would be skipped or hang the reader).
"""

from __future__ import annotations

import glob
import os
import stat

from apache_beam.io.filesystems import FileSystems
from braceexpand import braceexpand

from audit.io.output_dir import shard_file_stem
from audit.io.user_errors import UsageError


def open_uri(uri: str):
    """A binary file of `uri` through Beam's filesystems (local paths, gs://, s3://, ...)."""
    return FileSystems.open(uri)


def shard_id(uri: str) -> str:
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return name[: -len(".tar")] if name.endswith(".tar") else name


def _expand_one(pattern: str) -> list[str]:
    if "://" not in pattern and os.path.isdir(pattern):
        pattern = os.path.join(pattern, "*.tar")
    uris: list[str] = []
    for p in braceexpand(pattern):
        if "://" not in p:
            p = os.path.abspath(p)
            # Beam's local match leaves out folders and names with a backslash: Python's glob
            # sees them, so a folder named *.tar is reported (below), never silently skipped
            uris.extend(glob.glob(p, recursive=True, include_hidden=True))
        for result in FileSystems.match([p]):
            uris.extend(m.path for m in result.metadata_list)
    return uris


def split_patterns(pattern: str) -> list[str]:
    """Split on commas that are not inside {...} (those belong to brace expansion)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(pattern):
        depth += (ch == "{") - (ch == "}")
        if ch == "," and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
    parts.append(pattern[start:])
    return [p.strip() for p in parts if p.strip()]


def _require_regular_file(uri: str) -> None:
    """A local match must be a plain file: a folder named *.tar is no shard, and reading a FIFO blocks."""
    if "://" in uri and not uri.startswith("file://"):
        return
    path = uri.removeprefix("file://")
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise UsageError(f"--input: cannot read {path}: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise UsageError(f"--input: {path} is {kind}, not a tar shard; remove it or narrow the --input pattern")


def expand_input(pattern: str) -> list[tuple[str, str]]:
    uris = sorted({u for part in split_patterns(pattern) for u in _expand_one(part)})
    uris = [u for u in uris if u.endswith(".tar")]
    if not uris:
        raise UsageError(f"--input {pattern!r} matched no .tar shards; check the path or pattern")
    by_stem: dict[str, str] = {}
    by_id: dict[str, str] = {}
    for u in uris:
        _require_regular_file(u)
        sid = shard_id(u)
        other = by_stem.get(shard_file_stem(sid))
        if other is not None:
            raise UsageError(f"--input: {other} and {u} would share the id {shard_file_stem(sid)!r} "
                             "(ids name output files; leading dots and path separators are dropped); "
                             "rename one of them")
        by_stem[shard_file_stem(sid)] = u
        by_id[sid] = u
    return sorted(by_id.items())
