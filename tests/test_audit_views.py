"""The audit views after a replay (migration 0007): a replay repeats its original's members, so
`selection_sources` leaves it out and `selection_audit` says which rows are replays."""
from __future__ import annotations

from lessdb.ingest.pipeline import ingest_files
from lessdb.selection import SelectConfig, select
from lessdb.selection.select import replay
from lessdb.storage.user_sql import run_readonly_sql

from conftest import write_jsonl


def _records(n: int):
    for i in range(n):
        yield {"dataset": ["flan", "cot"][i % 2], "id": f"x{i}",
               "messages": [{"role": "user", "content": f"question {i}"},
                            {"role": "assistant", "content": "answer " * (1 + i % 5)}]}


def test_replays_are_marked_in_audit_and_left_out_of_source_mix(workspace, tmp_path):
    ingest_files(workspace, [write_jsonl(tmp_path / "p.jsonl", _records(40))], pool="p", progress=False)
    original = select(workspace, SelectConfig(task="bbh", method="random", count=10, seed=3, name="r",
                                              progress=False))
    again = replay(workspace, "r", progress=False)
    assert again.selection_id != original.selection_id

    audit = run_readonly_sql(workspace, "SELECT selection_id, replay_of, count(*) AS n FROM selection_audit "
                                        "GROUP BY ALL ORDER BY replay_of NULLS FIRST").as_dicts()
    assert audit == [{"selection_id": original.selection_id, "replay_of": None, "n": 10},
                     {"selection_id": again.selection_id, "replay_of": original.selection_id, "n": 10}]

    mix = run_readonly_sql(workspace, "SELECT selection_id, source_dataset, n FROM selection_sources").as_dicts()
    assert {r["selection_id"] for r in mix} == {original.selection_id}
    assert sum(r["n"] for r in mix) == 10
