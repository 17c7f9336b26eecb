"""Queries behind `lessdb report` and the audit notebooks: selection members joined with candidate metadata
(the `selection_audit` view) and the metadata of the filtered pool a selection was drawn from, both read at the
candidates version the selection recorded (so a report shows what the selection saw, not later appends).
"""
from __future__ import annotations

from .lance_tables import CANDIDATES
from .user_filter import filtered_candidates

MEMBER_COLUMNS = ("rank", "score", "best_subtask", "candidate_id", "pool", "source_dataset", "source_id", "n_turns",
                  "prompt_chars", "completion_chars", "total_chars", "messages")
POOL_COLUMNS = ("id", "source_dataset", "n_turns", "prompt_chars", "completion_chars", "total_chars")


def _relations(ws, candidates_version: int | None) -> dict:
    return ws.lance_relations({CANDIDATES: candidates_version} if candidates_version is not None else None)


def audit_members(ws, selection_id: str, candidates_version: int | None, with_text: bool = True) -> list[dict]:
    """Every member of a selection with its candidate metadata (and messages), ordered by rank."""
    cols = [c for c in MEMBER_COLUMNS if with_text or c != "messages"]
    with ws.duck.connect(read_only=True, relations=_relations(ws, candidates_version)) as con:
        con.execute("SET enable_external_access = false")
        table = con.sql(f"SELECT {', '.join(cols)} FROM selection_audit WHERE selection_id = ? ORDER BY rank",
                        params=[selection_id]).to_arrow_table()
    return table.to_pylist()


def pool_metadata(ws, pool: str, where: str | None, candidates_version: int | None) -> list[dict]:
    """Metadata of every candidate of `pool` that passes the selection's SQL filter (one row per id)."""
    sql = (f"SELECT {', '.join(POOL_COLUMNS)} FROM {filtered_candidates(where)}"
           " QUALIFY row_number() OVER (PARTITION BY id ORDER BY id) = 1 ORDER BY id")
    with ws.duck.connect(read_only=True, relations=_relations(ws, candidates_version)) as con:
        con.execute("SET enable_external_access = false")
        return con.sql(sql, params=[pool]).to_arrow_table().to_pylist()


def member_ids(ws, selection_ids: list[str]) -> dict[str, list[str]]:
    """selection_id -> member candidate ids in rank order."""
    out: dict[str, list[str]] = {s: [] for s in selection_ids}
    if not selection_ids:
        return out
    with ws.duck.connect(read_only=True) as con:
        rows = con.execute("SELECT selection_id, candidate_id FROM selection_members "
                           "WHERE list_contains(?, selection_id) ORDER BY selection_id, rank",
                           [list(selection_ids)]).fetchall()
    for sid, cid in rows:
        out[sid].append(cid)
    return out


def subtask_counts(ws, selection_ids: list[str]) -> list[dict]:
    """Members per (selection, best subtask)."""
    if not selection_ids:
        return []
    with ws.duck.connect(read_only=True) as con:
        rows = con.execute("SELECT selection_id, best_subtask, count(*) FROM selection_members "
                           "WHERE list_contains(?, selection_id) GROUP BY ALL ORDER BY ALL",
                           [list(selection_ids)]).fetchall()
    return [{"selection_id": r[0], "best_subtask": r[1], "n": r[2]} for r in rows]
