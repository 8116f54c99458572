"""`shardguard sql`, `shardguard tables` and `shardguard report`: the commands that read an audit
output folder and print or write what is in it.

  shardguard sql    --out DIR "SELECT ..." [--format table|csv|json] [--raw-csv]
  shardguard tables [--out DIR]
  shardguard report --out DIR [--to DIR] [--top N]

Input: the parsed flags. Output: query rows on stdout (query_output), the tables and their
documented columns (with row counts when --out is given), the HTML report's path.
Failure: `ValueError` for a refused or failed query (its message escaped: it may quote data);
`UsageError` for --top < 1 or, without --to, an --out that is not an audit folder of ours.
"""

from __future__ import annotations

import argparse

from audit.io.folder_ownership import require_existing
from audit.report.run_report import write_report
from audit.io.sql_literals import string_literal
from audit.io.store import query
from audit.io.user_errors import UsageError
from pipelines.cli.query_output import visible, write_rows
from pipelines.shard_uris import open_uri
from schemas import TABLES

EXAMPLES_SQL = """examples:
  shardguard sql --out demo-out "SELECT status, count(*) FROM samples GROUP BY ALL"
  shardguard sql --out demo-out --format csv "SELECT * FROM errors" > errors.csv
what it can do: run ONE query (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE) on the
  views of the audit tables (those of OUT/audit.duckdb, made afresh in memory), which read only
  the Parquet files the job wrote in OUT's table folders (stray files there are listed by
  `shardguard status`, never read).
what it cannot do: write any file or database (COPY, EXPORT, ATTACH, CREATE, INSERT, ...), read
  files outside OUT's table folders (read_csv('/etc/passwd'), read_text, glob), install or load
  extensions, change settings (SET, PRAGMA), or run several ;-separated statements: each is
  refused with a one-line error (exit 1), and nothing is read or written.
output: table (control characters shown escaped, e.g. \\x1b), csv (cells starting with = + - @
  tab or CR get a leading ' so spreadsheets show them as text; --raw-csv writes them unchanged),
  json (exact values, JSON-escaped). A closed pipe (| head) ends the command quietly."""

EXAMPLES_REPORT = """examples:
  shardguard report --out demo-out                  # writes demo-out/reports/index.html
  shardguard report --out demo-out --to /tmp/audit-report --top 50
The page is self-contained (images and charts inlined, no script): open it offline or mail it.
Every `shardguard run` writes it too (config `report: false` turns that off)."""


def add_sql_parser(sub) -> None:
    s = sub.add_parser("sql", help="query the audit store read-only", epilog=EXAMPLES_SQL,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--out", required=True, help="output folder of a run")
    s.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s.add_argument("--raw-csv", action="store_true", help="csv: write cells starting with = + - @ tab CR unchanged "
                   "(default: a leading ' keeps spreadsheets from running them as formulas)")
    s.add_argument("query", help="one read-only SQL query (SELECT ...)")


def add_report_parser(sub) -> None:
    h = sub.add_parser("report", help="write the self-contained HTML audit report", epilog=EXAMPLES_REPORT,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    h.add_argument("--out", required=True, help="output folder of `shardguard run`")
    h.add_argument("--to", help="folder for index.html (default OUT/reports)")
    h.add_argument("--top", type=int, default=20, help="duplicate clusters, memorization and replication pairs "
                                                       "and change rows shown at most (20)")


def add_tables_parser(sub) -> None:
    t = sub.add_parser("tables", help="list the audit tables and their documented columns",
                       epilog="examples:\n  shardguard tables\n  shardguard tables --out demo-out   # with row counts",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--out", help="also count rows in this output folder")


def cmd_report(args) -> int:
    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    if not args.to:  # the page goes into OUT/reports: OUT must be an audit folder of ours
        require_existing(args.out, "audit", adopt=True)
    print(f"report: {write_report(args.out, args.to, top=args.top, opener=open_uri)}")
    return 0


def cmd_sql(args) -> int:
    try:
        cols, rows = query(args.out, args.query)
    except ValueError as e:  # refused or failed: the message may quote data, so escape it
        raise ValueError(visible(str(e))) from None
    write_rows(cols, rows, args.format, raw_csv=args.raw_csv)
    return 0


def cmd_tables(args) -> int:
    counts = {}
    if args.out:
        counts = dict(query(args.out, " UNION ALL ".join(f"SELECT {string_literal(name)}, count(*) FROM {name}"
                                                         for name in TABLES))[1])
    for spec in TABLES.values():
        n = f" ({counts[spec.name]} rows)" if spec.name in counts else ""
        print(f"{spec.name} v{spec.version}{n}: {spec.doc}")
        for name, type_, doc in spec.describe():
            print(f"  {name:<20} {type_:<24} {doc}")
        print()
    return 0
