"""Reading candidates from the LanceDB `candidates` table, filtered by pool and user SQL.

What readers see (one definition, here): an ingest writes its rows to Lance first and records itself in
DuckDB second, so a process killed in between leaves rows no ingest owns. Every reader therefore reads
`candidates` at the version the last *recorded* ingest produced (`candidates_version`), never the latest:
ingests are serialised by the workspace's `candidates` write lock, so that version holds exactly the rows of
recorded ingests. `sql`'s `candidates` relation, select, featurize, warmup, train, report and export all go
through `candidates_version` / `Workspace.lance_relations`. The orphan rows themselves are deleted by the
next write command (`roll_back_unrecorded_ingests`) and reported by `lessdb verify`.
"""
from __future__ import annotations

import fcntl
from typing import Iterator

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from .. import faults
from ..errors import InputError, LessdbError, ref
from .candidate_repair import RepairResult, duplicate_rows, finish_repair, finish_started_repair, start_repair
from .damage import raise_if_damage
from .sql_text import sql_in_list, sql_literal
from .lance_tables import CANDIDATES
from .user_filter import error_message, filtered_candidates


def candidates_version(ws) -> int | None:
    """The version of `candidates` every reader reads: the one the newest recorded ingest produced (the empty
    first version before any; None: no table). Rows of an ingest that died before DuckDB recorded it are
    never in it (see the module docstring)."""
    from . import meta_pools

    recorded = meta_pools.recorded_candidates_version(ws, CANDIDATES)
    if recorded is not None:
        return int(recorded)
    if not ws.lance.has_table(CANDIDATES):
        return None
    return min(v["version"] for v in ws.lance.versions(CANDIDATES))


def unrecorded_ingest_ids(ws) -> set[int]:
    """Ingest ids with rows in the latest `candidates` version but no DuckDB record (orphans of a kill, or of an
    ingest still running: callers hold the `candidates` write lock to tell them apart)."""
    from . import meta_pools

    if not ws.lance.has_table(CANDIDATES):
        return set()
    return ingest_ids_present(ws) - meta_pools.committed_ingest_ids(ws)


