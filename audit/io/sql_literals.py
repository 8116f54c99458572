"""How data goes into DuckDB SQL text: the one place that quotes.

Prefer bound parameters (`con.execute(sql, [value])`; DuckDB takes a list of files as one
parameter of read_parquet). A view stored in audit.duckdb cannot hold parameters, so its file
list is written with `string_literal` (standard SQL strings: `'` doubled, no backslash escapes).
DuckDB treats `*`, `?` and `[` in a file name given to read_parquet as glob patterns, even in
a list: `file_pattern` turns each into a one-character class ([*], [?], [[]) so the pattern
matches only that file, whatever characters the output folder's path holds.
Failure: ValueError for text holding a NUL character (no SQL string can carry it).
"""

from __future__ import annotations

from collections.abc import Iterable
from os import PathLike

GLOB_CHARS = "*?["


def string_literal(text: str) -> str:
    """`text` as a SQL string literal: 'it''s'."""
    if "\x00" in text:
        raise ValueError(f"cannot put a NUL character into SQL text: {text!r}")
    return "'" + text.replace("'", "''") + "'"


def identifier(name: str) -> str:
    """`name` as a quoted SQL identifier: "col""name"."""
    if "\x00" in name:
        raise ValueError(f"cannot put a NUL character into SQL text: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def file_pattern(path: str | PathLike) -> str:
    """A DuckDB file pattern that matches exactly `path` (glob characters made literal)."""
    return "".join(f"[{c}]" if c in GLOB_CHARS else c for c in str(path))


def read_parquet(paths: Iterable[str | PathLike]) -> str:
    """A table expression over exactly these Parquet files (columns united by name)."""
    files = ", ".join(string_literal(file_pattern(p)) for p in paths)
    return f"read_parquet([{files}], union_by_name=true, hive_partitioning=false)"
