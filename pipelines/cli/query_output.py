"""What `shardguard sql` (and `status`) print: rows as a table, CSV or JSON, safe for the
terminal and the spreadsheet that receive them.

Input: column names and rows (any values: the data of hostile shards included).
Output: table text with every terminal control character (C0, DEL, C1, line separators,
bidirectional overrides), in names and values, written as a visible escape (\\x1b, \\n,
\\u202e); CSV whose string cells starting with = + - @ tab or CR get a leading ' so a
spreadsheet shows them as text (raw_csv: unchanged); JSON with exact values (json escapes C0;
the C1 and other terminal-unsafe characters it leaves raw become \\u escapes, same values).
A reader that closes the pipe (`| head`) ends the output quietly: no traceback, exit 0.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys

# C0 and C1 controls, DEL, line/paragraph separators and bidirectional overrides: a terminal acts
# on them (ESC sequences, CR overwrites, reordered text), so data never reaches it raw
_TERMINAL_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_JSON_RAW_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")  # json escapes C0 itself
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def visible(text: str) -> str:
    """`text` with every terminal control character written as an escape (\\x1b, \\n, \\u202e)."""
    def escape(m: re.Match) -> str:
        c = m.group()
        return _NAMED_ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
    return _TERMINAL_UNSAFE.sub(escape, text)


def csv_safe(v):
    """A CSV cell a spreadsheet shows as text: strings starting with = + - @ tab CR get a leading '."""
    return "'" + v if isinstance(v, str) and v.startswith(FORMULA_STARTS) else v


def json_terminal_safe(text: str) -> str:
    """JSON text with the C1 controls and other terminal-unsafe characters (which json.dumps with
    ensure_ascii=False leaves raw) as \\u escapes: the same JSON values, nothing a terminal acts on."""
    return _JSON_RAW_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def format_table(cols: list[str], rows: list[tuple], max_width: int = 60) -> str:
    """Rows as an aligned text table; control characters in names and values are escaped."""
    def cell(v) -> str:
        s = visible("NULL" if v is None else str(v))
        return s if len(s) <= max_width else s[: max_width - 1] + "…"
    cols = [visible(str(c)) for c in cols]
    cells = [[cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
    line = lambda vals: " | ".join(v.ljust(w) for v, w in zip(vals, widths))  # noqa: E731
    out = [line(cols), "-+-".join("-" * w for w in widths)] + [line(r) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def write_rows(cols: list[str], rows: list[tuple], fmt: str, raw_csv: bool = False) -> None:
    """Rows to stdout as 'table', 'csv' or 'json' (module doc)."""
    try:
        if fmt == "csv":
            w = csv.writer(sys.stdout)
            keep = (lambda v: v) if raw_csv else csv_safe  # noqa: E731
            w.writerow([keep(c) for c in cols])
            w.writerows([keep(v) for v in r] for r in rows)
        elif fmt == "json":
            print(json_terminal_safe(json.dumps([dict(zip(cols, r)) for r in rows], default=str,
                                                ensure_ascii=False, indent=1)))
        else:
            print(format_table(cols, rows))
        sys.stdout.flush()
    except BrokenPipeError:  # the reader stopped reading (| head): not an error of the query
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
