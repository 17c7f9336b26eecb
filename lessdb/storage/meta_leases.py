"""The driver lease on feature job rows (migrations/0010_scale_out.sql): who may work on a job now.

Lease rule: at most one driver per (feature set, role, checkpoint) at a time, except local `--shard i/n` jobs
of the same n with different i (their key spaces are disjoint by construction). A lease is live while its
owner process runs (checked by pid and start time on the owner's host) or, for owners on other hosts, until
`lease_expires_at` (refreshed by every commit). A killed driver's lease is therefore free at once for a rerun
on the same host, and after the TTL elsewhere.
"""
from __future__ import annotations

import os
import socket

from ..errors import LessdbError

LEASE_TTL_SECONDS = 600


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (None: no such process): tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def lease_owner(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or '?'}"


def owner_alive(owner: str) -> bool | None:
    """True/False for an owner on this host; None where it cannot be told from here (another host)."""
    host, _, rest = owner.partition(":")
    pid_text, _, ticks = rest.partition(":")
    if host != socket.gethostname():
        return None
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    now = _start_ticks(pid)
    return now is not None and (ticks in ("", "?") or now == ticks)


def _compatible(job: dict, other: dict) -> bool:
    """Two jobs of one (feature set, role, checkpoint) may run at once only as disjoint local shards."""
    return (job["job_id"] != other["job_id"] and job.get("engine", "local") == "local"
            and other.get("engine") == "local" and int(job["shard_count"]) == int(other["shard_count"]) > 1
            and int(job["shard_index"]) != int(other["shard_index"]))


def check_lease(con, job: dict, owner: str) -> None:
    """Inside the caller's transaction: refuse if a live, incompatible lease exists on the job's
    (feature set, role, checkpoint)."""
    rows = con.execute(
        "SELECT job_id, shard_index, shard_count, engine, lease_owner, lease_expires_at < current_timestamp "
        "FROM feature_jobs WHERE feature_set_id = ? AND role = ? AND epoch = ? AND status = 'running' "
        "AND lease_owner IS NOT NULL AND lease_owner <> ?",
        [job["feature_set_id"], job["role"], int(job["epoch"]), owner]).fetchall()
    for job_id, index, count, engine, other_owner, expired in rows:
        alive = owner_alive(other_owner)
        if alive is False or (alive is None and expired):
            continue
        other = {"job_id": job_id, "shard_index": index, "shard_count": count, "engine": engine}
        if not _compatible(job, other):
            raise LessdbError(
                f"job {job_id} ({engine or 'local'} engine) is being run by {other_owner} and holds the lease on "
                f"feature set {job['feature_set_id']} {job['role']} checkpoint {job['epoch']}; wait for it to finish "
                f"(or stop it: a killed driver's lease frees itself)")


def take_lease(con, job_id: str, owner: str, engine: str) -> None:
    con.execute("UPDATE feature_jobs SET engine = ?, lease_owner = ?, "
                f"lease_expires_at = current_timestamp + INTERVAL {LEASE_TTL_SECONDS} SECOND WHERE job_id = ?",
                [engine, owner, job_id])


def renew_lease(con, job_id: str, owner: str) -> None:
    con.execute(f"UPDATE feature_jobs SET lease_expires_at = current_timestamp + INTERVAL {LEASE_TTL_SECONDS} "
                "SECOND WHERE job_id = ? AND lease_owner = ?", [job_id, owner])


def release_lease(ws, job_id: str, owner: str) -> None:
    with ws.duck.transaction() as con:
        con.execute("UPDATE feature_jobs SET lease_owner = NULL, lease_expires_at = NULL "
                    "WHERE job_id = ? AND lease_owner = ?", [job_id, owner])


def live_leases(ws) -> list[dict]:
    """Feature jobs whose driver still holds its lease (vacuum must not run then)."""
    with ws.duck.connect(read_only=True) as con:
        rows = con.execute("SELECT job_id, engine, lease_owner, lease_expires_at < current_timestamp FROM "
                           "feature_jobs WHERE status = 'running' AND lease_owner IS NOT NULL").fetchall()
    out = []
    for job_id, engine, owner, expired in rows:
        alive = owner_alive(owner)
        if alive or (alive is None and not expired):
            out.append({"job_id": job_id, "engine": engine, "owner": owner})
    return out
