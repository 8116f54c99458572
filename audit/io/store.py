"""The audit store: OUT/audit.duckdb with one view per table over all runs' Parquet files.

Views are generated from schemas/ (column comments = field descriptions) and read the explicit
list of each table's files the job wrote (`OutputDir.written_files`: stray Parquet files in a
table folder are reported, never read); corpus-level tables show the latest run, plus
`<table>_history`. The zero-row `_schema.parquet` makes an empty table queryable with its full
set of columns. The table `shardguard_columns` documents every column in SQL.
`refresh_views` builds the store in a temp file in OUT and renames it over audit.duckdb, so a
notebook holding a read-only connection to the old store neither blocks nor sees a half-made one.

`query` (the `shardguard sql` command) is read-only and sandboxed: it accepts exactly one
SELECT-like statement (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE) and runs it in a
private in-memory database holding the same views of the tables it names (`define_views`, from
the file records at query time: current, and still right for a folder that was moved or
copied), with DuckDB's
external access off except the table folders of OUT (`allowed_directories`), no spill files,
extension install and autoload off and the configuration locked before the statement runs:
it cannot write any file (COPY, EXPORT), attach or change a database, read files outside OUT's
table folders (read_csv('/etc/passwd'), read_text, glob), load extensions or change a setting. Failure: `ReadOnlyRefused` (a ValueError) naming what was refused
before anything ran; `QueryFailed` (a ValueError) with DuckDB's one-line message otherwise.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import duckdb

from audit.io import atomic_files
from audit.io.output_dir import OutputDir
from audit.io.sql_literals import file_pattern, identifier, read_parquet, string_literal
from schemas import TABLES
from schemas.declare import TableSpec

DB_NAME = "audit.duckdb"
READ_ONLY_TYPES = {duckdb.StatementType.SELECT}  # not EXPLAIN: EXPLAIN ANALYZE runs a COPY

log = logging.getLogger("shardguard.store")


class ReadOnlyRefused(ValueError):
    """A statement `shardguard sql` does not run: not one statement, or not a query."""


class QueryFailed(ValueError):
    """DuckDB refused or failed the query (a sandbox refusal is a 'Permission Error'): one line."""


def define_views(con: duckdb.DuckDBPyConnection, out: OutputDir, tables: dict[str, TableSpec]) -> None:
    """Every table's view (and `<table>_history`), its comments, and `shardguard_columns`, on `con`,
    over the files the job wrote. A table with no file at all (a folder whose last run predates
    the table) gets its columns and no rows from an in-memory empty table (not for a stored view:
    `refresh_views` writes `_schema.parquet` first)."""
    con.execute("CREATE OR REPLACE TABLE shardguard_columns (table_name VARCHAR, column_name VARCHAR, "
                "type VARCHAR, description VARCHAR, schema_version INTEGER)")
    for spec in tables.values():
        files = out.written_files(spec.name)
        if files:
            source = read_parquet(files)
        else:
            source = f"_empty_{spec.name}"
            con.register(source, spec.empty())
        if spec.latest_only:  # corpus-level results: a run supersedes the previous one
            con.execute(f"CREATE OR REPLACE VIEW {spec.name}_history AS SELECT * FROM {source}")
            con.execute(f"COMMENT ON VIEW {spec.name}_history IS {string_literal(spec.doc + ' Every run.')}")
            source = (f"{spec.name}_history WHERE run_id = "
                      f"(SELECT max(run_id) FROM {spec.name}_history)")
        con.execute(f"CREATE OR REPLACE VIEW {spec.name} AS SELECT * FROM {source}")
        con.execute(f"COMMENT ON VIEW {spec.name} IS {string_literal(spec.doc)}")
        for name, type_, doc in spec.describe():
            con.execute(f"COMMENT ON COLUMN {spec.name}.{identifier(name)} IS {string_literal(doc)}")
        con.executemany("INSERT INTO shardguard_columns VALUES (?, ?, ?, ?, ?)",
                        [(spec.name, n, t, d, spec.version) for n, t, d in spec.describe()])


def refresh_views(out: OutputDir, tables: dict[str, TableSpec]) -> Path:
    """(Re)create every view over the files the job wrote; safe to call after each run.
    Writes a temp file of ours (atomic_files.temp_for) and renames it over OUT/audit.duckdb. Stray Parquet
    files (not written by the job) are logged as one warning line and left out."""
    db = out.root / DB_NAME
    tmp = atomic_files.temp_for(db)
    for spec in tables.values():
        out.ensure_schema_file(spec)
    con = duckdb.connect(str(tmp))
    try:
        con.execute("BEGIN TRANSACTION")  # one commit for the whole catalog, not one per statement
        define_views(con, out, tables)
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
        con.close()
        os.replace(tmp, db)
    finally:
        con.close()
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)
    strays = out.stray_files(tables)
    if strays:
        log.warning("%d Parquet file(s) in %s were not written by ShardGuard and are not read: %s%s "
                    "(shardguard status lists them)", len(strays), out.root,
                    ", ".join(str(p.relative_to(out.root)) for p in strays[:3]), " ..." if len(strays) > 3 else "")
    return db


def table_folders(out_root: str | Path) -> list[str]:
    """The folders `shardguard sql` may read: OUT's table folders (trailing slash: not a prefix
    of a sibling's name), each also as the views spell it (glob characters escaped)."""
    root = Path(out_root).resolve()
    folders = [str(root / name) + os.sep for name in TABLES]
    return sorted(set(folders) | {file_pattern(f) for f in folders})


