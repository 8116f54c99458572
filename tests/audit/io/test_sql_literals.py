import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audit.io.sql_literals import file_pattern, identifier, read_parquet, string_literal

NASTY = ["o'ut", "a''b", "*/ -- ü x", "back\\slash", "semi;colon", "new\nline", 'dq"uote', "ta\tb", "\x1b[2J"]


@pytest.mark.parametrize("text", NASTY)
def test_string_literal_reads_back_exactly(text):
    con = duckdb.connect()
    assert con.execute(f"SELECT {string_literal(text)}").fetchone()[0] == text
    assert con.execute(f"SELECT 1 AS {identifier(text)}").description[0][0] == text


def test_nul_cannot_enter_sql_text():
    with pytest.raises(ValueError, match="NUL"):
        string_literal("a\x00b")


@pytest.mark.parametrize("name", ["x*", "q[1]", "p?q", "o'ut */--ü x [a-z]*"])
def test_file_pattern_reads_only_that_file_not_its_glob_siblings(tmp_path, name):
    """DuckDB globs `*`, `?`, `[` in read_parquet paths, even in a list: the sibling that the
    raw name matches as a pattern ('xy' for 'x*', 'q1' for 'q[1]') must not be read."""
    target = tmp_path / name / "f.parquet"
    sibling = tmp_path / {"x*": "xy", "q[1]": "q1", "p?q": "paq"}.get(name, "o'ut zz/--ü x b") / "f.parquet"
    for p in (target, sibling):
        p.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"d": [str(p.parent.relative_to(tmp_path))]}), p)
    con = duckdb.connect()
    assert con.execute(f"SELECT d FROM {read_parquet([target])}").fetchall() == [(name,)]
    assert con.execute("SELECT d FROM read_parquet(?)", [[file_pattern(target)]]).fetchall() == [(name,)]
