"""Removing duplicate candidate rows that older lessdb versions wrote (migrations/0019_candidate_repairs.sql).

Each (pool, id) must be stored once; an ingest that planned records by line number once stored every record of
a one-line JSON array, duplicates included. Readers already keep the first row per id and the audit views one
row per (pool, id), but the table itself, its counts and `lessdb sql` still carried the extra rows.

A repair (`storage.candidates.repair_duplicates`, which takes the `candidates` write lock as every ingest does)
keeps, per (pool, id), the earliest row (lowest ingest id, then the first stored) and deletes the rest in one
Lance delete, recorded in DuckDB so that readers move to the repaired version:

1. a `started` row records the version being repaired (before Lance is touched);
2. one Lance delete of the extra rows (by row id) at the latest version;
3. one transaction marks it `complete` with the new version and the rows each ingest lost.

A process killed after 1 or 2 leaves a `started` row; `finish_started_repair` (called by every write command's
clean-up and by `verify --repair`) redoes 2 — idempotent: nothing is left to delete if it happened — and 3.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pyarrow as pa

from .. import faults
from .lance_tables import CANDIDATES

KIND_DUPLICATES = "duplicates"


@dataclass(frozen=True)
class RepairResult:
    repair_id: int
    read_version: int
    lance_version: int
    n_removed: int
    removed_by_ingest: dict[int, int]


def duplicate_rows(ws, version: int | None) -> tuple[int, list[int]]:
    """(keys stored more than once, row ids of the extra rows: all but the earliest per key) at `version`."""
    table = ws.lance.dataset(CANDIDATES, version).to_table(columns=["key", "ingest_id"], with_row_id=True)
    return extra_row_ids(table)


def extra_row_ids(table: pa.Table) -> tuple[int, list[int]]:
    """The rule, on a table of key, ingest_id, _rowid: keep the lowest (ingest_id, _rowid) per key."""
    keys = table.column("key").to_pylist()
    counts = Counter(keys)
    dup = {k for k, n in counts.items() if n > 1}
    if not dup:
        return 0, []
    rows = sorted((k, int(i), int(r)) for k, i, r in zip(keys, table.column("ingest_id").to_pylist(),
                                                          table.column("_rowid").to_pylist()) if k in dup)
    extra, last = [], None
    for key, _, rowid in rows:
        if key == last:
            extra.append(rowid)
        last = key
    return len(dup), extra


def finish_started_repair(ws) -> RepairResult | None:
    """Finish a repair a killed process left `started` (the caller holds the `candidates` write lock)."""
    row = _started(ws)
    if row is None:
        return None
    return finish_repair(ws, *row)


def finish_repair(ws, repair_id: int, read_version: int) -> RepairResult:
    """Steps 2 and 3 (idempotent: a killed repair is finished by calling it again)."""
    _, extra = duplicate_rows(ws, None)      # at the latest version: empty if the delete already happened
    if extra:
        ws.lance.delete(CANDIDATES, "_rowid IN (" + ",".join(str(r) for r in extra) + ")")
        faults.point("repair.after_lance_delete")
    new_version = ws.lance.version(CANDIDATES)
    before, after = _rows_per_ingest(ws, read_version), _rows_per_ingest(ws, new_version)
    removed = {i: n - after.get(i, 0) for i, n in before.items() if n > after.get(i, 0)}
    with ws.duck.transaction() as con:
        con.execute("UPDATE candidate_repairs SET status = 'complete', lance_version = ?, n_removed = ?, "
                    "finished_at = current_timestamp WHERE repair_id = ?",
                    [new_version, sum(removed.values()), repair_id])
        con.executemany("INSERT INTO candidate_repair_rows (repair_id, ingest_id, n_removed) VALUES (?, ?, ?)",
                        [[repair_id, i, n] for i, n in sorted(removed.items())])
    return RepairResult(repair_id, read_version, new_version, sum(removed.values()), removed)


def _rows_per_ingest(ws, version: int) -> dict[int, int]:
    col = ws.lance.dataset(CANDIDATES, version).to_table(columns=["ingest_id"]).column("ingest_id")
    return dict(Counter(col.to_pylist()))


def start_repair(ws, read_version: int) -> int:
    """Step 1: record a repair of `read_version` as `started`; returns its id."""
    with ws.duck.transaction() as con:
        repair_id = con.execute("SELECT coalesce(max(repair_id), 0) + 1 FROM candidate_repairs").fetchone()[0]
        con.execute("INSERT INTO candidate_repairs (repair_id, kind, status, read_version) VALUES (?, ?, 'started', ?)",
                    [repair_id, KIND_DUPLICATES, read_version])
    return int(repair_id)


def _started(ws) -> tuple[int, int] | None:
    with ws.duck.connect(read_only=True) as con:
        row = con.execute("SELECT repair_id, read_version FROM candidate_repairs WHERE status = 'started' "
                          "ORDER BY repair_id LIMIT 1").fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


def removed_per_ingest(ws) -> dict[int, int]:
    """Rows each ingest lost to complete repairs (verify compares the stored rows with n_added minus these)."""
    with ws.duck.connect(read_only=True) as con:
        rows = con.execute("SELECT r.ingest_id, sum(r.n_removed) FROM candidate_repair_rows r "
                           "JOIN candidate_repairs c USING (repair_id) WHERE c.status = 'complete' "
                           "GROUP BY r.ingest_id").fetchall()
    return {int(i): int(n) for i, n in rows}
