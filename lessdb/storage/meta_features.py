"""Metadata of feature sets, featurize jobs and exclusions (migrations/0004_features.sql).

Every call takes a short-lived DuckDB connection: featurize workers (possibly several processes, one per
shard) only touch the file for a moment per committed batch."""
from __future__ import annotations

import json
import os

import pyarrow as pa

from .sql_text import decode_json_columns

FEATURE_SET_COLUMNS = ("feature_set_id", "run_id", "lance_table", "grad_kind", "bias_correction", "sketch_kind",
                       "sketch_seed", "sketch_nnz", "n_params", "dim", "dtype", "compute_dtype", "max_seq_length",
                       "tokenizer_id", "module_order", "model_sha256", "params", "lessdb_version", "created_at")

JOB_COLUMNS = ("job_id", "feature_set_id", "role", "epoch", "shard_index", "shard_count", "where_sql",
               "candidates_version", "adapter_sha256", "optimizer_sha256", "optimizer_step", "status", "n_total",
               "n_done", "n_excluded", "seconds", "bytes_written", "lance_version", "pid", "started_at", "updated_at")


def _decode(row: dict) -> dict:
    return decode_json_columns(row, ("module_order", "params"))


def insert_feature_set(ws, row: dict) -> bool:
    """Insert the feature set unless it exists (several shard processes may race here); True if inserted."""
    cols = [c for c in FEATURE_SET_COLUMNS if c != "created_at"]
    values = [json.dumps(row[c]) if c in ("module_order", "params") else row[c] for c in cols]
    with ws.duck.transaction() as con:
        if con.execute("SELECT count(*) FROM feature_sets WHERE feature_set_id = ?",
                       [row["feature_set_id"]]).fetchone()[0]:
            return False
        con.execute(f"INSERT INTO feature_sets ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", values)
    return True


def feature_set_row(ws, feature_set_id: str) -> dict | None:
    with ws.duck.connect(read_only=True) as con:
        row = con.execute(f"SELECT {', '.join(FEATURE_SET_COLUMNS)} FROM feature_sets WHERE feature_set_id = ?",
                          [feature_set_id]).fetchone()
    return None if row is None else _decode(dict(zip(FEATURE_SET_COLUMNS, row)))


def feature_set_rows(ws, run_id: str | None = None) -> list[dict]:
    with ws.duck.connect(read_only=True) as con:
        rows = con.execute(f"SELECT {', '.join(FEATURE_SET_COLUMNS)} FROM feature_sets "
                           "WHERE ? IS NULL OR run_id = ? ORDER BY created_at, feature_set_id",
                           [run_id, run_id]).fetchall()
        counts = dict(((fs, role, epoch), (done, excl)) for fs, role, epoch, done, excl in con.execute(
            "SELECT feature_set_id, role, epoch, sum(n_done), sum(n_excluded) FROM feature_jobs "
            "GROUP BY ALL").fetchall())
    out = []
    for r in rows:
        d = _decode(dict(zip(FEATURE_SET_COLUMNS, r)))
        d["jobs"] = {f"{role}/{epoch}": {"done": int(done), "excluded": int(excl)}
                     for (fs, role, epoch), (done, excl) in sorted(counts.items()) if fs == d["feature_set_id"]}
        out.append(d)
    return out


def start_job(ws, job: dict, owner: str | None = None, engine: str = "local") -> dict:
    """Create the job row, or mark an existing one running again (a rerun resumes it). Returns the row.
    `owner`: take the driver lease on the row for this process (refused while another live driver holds an
    incompatible one; see meta_leases). `n_done` / `n_excluded`: the job's examples already stored / excluded,
    counted from the stored rows (so a job killed between its Lance write and its DuckDB progress record
    starts again from the truth)."""
    from . import meta_leases

    counts = [job.get("n_done"), job.get("n_excluded")]   # None: keep what the row says
    with ws.duck.transaction() as con:
        if owner is not None:
            meta_leases.check_lease(con, {**job, "engine": engine}, owner)
        exists = con.execute("SELECT count(*) FROM feature_jobs WHERE job_id = ?", [job["job_id"]]).fetchone()[0]
        if exists:
            con.execute("UPDATE feature_jobs SET status = 'running', where_sql = ?, candidates_version = ?, "
                        "adapter_sha256 = ?, optimizer_sha256 = ?, optimizer_step = ?, n_total = ?, pid = ?, "
                        "n_done = coalesce(?, n_done), n_excluded = coalesce(?, n_excluded), "
                        "updated_at = current_timestamp WHERE job_id = ?",
                        [job.get("where_sql"), job.get("candidates_version"), job.get("adapter_sha256"),
                         job.get("optimizer_sha256"), job.get("optimizer_step"), job.get("n_total"), os.getpid(),
                         *counts, job["job_id"]])
        else:
            con.execute("INSERT INTO feature_jobs (job_id, feature_set_id, role, epoch, shard_index, shard_count, "
                        "where_sql, candidates_version, adapter_sha256, optimizer_sha256, optimizer_step, status, "
                        "n_total, pid, n_done, n_excluded) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?)",
                        [job["job_id"], job["feature_set_id"], job["role"], job["epoch"], job["shard_index"],
                         job["shard_count"], job.get("where_sql"), job.get("candidates_version"),
                         job.get("adapter_sha256"), job.get("optimizer_sha256"), job.get("optimizer_step"),
                         job.get("n_total"), os.getpid(), *[c or 0 for c in counts]])
        if owner is not None:
            meta_leases.take_lease(con, job["job_id"], owner, engine)
        row = con.execute(f"SELECT {', '.join(JOB_COLUMNS)} FROM feature_jobs WHERE job_id = ?",
                          [job["job_id"]]).fetchone()
    return dict(zip(JOB_COLUMNS, row))


