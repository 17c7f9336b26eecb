"""Validation windows for long few-shot prompts: `encode_window` left truncation against the full encoding;
`select --task bbh` with its defaults after a warmup at a short max_seq_length (each validation example keeps
its completion: cut on the left, window recorded, replay identical); and `--val-truncation right`, which
leaves no completion token there and must fail clearly, for gradient methods and RDS/RDS+ on a real (tiny)
pipeline."""
from __future__ import annotations

import json

import pytest

from lessdb import LessdbError, Workspace
from lessdb.featurize import validation_key
from lessdb.selection import SelectConfig, select
from lessdb.storage import meta_features
from lessdb.tasks.catalog import add_tasks, load_task
from lessdb.models.tiny import tiny_tokenizer
from lessdb.models.tokenization import IGNORE_INDEX, encode_conversation, encode_window

from conftest import run_cli, write_jsonl
from report_workspace import built_workspace

WARMUP_WINDOW = 96   # report_workspace's warmup (and so feature set) max_seq_length

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
    right = SelectConfig(task="longshot", method=method, count=5, val_max_seq_length=WINDOW, val_truncation="right",
                         progress=False)
    with pytest.raises(LessdbError, match="completion token.*drop val_truncation right"):
        select(ws, right)
    left = SelectConfig(task="longshot", method=method, count=5, val_max_seq_length=WINDOW,
                        name=f"long-{method}", progress=False)   # left is the default
    res = select(ws, left)
    assert len(res.members) == 5 and len({m.candidate_id for m in res.members}) == 5
    window = res.provenance["params"]["validation_window"]
    assert window == {"max_seq_length": WINDOW, "truncation": "left"}
    again = select(ws, SelectConfig(replay=f"long-{method}", progress=False))
    assert [(m.candidate_id, m.score) for m in again.members] == [(m.candidate_id, m.score) for m in res.members]


@pytest.mark.slow   # BBH's 81 validation examples at two checkpoints: ~12 CPU s each
@pytest.mark.parametrize("method", ["less", "rds"])
def test_select_task_bbh_just_works_after_a_short_warmup(long_task_ws, method):
    """The headline command with its defaults: BBH's 3-shot prompts (thousands of tokens for the byte-level
    tiny tokenizer) in the warmup's 96-token window. Every validation example keeps its completion."""
    ws = long_task_ws
    name = f"bbh-{method}"
    proc = run_cli("select", "--task", "bbh", "--method", method, "--count", "5", "--name", name, "--json",
                   workspace=ws.root)
    summary = json.loads(proc.stdout)
    params = summary["provenance"]["params"]
    assert params["validation_window"] == {"max_seq_length": WARMUP_WINDOW, "truncation": "left"}
    assert summary["k"] == 5 and "dropped_subtasks" not in params
    tok, task = tiny_tokenizer(), load_task(ws, "bbh")
    assert len(task.subtasks) == 27
    n_right_without_completion = 0
    for s, examples in task.subtasks.items():
        for ex in examples:
            full = encode_conversation(tok, ex.messages, 1 << 15)
            left = encode_window(tok, ex.messages, WARMUP_WINDOW, "left")
            assert full.total_tokens > WARMUP_WINDOW and left.input_ids == full.input_ids[-WARMUP_WINDOW:]
            assert left.completion_tokens > 0          # the completion tokens are in the window used
            n_right_without_completion += encode_window(tok, ex.messages, WARMUP_WINDOW, "right").completion_tokens == 0
    assert n_right_without_completion == 81         # the paper's right cut would have left nothing to score
    if method == "less":   # every example has a stored vector under its left-window key, none was excluded
        keys = {s: sorted(validation_key(ex.messages, WARMUP_WINDOW, WARMUP_WINDOW, "left") for ex in exs)
                for s, exs in task.subtasks.items()}
        assert {s: sorted(v) for s, v in params["validation_examples"].items()} == keys
        fsid = summary["provenance"]["feature_set_id"]
        for epoch in summary["provenance"]["checkpoints"]:
            excluded = meta_features.excluded_ids(ws, fsid, "validation", epoch)
            assert not {k for v in keys.values() for k in v} & set(excluded)
    again = json.loads(run_cli("select", "--replay", name, "--json", workspace=ws.root).stdout)
    assert again["identical"] is True
    assert again["provenance"]["params"]["validation_window"] == params["validation_window"]
