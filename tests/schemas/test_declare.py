import pyarrow as pa
import pytest

from schemas import TABLES
from schemas.declare import column, table


def test_every_field_of_every_table_is_documented():
    for spec in TABLES.values():
        assert spec.doc and spec.version >= 1
        for name, _type, doc in spec.describe():
            assert len(doc) > 10, f"{spec.name}.{name} has no description"


def test_from_rows_rejects_unknown_columns_and_fills_nulls():
    spec = table("t", "a test table", 1, column("a", pa.int64(), "the a value"),
                 column("b", pa.string(), "the b value"))
    t = spec.from_rows([{"a": 1}])
    assert t.column("b").to_pylist() == [None]
    with pytest.raises(KeyError, match="unknown columns"):
        spec.from_rows([{"a": 1, "zzz": 2}])


def test_schema_carries_version_and_field_descriptions():
    spec = TABLES["samples"]
    assert spec.schema.metadata[b"schema_version"] == b"1"
    assert b"description" in spec.schema.field("key").metadata
