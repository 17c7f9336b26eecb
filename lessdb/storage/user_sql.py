"""Read-only SQL for analysts: the DuckDB metadata plus Lance tables, nothing outside the workspace."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import duckdb
import pyarrow as pa

from ..errors import LessdbError
from .damage import raise_if_damage


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple]

    def as_dicts(self) -> list[dict]:
        return [dict(zip(self.columns, row)) for row in self.rows]


def python_rows(table: pa.Table) -> list[dict]:
    """An Arrow result's rows as the Python values DuckDB itself returns (what `lessdb sql` printed before it read
    Arrow): maps as dicts, HUGEINT (e.g. a `sum` of integers, which Arrow carries as decimal(38, 0)) as int,
    intervals as timedelta (a month as 30 days, as DuckDB counts it)."""
    rows = table.to_pylist(maps_as_pydicts="lossy")
    whole = [f.name for f in table.schema if pa.types.is_decimal(f.type) and f.type.precision == 38
             and f.type.scale == 0]
    spans = [f.name for f in table.schema if pa.types.is_interval(f.type)]
    for row in rows:
        for name in whole:
            row[name] = None if row[name] is None else int(row[name])
        for name in spans:
            span = row[name]
            row[name] = None if span is None else timedelta(days=30 * span.months + span.days,
                                                            microseconds=span.nanoseconds // 1000)
    return rows


def run_readonly_sql(workspace, query: str, limit: int | None = None, params=None) -> QueryResult:
    """Run `query` against the workspace. The connection is read-only and file/network access is switched
    off before the query runs (it cannot be switched back on), so user SQL can read only the workspace.
    `params`: values for `?` (a list) or `$name` (a dict) placeholders, bound by DuckDB, never pasted in."""
    return _sandboxed(workspace, query, params, lambda rel: QueryResult(
        list(rel.columns), (rel.limit(limit) if limit is not None else rel).fetchall()), QueryResult([], []))


def readonly_arrow(workspace, query: str, params=None, limit: int | None = None) -> pa.Table:
    """`query`'s result (at most `limit` rows) as an Arrow table, through the same sandbox as `run_readonly_sql`."""
    return _sandboxed(workspace, query, params, lambda rel: (rel.limit(limit) if limit is not None else rel)
                      .to_arrow_table(), pa.table({}))


def _sandboxed(workspace, query: str, params, read, empty):
    if not query or not query.strip():
        raise LessdbError("empty query; e.g. lessdb sql \"SELECT * FROM pool_summary\"")
    with workspace.duck.connect(read_only=True, with_relations=True) as con:
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        try:
            rel = con.sql(query, params=params) if params is not None else con.sql(query)
        except duckdb.Error as exc:
            raise_if_damage(exc)   # a damaged file, not the query
            raise LessdbError(f"SQL error: {exc}") from exc
        if rel is None:  # a statement with no result (e.g. SET) -- nothing to show
            return empty
        try:
            return read(rel)
        except duckdb.Error as exc:
            raise_if_damage(exc)   # a damaged file, not the query
            raise LessdbError(f"SQL error: {exc}") from exc
