"""SQL literals for Lance filter strings, which take no bound parameters (DuckDB queries bind theirs with `?`):
the one place a value is quoted into SQL text."""
from __future__ import annotations

import json

from typing import Iterable


def sql_literal(text: str) -> str:
    """'text' as an SQL string literal (single quotes doubled)."""
    return "'" + str(text).replace("'", "''") + "'"


def sql_in_list(values: Iterable[str]) -> str:
    """(…) of string literals, for `column IN (…)`."""
    return "(" + ",".join(sql_literal(v) for v in values) + ")"


def decode_json_columns(row: dict, columns) -> dict:
    """A row read from DuckDB with its JSON columns (returned as text) parsed, in place."""
    for c in columns:
        if isinstance(row.get(c), str):
            row[c] = json.loads(row[c])
    return row
