"""The selection-method registry: a method registered in this test module runs through the real `select` path
(plan -> score -> top k -> record), its typed parameters are recorded and a replay rebuilds them; method
parameters reach the built-in methods from the CLI; records without a parameter take its default."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from lessdb import LessdbError
from lessdb.tasks import catalog as tasks
from lessdb.ingest.pipeline import ingest_files
from lessdb.selection import SelectConfig, Scores, method_names, register_method, select
from lessdb.selection.methods import get_method, unregister_method
from lessdb.selection.reading import iter_texts, scorable_mask

from conftest import run_cli, write_jsonl

WORDS = ["apple", "river", "logic", "deduce", "python", "matrix", "ocean", "tree", "sort", "date", "sport"]


@dataclass(frozen=True)
class LengthParams:
    longest: bool = True
    scale: float = 1.0


def answer_length(ws, plan, ids):
    """Toy method: the length of a candidate's text (or its negative), times `scale`."""
    mask, unscorable = scorable_mask(ws, plan, ids)
    scores = np.zeros((len(ids), 1))
    for row, text in iter_texts(ws, plan, ids, mask):
        scores[row, 0] = plan.method_params.scale * (len(text) if plan.method_params.longest else -len(text))
    return Scores(scores, mask, ("*",), unscorable)


@pytest.fixture
def throwaway():
    register_method("test-length", params=LengthParams, help="toy")(answer_length)
    yield get_method("test-length")
    unregister_method("test-length")


def _conv(i: int, rng) -> dict:
    prompt = " ".join(rng.choice(WORDS, size=3 + i % 5))
    answer = " ".join(rng.choice(WORDS, size=1 + (i * 7) % 13))
    return {"messages": [{"role": "user", "content": f"q{i}: {prompt}"},
                         {"role": "assistant", "content": f"a{i}: {answer}"}], "id": f"orig-{i}"}


@pytest.fixture
def pool(workspace, tmp_path):
    """30 candidates in pool `p` and a 2-subtask task `toy` (no run: text methods need none)."""
    rng = np.random.default_rng(3)
    recs = [_conv(i, rng) for i in range(30)]
    write_jsonl(tmp_path / "pool.jsonl", recs)
    ingest_files(workspace, [tmp_path / "pool.jsonl"], pool="p", progress=False)
    task_recs = [{"subtask": sub, "prompt": f"{sub} {k}: " + " ".join(rng.choice(WORDS, 5)),
                  "completion": " ".join(rng.choice(WORDS, 3))} for sub in ("alpha", "beta") for k in range(2)]
    write_jsonl(tmp_path / "task.jsonl", task_recs)
    tasks.add_tasks(workspace, "toy", file=tmp_path / "task.jsonl")
    return {"ws": workspace, "recs": recs}


def _texts(ws) -> dict[str, str]:
    """candidate id -> the text BM25/length see, read independently through the storage API."""
    from lessdb.storage.candidates import read_candidates

    table = read_candidates(ws, pool="p")
    return {cid: "\n\n".join(m["content"] for m in msgs)
            for cid, msgs in zip(table.column("id").to_pylist(), table.column("messages").to_pylist())}


def test_registered_method_is_selected_recorded_and_replayed(pool, throwaway):
    ws = pool["ws"]
    assert "test-length" in method_names()
    res = select(ws, SelectConfig(task="toy", method="test-length", pool="p", count=5,
                                  method_params={"longest": "false", "scale": 2}, progress=False))
    texts = _texts(ws)
    expected = sorted(texts, key=lambda c: (len(texts[c]), c))[:5]          # shortest first, ties by id
    assert [m.candidate_id for m in res.members] == expected
    assert [m.score for m in res.members] == [-2.0 * len(texts[c]) for c in expected]
    assert res.provenance["params"]["test-length"] == {"longest": False, "scale": 2.0}
    again = select(ws, SelectConfig(replay=res.selection_id, progress=False))
    assert again.identical and again.replay_of == res.selection_id
    assert again.provenance["params"]["test-length"] == {"longest": False, "scale": 2.0}
    default = select(ws, SelectConfig(task="toy", method="test-length", pool="p", count=5, progress=False))
    assert [m.candidate_id for m in default.members] == sorted(texts, key=lambda c: (-len(texts[c]), c))[:5]


def test_method_parameter_errors_are_clear(pool, throwaway):
    ws = pool["ws"]
    with pytest.raises(LessdbError, match="has no parameter 'width'.*longest, scale"):
        select(ws, SelectConfig(task="toy", method="test-length", pool="p", method_params={"width": 3}))
    with pytest.raises(LessdbError, match="expected true or false"):
        select(ws, SelectConfig(task="toy", method="test-length", pool="p", method_params={"longest": "maybe"}))
    with pytest.raises(LessdbError, match="takes no parameters"):
        select(ws, SelectConfig(task="toy", method="random", pool="p", method_params={"k1": 1}))
    with pytest.raises(LessdbError, match="choose one of .*test-length"):
        select(ws, SelectConfig(task="toy", method="nope", pool="p"))
    # a record without a parameter (an older lessdb's) takes today's default
    assert get_method("bm25").make_params({"k1": 1.2}) == get_method("bm25").params(k1=1.2, b=0.75, epsilon=0.25)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def test_bm25_parameters_from_the_cli_are_used_recorded_and_replayed(pool):
    ws = pool["ws"]
    out = run_cli("select", "--task", "toy", "--method", "bm25", "--count", "4", "--method-param", "k1=0.9",
                  "--method-param", "b=0.3", "--json", workspace=ws.root)
    res = json.loads(out.stdout)
    assert res["provenance"]["params"]["bm25"] == {"k1": 0.9, "b": 0.3, "epsilon": 0.25,
                                                   "tokenizer": "lowercase \\w+ words"}
    # independent: rank-bm25 over the pool with the same k1/b; mean within a subtask, max over subtasks
    texts = _texts(ws)
    ids = sorted(texts)
    okapi = BM25Okapi([_words(texts[c]) for c in ids], k1=0.9, b=0.3, epsilon=0.25)
    task = tasks.load_task(ws, "toy")
    per_subtask = []
    for sub in sorted(task.subtasks):
        qs = ["\n\n".join(m["content"] for m in ex.messages) for ex in task.subtasks[sub]]
        per_subtask.append(np.mean([okapi.get_scores(_words(q)) for q in qs], axis=0))
    best = np.max(per_subtask, axis=0)
    order = sorted(range(len(ids)), key=lambda i: (-best[i], ids[i]))[:4]
    assert [m["candidate_id"] for m in res["members_head"]] == [ids[i] for i in order]
    assert np.allclose([m["score"] for m in res["members_head"]], best[order])
    replayed = json.loads(run_cli("select", "--replay", res["selection_id"], "--json", workspace=ws.root).stdout)
    assert replayed["identical"] is True
    bad = run_cli("select", "--task", "toy", "--method", "bm25", "--method-param", "k1", workspace=ws.root,
                  check=False)
    assert bad.returncode != 0 and "KEY=VALUE" in bad.stderr and "Traceback" not in bad.stderr


def test_registry_lists_every_family_and_storage_names_agree():
    from lessdb.selection.plan import CANDIDATES
    from lessdb.storage.lance_tables import CANDIDATES as STORED

    assert CANDIDATES == STORED
    names = method_names()
    for name in ("less", "sgd", "sign", "unnormalized", "random", "bm25", "dsir", "rds", "rds+"):
        assert name in names
    assert {get_method(n).family for n in names} >= {"gradient", "text", "hidden"}