def insert_exclusions(con, exclusions) -> None:
    """Record (feature_set_id, role, epoch, example_id, reason) rows inside the caller's transaction; a row
    already recorded (a recomputed batch) is kept as it was."""
    if not exclusions:
        return
    table = pa.table({"feature_set_id": [e[0] for e in exclusions], "role": [e[1] for e in exclusions],
                      "epoch": pa.array([e[2] for e in exclusions], pa.int32()),
                      "example_id": [e[3] for e in exclusions], "reason": [e[4] for e in exclusions]})
    con.register("new_exclusions", table)
    con.execute("INSERT INTO feature_exclusions SELECT * FROM new_exclusions ON CONFLICT DO NOTHING")
    con.unregister("new_exclusions")


def record_progress(ws, job_id: str, *, done: int, excluded: int, seconds: float, bytes_written: int,
                    lance_version: int | None, exclusions: list[tuple[str, str, int, str, str]] = ()) -> None:
    """Add one committed batch's counts to the job, and record its exclusions, in one transaction.
    `exclusions`: (feature_set_id, role, epoch, example_id, reason)."""
    with ws.duck.transaction() as con:
        insert_exclusions(con, exclusions)
        con.execute("UPDATE feature_jobs SET n_done = n_done + ?, n_excluded = n_excluded + ?, "
                    "seconds = seconds + ?, bytes_written = bytes_written + ?, "
                    "lance_version = coalesce(?, lance_version), updated_at = current_timestamp, "
                    "lease_expires_at = CASE WHEN lease_owner IS NULL THEN NULL "
                    "ELSE current_timestamp + INTERVAL 600 SECOND END WHERE job_id = ?",   # meta_leases TTL
                    [done, excluded, seconds, bytes_written, lance_version, job_id])


def finish_job(ws, job_id: str, status: str = "complete", counts: dict | None = None) -> None:
    """Set the job's status and, with `counts` ({n_total, n_done, n_excluded}, any subset), its counts as
    recounted from the stored rows."""
    counts = counts or {}
    sets = "".join(f", {c} = ?" for c in ("n_total", "n_done", "n_excluded") if c in counts)
    values = [counts[c] for c in ("n_total", "n_done", "n_excluded") if c in counts]
    with ws.duck.transaction() as con:
        con.execute(f"UPDATE feature_jobs SET status = ?{sets}, updated_at = current_timestamp, lease_owner = NULL, "
                    "lease_expires_at = NULL WHERE job_id = ?", [status, *values, job_id])


def exclusion_counts(ws, feature_set_id: str) -> dict[tuple[str, int], int]:
    """(role, epoch) -> examples recorded as excluded."""
    with ws.duck.connect(read_only=True) as con:
        rows = con.execute("SELECT role, epoch, count(*) FROM feature_exclusions WHERE feature_set_id = ? "
                           "GROUP BY ALL", [feature_set_id]).fetchall()
    return {(r, int(e)): int(n) for r, e, n in rows}


def excluded_ids(ws, feature_set_id: str, role: str, epoch: int) -> dict[str, str]:
    with ws.duck.connect(read_only=True) as con:
        return dict(con.execute("SELECT example_id, reason FROM feature_exclusions WHERE feature_set_id = ? "
                                "AND role = ? AND epoch = ?", [feature_set_id, role, epoch]).fetchall())


def job_rows(ws, feature_set_id: str | None = None) -> list[dict]:
    with ws.duck.connect(read_only=True) as con:
        rows = con.execute(f"SELECT {', '.join(JOB_COLUMNS)} FROM feature_jobs WHERE ? IS NULL OR feature_set_id = ? "
                           "ORDER BY feature_set_id, role, epoch, shard_index", [feature_set_id, feature_set_id]
                           ).fetchall()
    return [dict(zip(JOB_COLUMNS, r)) for r in rows]
