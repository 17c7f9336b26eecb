"""Digests of selections' members (migrations/0018_selection_digests.sql): recorded with the members, checked
by `lessdb export` (refuses a changed selection) and `lessdb verify`.

`member_digest(selection_id, members)` is the one definition: sha256 over a version line, the selection id, and
one line per member in rank order — its rank, candidate id, pool, score (exactly: `float.hex`) and best
subtask. Any change to a member row, an added or a dropped member, or members moved to another selection
changes it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pyarrow as pa

DIGEST_FORMAT = "lessdb-selection-members/1"
RECORDED, BACKFILLED = "recorded", "backfilled"


def member_digest(selection_id: str, members: pa.Table) -> str:
    """sha256 hex of a selection's members (a table with rank, candidate_id, pool, score, best_subtask)."""
    cols = [members.column(c).to_pylist() for c in ("rank", "candidate_id", "pool", "score", "best_subtask")]
    h = hashlib.sha256(f"{DIGEST_FORMAT}\n{selection_id}\n".encode("utf-8"))
    for rank, cid, pool, score, best in sorted(zip(*cols), key=lambda r: r[0]):
        line = [int(rank), cid, pool, None if score is None else float(score).hex(), best]
        h.update((json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8"))
    return h.hexdigest()


def record_digest(con, selection_id: str, members: pa.Table, origin: str = RECORDED) -> str:
    """Insert the digest on an open connection (inside the transaction that inserts the members)."""
    digest = member_digest(selection_id, members)
    con.execute("INSERT INTO selection_digests (selection_id, members_sha256, n_members, origin) VALUES (?, ?, ?, ?)",
                [selection_id, digest, members.num_rows, origin])
    return digest


def recorded_digest(ws, selection_id: str) -> dict | None:
    """{members_sha256, n_members, origin, created_at} recorded for the selection, or None (an older selection)."""
    with ws.duck.connect(read_only=True) as con:
        row = con.execute("SELECT members_sha256, n_members, origin, created_at FROM selection_digests "
                          "WHERE selection_id = ?", [selection_id]).fetchone()
    return None if row is None else dict(zip(("members_sha256", "n_members", "origin", "created_at"), row))


@dataclass(frozen=True)
class DigestStatus:
    state: str                  # match | mismatch | none (recorded before digests: nothing to compare with)
    recorded: str | None
    actual: str
    origin: str | None = None


def digest_status(ws, selection_id: str) -> DigestStatus:
    """Whether the selection's members still match the digest recorded for them."""
    with ws.duck.connect(read_only=True) as con:
        actual = member_digest(selection_id, members_on(con, selection_id))
    rec = recorded_digest(ws, selection_id)
    if rec is None:
        return DigestStatus("none", None, actual)
    state = "match" if rec["members_sha256"] == actual else "mismatch"
    return DigestStatus(state, rec["members_sha256"], actual, rec["origin"])


def backfill_digest(ws, selection_id: str) -> str | None:
    """Record the current members' digest for a selection that has none (made before digests existed); returns
    it, or None if one was already recorded. What it protects from then on is the members as they are now."""
    with ws.duck.transaction() as con:
        if con.execute("SELECT count(*) FROM selection_digests WHERE selection_id = ?",
                       [selection_id]).fetchall()[0][0]:
            return None
        return record_digest(con, selection_id, members_on(con, selection_id), origin=BACKFILLED)


def members_on(con, selection_id: str) -> pa.Table:
    """A selection's members on an open connection: rank, candidate_id, pool, score, best_subtask, ordered by
    rank (what the digest covers; meta_selections.selection_members reads them with it)."""
    return con.sql("SELECT rank, candidate_id, pool, score, best_subtask FROM selection_members "
                   "WHERE selection_id = ? ORDER BY rank", params=[selection_id]).to_arrow_table()
