"""Folded low-dimensional copies of feature tables (migrations/0016_folded_copies.sql; lessdb.featurize.folding
writes them, `select --prefilter` reads them).

A folded table has the feature table's columns at d' = d/m — `vector` is the fold of the stored (unit) vector,
not renormalised, and `norm` the full row's norm, so vector × norm is the fold of the raw sketch — plus
`source_row`: the full row's Lance row address, so the rescan at full d reads only the shortlisted rows.
"""
from __future__ import annotations

import pyarrow as pa

from .features import feature_schema

COLUMNS = ("feature_set_id", "low_dim", "lance_table", "lance_version", "source_version", "n_rows")


def folded_table_name(feature_set_id: str, low_dim: int) -> str:
    return f"features_{feature_set_id}_fold{int(low_dim)}"


def folded_schema(low_dim: int, dtype: str, with_norm: bool) -> pa.Schema:
    return feature_schema(low_dim, dtype, with_norm=with_norm).append(
        pa.field("source_row", pa.uint64(), nullable=False))


def folded_copy(ws, feature_set_id: str, low_dim: int) -> dict | None:
    with ws.duck.connect(read_only=True) as con:
        row = con.execute(f"SELECT {', '.join(COLUMNS)} FROM folded_copies WHERE feature_set_id = ? AND low_dim = ?",
                          [feature_set_id, int(low_dim)]).fetchone()
    return None if row is None else dict(zip(COLUMNS, row))


def folded_copies(ws, feature_set_id: str | None = None) -> list[dict]:
    with ws.duck.connect(read_only=True) as con:
        rows = con.execute(f"SELECT {', '.join(COLUMNS)} FROM folded_copies WHERE ? IS NULL OR feature_set_id = ? "
                           "ORDER BY feature_set_id, low_dim", [feature_set_id, feature_set_id]).fetchall()
    return [dict(zip(COLUMNS, r)) for r in rows]


def record_folded_copy(ws, row: dict) -> None:
    """After a sync's last append: the folded table's version and the full version it covers (upsert)."""
    with ws.duck.transaction() as con:
        con.execute("DELETE FROM folded_copies WHERE feature_set_id = ? AND low_dim = ?",
                    [row["feature_set_id"], int(row["low_dim"])])
        con.execute(f"INSERT INTO folded_copies ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                    [row[c] for c in COLUMNS])