def roll_back_unrecorded_ingests(ws, wait: bool = True) -> set[int] | None:
    """Delete rows whose ingest was never recorded; returns the ingest ids removed. Takes the `candidates`
    write lock (an ingest holds it from before its Lance write until after its DuckDB record, so rows found
    unrecorded under the lock are orphans). `wait=False`: None if an ingest holds the lock now."""
    lock = ws.root / "locks" / "candidates.lock"
    lock.parent.mkdir(exist_ok=True)
    with open(lock, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            return None
        try:
            return roll_back_locked(ws)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def roll_back_locked(ws) -> set[int]:
    """`roll_back_unrecorded_ingests` for a caller that already holds the `candidates` write lock; also finishes
    a duplicate repair a killed process left half done (storage/candidate_repair.py)."""
    if not ws.lance.has_table(CANDIDATES) or ws.lance.version(CANDIDATES) == candidates_version(ws):
        finish_started_repair(ws)      # (killed before its delete: the versions still agree)
        return set()   # nothing was written after the last recorded ingest
    orphans = unrecorded_ingest_ids(ws)
    if orphans:
        delete_ingests(ws, orphans)
    finish_started_repair(ws)
    return orphans


def repair_duplicates(ws) -> RepairResult | None:
    """Remove the duplicate candidate rows older versions wrote, keeping the earliest of each (pool, id), as one
    recorded Lance delete (storage/candidate_repair.py); None if there were none. Takes the `candidates` write
    lock (waits for a running ingest)."""
    with ws.write_lock("candidates"):
        finished = finish_started_repair(ws)   # one a killed process left half done
        roll_back_locked(ws)                   # rows of a killed ingest
        version = candidates_version(ws)
        if version is None or not duplicate_rows(ws, version)[1]:
            return finished
        repair_id = start_repair(ws, version)
        faults.point("repair.before_lance_delete")
        return finish_repair(ws, repair_id, version)


def select_candidate_ids(ws, pool: str | None = None, where: str | None = None,
                         version: int | None = None, extra_condition: str | None = None) -> list[str]:
    """Ids of candidates in `pool` (all pools if None) matching the user's SQL boolean expression `where`
    (checked by `user_filter.check_filter`; it can only narrow the pool), evaluated by DuckDB over the
    `candidates` relation pinned at `version` (None: the recorded version, `candidates_version`), sorted by id
    (byte order). `extra_condition` is lessdb's own SQL.
    Without `where` no SQL is needed: one Lance scan of the id column (~10x faster than a DuckDB query)."""
    if version is None:
        version = candidates_version(ws)
    if where is None and extra_condition is None:
        if not ws.lance.has_table(CANDIDATES):
            return []
        ds = ws.lance.dataset(CANDIDATES, version)
        ids = ds.to_table(columns=["id"], filter=None if pool is None else f"pool = {sql_literal(pool)}")
        return pc.unique(ids.column("id")).sort().to_pylist()
    source = filtered_candidates(where, with_pool=pool is not None)
    sql = f"SELECT DISTINCT id FROM {source}" + (f" WHERE {extra_condition}" if extra_condition else "")
    rels = ws.lance_relations({CANDIDATES: version} if version is not None else None)
    with ws.duck.connect(read_only=True, relations=rels) as con:
        con.execute("SET enable_external_access = false")
        try:
            rows = con.execute(sql + " ORDER BY id", [] if pool is None else [pool]).fetchall()
        except duckdb.Error as exc:
            raise_if_damage(exc)   # a Lance file that cannot be read is not the filter's fault
            raise InputError(f"{error_message(exc)} (filter: {where!r})", field=ref("where")) from exc
    return [r[0] for r in rows]


def read_candidates(ws, ids: list[str] | None = None, pool: str | None = None, version: int | None = None,
                    columns: list[str] | None = None) -> pa.Table:
    """Candidate rows (optionally only `ids`, in the order given, one row per id) at `version` (None: the
    recorded version, `candidates_version`)."""
    return read_candidates_from(ws.lance.dataset(CANDIDATES, candidates_version(ws) if version is None else version),
                                ids, pool, columns)


def read_candidates_from(ds, ids: list[str] | None = None, pool: str | None = None,
                         columns: list[str] | None = None) -> pa.Table:
    """`read_candidates` on an opened (pinned) candidates dataset: distributed workers, which never open the
    workspace, read through this."""
    filters = []
    if pool is not None:
        filters.append(f"pool = {sql_literal(pool)}")
    if ids is not None:
        filters.append("id IN " + sql_in_list(ids))
    filt = " AND ".join(filters) or None
    wanted_cols = None if columns is None else sorted(set(columns) | {"id"})
    table = ds.to_table(columns=wanted_cols, filter=filt)
    if ids is None:
        return table
    # first row per id, then reorder to match `ids`
    first = {}
    for i, cid in enumerate(table.column("id").to_pylist()):
        first.setdefault(cid, i)
    missing = [cid for cid in ids if cid not in first]
    if missing:
        raise LessdbError(f"{len(missing)} candidate ids not found (e.g. {missing[0]})")
    return table.take(pa.array([first[cid] for cid in ids], type=pa.int64()))


def iter_candidate_batches(ws, ids: list[str], pool: str | None = None, version: int | None = None,
                           batch_size: int = 1024) -> Iterator[pa.Table]:
    for start in range(0, len(ids), batch_size):
        yield read_candidates(ws, ids[start:start + batch_size], pool=pool, version=version)


def ids_by_pool_membership(ws, pool: str) -> tuple[set[str], set[str]]:
    """(ids already in `pool`, ids present in any other pool), read batch by batch (no copy of the table)."""
    in_pool: set[str] = set()
    elsewhere: set[str] = set()
    for batch in ws.lance.dataset(CANDIDATES).to_batches(columns=["id", "pool"], batch_size=65536):
        mine = pc.equal(batch.column("pool"), pool)
        in_pool.update(batch.column("id").filter(mine).to_pylist())
        elsewhere.update(batch.column("id").filter(pc.invert(mine)).to_pylist())
    return in_pool, elsewhere


def add_missing_columns(ws) -> int | None:
    """Bring an older `candidates` table up to CANDIDATE_SCHEMA (columns added since, e.g. `metadata`) before a
    write that has them; the caller holds the `candidates` write lock. One schema-only version, no data
    rewritten; versions before it keep their schema, so every recorded selection still reads what it read.
    Returns that version (None: nothing was missing)."""
    from .lance_tables import CANDIDATE_SCHEMA

    have = set(ws.lance.schema(CANDIDATES).names)
    missing = [f for f in CANDIDATE_SCHEMA if f.name not in have]
    return ws.lance.add_columns(CANDIDATES, missing) if missing else None


def has_column(ds, name: str) -> bool:
    """Whether an opened (pinned) candidates dataset has column `name` (versions before it was added do not)."""
    return name in ds.schema.names


def ingest_ids_present(ws) -> set[int]:
    """Ingest ids with rows in the *latest* version (writers and repair only; readers use candidates_version)."""
    return set(ws.lance.dataset(CANDIDATES).to_table(columns=["ingest_id"]).column("ingest_id").to_pylist())


def read_ingest_rows(ws, version: int, ingest_ids, columns: list[str], batch_rows: int = 1024):
    """Batches of the rows these ingests wrote, at `version`."""
    ds = ws.lance.dataset(CANDIDATES, version)
    filt = "ingest_id IN (" + ",".join(str(int(i)) for i in ingest_ids) + ")"
    yield from ds.to_batches(columns=columns, filter=filt, batch_size=batch_rows)


def delete_ingests(ws, ingest_ids) -> None:
    ws.lance.delete(CANDIDATES, "ingest_id IN (" + ",".join(str(int(i)) for i in ingest_ids) + ")")
