"""The record of each Lance commit a distributed featurize driver made (migrations/0010_scale_out.sql): its
transaction uuid, units, rows and exclusions, so a killed driver's commits are reconciled exactly once. The lease
that lets one driver work on a job is meta_leases.py.
"""
from __future__ import annotations

from .meta_features import insert_exclusions
from .meta_leases import renew_lease


# -- commits of distributed drivers ----------------------------------------------------------------------------
COMMIT_COLUMNS = ("txn_uuid", "job_id", "feature_set_id", "role", "epoch", "engine", "read_version",
                  "lance_version", "units", "n_rows", "n_excluded", "n_fragments", "recovered")


def recorded_commits(ws, job_id: str) -> set[str]:
    with ws.duck.connect(read_only=True) as con:
        return {r[0] for r in con.execute("SELECT txn_uuid FROM feature_commits WHERE job_id = ?", [job_id]).fetchall()}


def record_commit(ws, commit: dict, owner: str, seconds: float, bytes_written: int,
                  exclusions: list[tuple[str, str, int, str, str]]) -> None:
    """After the Lance commit succeeded: the commit row, its exclusions and the job's counters, in one DuckDB
    transaction (a crash before it is repaired from the Lance transaction by `recover`)."""
    with ws.duck.transaction() as con:
        if con.execute("SELECT count(*) FROM feature_commits WHERE txn_uuid = ?", [commit["txn_uuid"]]).fetchone()[0]:
            return
        con.execute(f"INSERT INTO feature_commits ({', '.join(COMMIT_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(COMMIT_COLUMNS))})", [commit[c] for c in COMMIT_COLUMNS])
        insert_exclusions(con, exclusions)
        con.execute("UPDATE feature_jobs SET n_done = n_done + ?, n_excluded = n_excluded + ?, seconds = seconds + ?, "
                    "bytes_written = bytes_written + ?, lance_version = greatest(coalesce(lance_version, 0), ?), "
                    "updated_at = current_timestamp WHERE job_id = ?",
                    [commit["n_rows"], commit["n_excluded"], seconds, bytes_written, commit["lance_version"],
                     commit["job_id"]])
        renew_lease(con, commit["job_id"], owner)


def commit_rows(ws, job_id: str | None = None) -> list[dict]:
    with ws.duck.connect(read_only=True) as con:
        rows = con.execute(f"SELECT {', '.join(COMMIT_COLUMNS)} FROM feature_commits WHERE ? IS NULL OR job_id = ? "
                           "ORDER BY lance_version", [job_id, job_id]).fetchall()
    return [dict(zip(COMMIT_COLUMNS, r)) for r in rows]
