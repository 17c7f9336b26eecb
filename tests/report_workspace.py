"""A small real workspace for the report and notebook tests, built through the real pipeline with the tiny
model: ingest -> warmup -> featurize -> select (less, random, bm25, rds; and the unnormalized ablation when the
feature set stores raw gradient norms; and a two-target LESS mix "mix" of arith and quiz). Built once per test process and cached (both test modules use it).

The pool mixes three source datasets with different answer styles and lengths, so the audit plots have
something to show: "math" (arithmetic, like the task), "chat" (long free-form answers) and "trivia" (one-word
answers).
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path

from conftest import write_jsonl

from lessdb import LessdbError, Workspace
from lessdb.runs.config import build_warmup_config
from lessdb.featurize import FeaturizeConfig, featurize_run
from lessdb.ingest.pipeline import ingest_files
from lessdb.selection import SelectConfig, select
from lessdb.tasks.catalog import add_tasks
from lessdb.runs.warmup import run_warmup

TASK = "arith"
METHODS = ("less", "random", "bm25", "rds", "unnormalized")
CHAT_WORDS = ("the river runs past an old mill where people meet on sunday to trade bread and talk about "
              "weather and harvest and the long winter ahead").split()
TRIVIA = [("capital of France", "Paris"), ("largest planet", "Jupiter"), ("author of Hamlet", "Shakespeare"),
          ("colour of the sky", "Blue"), ("fastest land animal", "Cheetah"), ("boiling point of water", "100 C")]

_CACHE: dict[str, tuple[Path, dict]] = {}


def _records(seed: int = 0, n_per_source: int = 30) -> list[dict]:
    rng = random.Random(seed)
    recs = []
    for i in range(n_per_source):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        steps = " ".join(f"{a} plus {j} is {a + j}." for j in range(rng.randint(0, 2)))
        recs.append({"dataset": "math", "id": f"m{i}", "messages": [
            {"role": "user", "content": f"What is {a} + {b}?"},
            {"role": "assistant", "content": f"{steps} {a} + {b} = {a + b}. The answer is {a + b}.".strip()}]})
        words = " ".join(rng.choices(CHAT_WORDS, k=rng.randint(6, 18)))
        recs.append({"dataset": "chat", "id": f"c{i}", "messages": [
            {"role": "user", "content": f"Tell me a story {i}."},
            {"role": "assistant", "content": words.capitalize() + "."}]})
        q, ans = TRIVIA[i % len(TRIVIA)]
        recs.append({"dataset": "trivia", "id": f"t{i}", "messages": [
            {"role": "user", "content": f"Quiz {i}: the {q}?"},
            {"role": "assistant", "content": ans}]})
    return recs


def _task_lines() -> list[dict]:
    lines = []
    for a, b in ((3, 4), (12, 30), (7, 8)):
        lines.append({"subtask": "addition", "prompt": f"What is {a} + {b}?",
                      "completion": f"{a} + {b} = {a + b}. The answer is {a + b}."})
    for a, b in ((9, 4), (50, 8), (21, 7)):
        lines.append({"subtask": "subtraction", "prompt": f"What is {a} - {b}?",
                      "completion": f"{a} - {b} = {a - b}. The answer is {a - b}."})
    return lines


def build(root: Path) -> dict:
    """Build the workspace at `root`; returns {"run_id", "feature_set_id", "selections": {method: id},
    "skipped": {method: reason}}."""
    ws = Workspace.init(root)
    ingest_files(ws, [write_jsonl(root.parent / "pool.jsonl", _records())], pool="demo", progress=False)
    add_tasks(ws, TASK, file=write_jsonl(root.parent / "task.jsonl", _task_lines()))
    cfg = build_warmup_config("demo", model="tiny", percentage=0.3, lora_r=4, lora_alpha=16, max_seq_length=96,
                              epochs=2, batch_size=4, micro_batch_size=4, device="cpu")
    run_id = run_warmup(ws, cfg, progress=False, count_tokens=False).run_id
    fs = featurize_run(ws, FeaturizeConfig(run_id=run_id, dim=64, progress=False, batch_size=16, device="cpu"))
    info = {"run_id": run_id, "feature_set_id": fs.feature_set_id, "selections": {}, "skipped": {}}
    for method in METHODS:
        try:
            res = select(ws, SelectConfig(task=TASK, method=method, percentage=0.1, name=f"{TASK}-{method}",
                                          progress=False))
        except LessdbError as exc:   # e.g. the unnormalized ablation needs raw gradient norms
            info["skipped"][method] = str(exc)
            continue
        info["selections"][method] = res.selection_id
    # a second target and a two-target mix (round-robin), for the multi-target notebook cell
    add_tasks(ws, "quiz", file=write_jsonl(root.parent / "quiz.jsonl", [
        {"subtask": "capitals", "prompt": "Quiz: the capital of Italy?", "completion": "Rome"},
        {"subtask": "capitals", "prompt": "Quiz: the capital of Spain?", "completion": "Madrid"},
        {"subtask": "science", "prompt": "Quiz: the smallest planet?", "completion": "Mercury"}]))
    info["mix"] = select(ws, SelectConfig(task=[TASK, "quiz"], balance="round-robin", percentage=0.1, name="mix",
                                          progress=False)).selection_id
    return info


def built_workspace(tmp_root: Path) -> tuple[Path, dict]:
    """The cached demo workspace, copied into `tmp_root` (callers may write to their copy)."""
    if "ws" not in _CACHE:
        base = Path(tmp_root).parent / "report-demo-template"
        if base.exists():
            shutil.rmtree(base)
        base.mkdir(parents=True)
        _CACHE["ws"] = (base / "ws", build(base / "ws"))
    src, info = _CACHE["ws"]
    dst = Path(tmp_root) / "ws"
    shutil.copytree(src, dst)
    return dst, info
