"""Validation windows for long few-shot prompts: `encode_window` left truncation against the full encoding,
and `select --val-max-seq-length N --val-truncation left` for gradient methods and RDS/RDS+ on a real (tiny)
pipeline, where right truncation leaves no completion token and must fail clearly."""
from __future__ import annotations

import pytest

from lessdb import LessdbError, Workspace
from lessdb.selection import SelectConfig, select
from lessdb.tasks import add_tasks
from lessdb.tiny import tiny_tokenizer
from lessdb.tokenization import IGNORE_INDEX, encode_conversation, encode_window

from conftest import write_jsonl
from report_workspace import built_workspace

LONG_PROMPT = "Example: what is 2 + 2? 2 + 2 = 4. The answer is 4.\n" * 12 + "What is 5 + 6?"
WINDOW = 48


def _conv(prompt=LONG_PROMPT, answer="5 + 6 = 11. The answer is 11."):
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def test_left_window_is_the_tail_of_the_full_encoding():
    tok = tiny_tokenizer()
    full = encode_conversation(tok, _conv(), 1 << 15)
    left = encode_window(tok, _conv(), WINDOW, "left")
    assert len(full.input_ids) > WINDOW and left.input_ids == full.input_ids[-WINDOW:]
    # the first kept token has no predecessor in the window, so it is never a target
    assert left.labels == [IGNORE_INDEX] + full.labels[-WINDOW + 1:]
    assert left.completion_tokens == full.completion_tokens > 0 and left.truncated
    right = encode_window(tok, _conv(), WINDOW, "right")
    assert right.input_ids == full.input_ids[:WINDOW] and right.completion_tokens == 0
    assert encode_window(tok, _conv("short?"), 512, "left") == encode_conversation(tok, _conv("short?"), 512)
    with pytest.raises(LessdbError, match="truncation 'middle'"):
        encode_window(tok, _conv(), WINDOW, "middle")


@pytest.fixture(scope="module")
def long_task_ws(tmp_path_factory):
    root, _ = built_workspace(tmp_path_factory.mktemp("windows"))
    ws = Workspace.open(root)
    lines = [{"subtask": s, "prompt": LONG_PROMPT.replace("5 + 6", q), "completion": f"{q} = {a}. The answer is {a}."}
             for s, q, a in (("add", "5 + 6", 11), ("add", "7 + 1", 8), ("sub", "9 - 4", 5))]
    add_tasks(ws, "longshot", file=write_jsonl(root.parent / "longshot.jsonl", lines))
    return ws


@pytest.mark.parametrize("method", ["less", "rds+"])
def test_left_window_scores_long_prompts_that_right_truncation_cannot(long_task_ws, method):
    ws = long_task_ws
    right = SelectConfig(task="longshot", method=method, count=5, val_max_seq_length=WINDOW, progress=False)
    with pytest.raises(LessdbError, match="completion token"):
        select(ws, right)
    left = SelectConfig(task="longshot", method=method, count=5, val_max_seq_length=WINDOW, val_truncation="left",
                        name=f"long-{method}", progress=False)
    res = select(ws, left)
    assert len(res.members) == 5 and len({m.candidate_id for m in res.members}) == 5
    window = res.provenance["params"]["validation_window"]
    assert window == {"max_seq_length": WINDOW, "truncation": "left"}
    again = select(ws, SelectConfig(replay=f"long-{method}", progress=False))
    assert [(m.candidate_id, m.score) for m in again.members] == [(m.candidate_id, m.score) for m in res.members]
