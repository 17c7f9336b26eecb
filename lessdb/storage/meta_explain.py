"""Storage of selection explanations (migration 0009: selection_explanations, selection_explanation_examples;
the selection_explain view). Rows are replaced per (selection, member), so explaining twice stores once."""
from __future__ import annotations

import pyarrow as pa


def store_explanations(ws, selection_id: str, members: list[dict]) -> None:
    parts, examples = [], []
    for m in members:
        for s in m["subtasks"]:
            for p in s["checkpoints"]:
                parts.append({"selection_id": selection_id, "rank": m["rank"], "candidate_id": m["candidate_id"],
                              "subtask": s["subtask"], "epoch": p["epoch"], "weight": p["weight"],
                              "cosine": p["cosine"], "part": p["part"]})
            for i, ex in enumerate(s["top_examples"], 1):
                examples.append({"selection_id": selection_id, "rank": m["rank"], "subtask": s["subtask"],
                                 "position": i, "example_key": ex["example_key"], "example": ex["example"],
                                 "contribution": ex["contribution"]})
    if not parts:
        return
    ranks = sorted({m["rank"] for m in members})
    with ws.duck.transaction() as con:
        for table in ("selection_explanations", "selection_explanation_examples"):
            con.execute(f"DELETE FROM {table} WHERE selection_id = ? AND list_contains(?, rank)",
                        [selection_id, ranks])
        con.register("new_parts", pa.Table.from_pylist(parts))
        con.execute("INSERT INTO selection_explanations SELECT selection_id, rank, candidate_id, subtask, epoch, "
                    "weight, cosine, part FROM new_parts")
        con.unregister("new_parts")
        if examples:
            con.register("new_examples", pa.Table.from_pylist(examples))
            con.execute("INSERT INTO selection_explanation_examples SELECT selection_id, rank, subtask, position, "
                        "example_key, example, contribution FROM new_examples")
            con.unregister("new_examples")
