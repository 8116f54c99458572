"""Expand an --input pattern into the shards to read.

Input: a URI pattern on any filesystem Beam supports (local paths, gs://, s3://, ...), with
brace ranges (`data/{00000..00099}.tar`), globs (`data/*.tar`), a folder (all its *.tar), or
several patterns separated by commas.
Output: sorted `(shard_id, uri)` pairs; shard_id = file name without '.tar'.
Failure: `ValueError` with the pattern when nothing matches, or when two different files
would get the same shard id (shard ids name output files and completion markers).
"""

from __future__ import annotations

import os

from apache_beam.io.filesystems import FileSystems
from braceexpand import braceexpand


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


def expand_input(pattern: str) -> list[tuple[str, str]]:
    uris = sorted({u for part in split_patterns(pattern) for u in _expand_one(part)})
    uris = [u for u in uris if u.endswith(".tar")]
    if not uris:
        raise ValueError(f"--input {pattern!r} matched no .tar shards")
    by_id: dict[str, str] = {}
    for u in uris:
        sid = shard_id(u)
        if sid in by_id:
            raise ValueError(f"two shards would share the id {sid!r}: {by_id[sid]} and {u}; "
                             "shard file names must be unique within one --out")
        by_id[sid] = u
    return sorted(by_id.items())
