"""Who is running a job right now: owner locks that die with their process.

A process that runs a warmup or train run, a featurize job or a validation-feature fill holds an exclusive
`flock` on `<workspace>/locks/owners/<kind>/<id>.lock` for as long as it works. The kernel releases the lock
when the process ends in any way (kill -9 included), so "is somebody still running X?" is a non-blocking lock
attempt, immune to pid reuse and to clocks. The file also holds the owner's pid, host and start time, for
messages only. A row that DuckDB still marks `running` whose owner lock is free belongs to a dead process: it
is shown as `interrupted` (and `lessdb verify --repair` records that).

flock is per open file description, so a second lock attempt from the same process also sees the lock held:
in-process checks answer the same as another process would. Local file systems only (flock over NFS is not
reliable); lessdb workspaces are local directories.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import LessdbError

RUN = "run"                # warmup and train runs (id: run_id)
FEATURE_JOB = "featurize"  # candidate feature jobs (id: job_id)
VALIDATION = "validation"  # filling the validation-feature cache of one feature set and checkpoint

INTERRUPTED = "interrupted"


def owner_path(ws, kind: str, ident: str) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in ident)
    return Path(ws.root) / "locks" / "owners" / kind / f"{safe}.lock"


@contextmanager
def owning(ws, kind: str, ident: str, wait: bool = False, what: str | None = None) -> Iterator[None]:
    """Hold the owner lock of (kind, ident) while the block runs. Another live owner: wait for it (`wait`),
    else raise a LessdbError naming its pid and host."""
    path = owner_path(ws, kind, ident)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _describe(read_owner(path))
            if not wait:
                raise LessdbError(f"{what or kind + ' ' + ident} is being run by another process ({other}); "
                                  "wait for it to finish") from None
            print(f"lessdb: waiting for {other}, which is running {what or kind + ' ' + ident}", file=sys.stderr,
                  flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
        handle.flush()
        yield
    finally:
        # the file stays: unlinking it could let a second owner lock a fresh inode while a third sees the old
        handle.close()   # closing releases the flock


def is_alive(ws, kind: str, ident: str) -> bool:
    """Whether some process holds the owner lock of (kind, ident) now."""
    path = owner_path(ws, kind, ident)
    if not path.exists():
        return False
    with open(path, "r") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def read_owner(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def last_owner(ws, kind: str, ident: str) -> dict:
    """pid, host and start time of the last process that owned (kind, ident) ({} if none)."""
    return read_owner(owner_path(ws, kind, ident))


def live_status(ws, kind: str, ident: str, status: str) -> str:
    """The status to show: `running` becomes `interrupted` when no live process owns the row."""
    if status == "running" and not is_alive(ws, kind, ident):
        return INTERRUPTED
    return status


def _describe(owner: dict) -> str:
    if not owner:
        return "a process"
    return f"pid {owner.get('pid')} on {owner.get('host')} since {owner.get('started')}"
