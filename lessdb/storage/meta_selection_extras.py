"""Storage of what a selection records beyond its members (migration 0009): the target that claimed each member
and the tokens it spent of a budget (`selection_member_targets`), the candidates skipped as near-duplicates
and why (`selection_skips`), and the audit reads over them (`selection_targets` view)."""
from __future__ import annotations

import pyarrow as pa

_TABLES = {"members": ("selection_member_targets",
                       ["selection_id", "rank", "candidate_id", "target", "target_score", "budget_tokens"]),
           "skips": ("selection_skips",
                     ["selection_id", "seq", "candidate_id", "target", "score", "reason", "similar_to",
                      "similarity"])}


def insert_extras(con, extras: dict[str, pa.Table]) -> None:
    """Inside the selection's own transaction (storage.meta_selections.insert_selection)."""
    for key, table in extras.items():
        if table is None or table.num_rows == 0:
            continue
        name, cols = _TABLES[key]
        con.register("new_extra_rows", table)
        con.execute(f"INSERT INTO {name} ({', '.join(cols)}) SELECT {', '.join(cols)} FROM new_extra_rows")
        con.unregister("new_extra_rows")


def _rows(ws, sql: str, params: list) -> list[dict]:
    with ws.duck.connect(read_only=True) as con:
        rel = con.execute(sql, params)
        cols = [d[0] for d in rel.description]
        return [dict(zip(cols, r)) for r in rel.fetchall()]


def target_counts(ws, selection_id: str) -> list[dict]:
    """Per claiming target: members, mean and min target score, budget tokens (the selection_targets view)."""
    return _rows(ws, "SELECT target, n, mean_score, min_score, budget_tokens FROM selection_targets "
                     "WHERE selection_id = ? ORDER BY target_order, target", [selection_id])


def skips(ws, selection_id: str) -> list[dict]:
    return _rows(ws, "SELECT seq, candidate_id, target, score, reason, similar_to, similarity "
                     "FROM selection_skips WHERE selection_id = ? ORDER BY seq", [selection_id])
