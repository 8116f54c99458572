"""How a table is declared: one pyarrow schema, each field documented, plus a version.

Every audit table is declared exactly once (in schemas/core.py and its siblings) with
`table(...)` and `column(...)`. Writers always pass the declared schema, the DuckDB views
and `shardguard tables` are generated from it, so a field's description lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

DESCRIPTION = b"description"


def column(name: str, type_: pa.DataType, doc: str, nullable: bool = True) -> pa.Field:
    """A documented field: the description travels in the field's metadata."""
    return pa.field(name, type_, nullable=nullable, metadata={DESCRIPTION: doc.encode()})


@dataclass(frozen=True)
class TableSpec:
    """One audit table: name, what a row means, the pyarrow schema and its version."""

    name: str
    doc: str
    schema: pa.Schema
    version: int
    latest_only: bool = False  # corpus-level table: the view shows the latest run only

    def describe(self) -> list[tuple[str, str, str]]:
        """(column, arrow type, description) for every field, in schema order."""
        return [
            (f.name, str(f.type), (f.metadata or {}).get(DESCRIPTION, b"").decode())
            for f in self.schema
        ]

    def empty(self) -> pa.Table:
        return self.schema.empty_table()

    def from_rows(self, rows: list[dict]) -> pa.Table:
        """Build a table from row dicts; unknown keys are an error, missing ones are null."""
        names = set(self.schema.names)
        for row in rows:
            extra = set(row) - names
            if extra:
                raise KeyError(f"{self.name}: unknown columns {sorted(extra)}")
        return pa.Table.from_pylist(rows, schema=self.schema)


def table(name: str, doc: str, version: int, *fields: pa.Field, latest_only: bool = False) -> TableSpec:
    schema = pa.schema(
        list(fields),
        metadata={b"table": name.encode(), b"schema_version": str(version).encode(),
                  DESCRIPTION: doc.encode()},
    )
    return TableSpec(name=name, doc=doc, schema=schema, version=version, latest_only=latest_only)