def one_query(sql: str) -> str:
    """The one SELECT-like statement in `sql`; ReadOnlyRefused for none, several or another kind."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise ReadOnlyRefused(f"SQL does not parse: {str(e).splitlines()[0]}") from None
    if len(statements) != 1:
        raise ReadOnlyRefused(f"shardguard sql runs exactly one statement; got {len(statements)}")
    kind = statements[0].type
    if kind not in READ_ONLY_TYPES:
        raise ReadOnlyRefused(f"shardguard sql is read-only: it runs one query (SELECT, WITH, FROM, VALUES, "
                              f"DESCRIBE, SHOW, SUMMARIZE), not a {kind.name} statement")
    return statements[0].query


def sandboxed(out_root: str | Path) -> duckdb.DuckDBPyConnection:
    """A private in-memory database that can read OUT's table folders and nothing else, spills
    nothing to disk and cannot change its own configuration (no views yet)."""
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    try:
        con.execute("SET temp_directory = ''")  # no spill files: it writes nothing anywhere
        con.execute("SET allowed_directories = ?", [table_folders(out_root)])
        con.execute("SET enable_external_access = false")
        con.execute("SET enable_progress_bar = false")  # nothing but the rows on the terminal
        con.execute("SET parquet_metadata_cache = true")  # footers read once: binding the views, then the query
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def referenced_tables(con: duckdb.DuckDBPyConnection, statement: str) -> dict[str, TableSpec]:
    """The audit tables `statement` names (a `<table>_history` view names its table); every
    table when it names none (SHOW TABLES, duckdb_columns(), shardguard_columns). Parsed on the
    sandboxed `con`: naming tables binds the table functions of the statement."""
    try:
        found = con.get_table_names(statement, qualified=False)
    except duckdb.Error:  # naming binds a little (a JOIN ... USING needs the columns): define every view
        return TABLES
    names = {n.lower().removesuffix("_history") for n in found}
    used = {name: spec for name, spec in TABLES.items() if name in names}
    return used or TABLES


def query(out_root: str | Path, sql: str) -> tuple[list[str], list[tuple]]:
    """Run one query on OUT's tables, read-only and sandboxed (module doc). Returns (column names, rows)."""
    db = Path(out_root) / DB_NAME
    if not db.exists():
        raise FileNotFoundError(f"no audit store at {db}: run `shardguard run --out {out_root}` first")
    statement = one_query(sql)
    con = sandboxed(out_root)
    try:
        define_views(con, OutputDir(out_root), referenced_tables(con, statement))
        cur = con.execute(statement)
        cols = [d[0] for d in cur.description] if cur.description else []
        return cols, cur.fetchall()
    except duckdb.Error as e:  # refused by the sandbox, or a mistake in the query: its first line says which
        raise QueryFailed(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__) from None
    finally:
        con.close()


def scan(sql: str, params: list | None = None) -> list[dict]:
    """Rows of one query over Parquet files (read_parquet in `sql`), as dicts, on a private
    in-memory connection: no shared connection state, nothing to leave unfinished."""
    con = duckdb.connect()
    try:
        cur = con.execute(sql, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]
    finally:
        con.close()
