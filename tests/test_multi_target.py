"""Several targets in one selection (`--task A --task B [--balance ...]`) and the greedy picker behind every
selection: independent recomputations of max / round-robin / proportional, recorded per-member targets, the
`selection_targets` view, `show`, exact replay, and single-task selections recorded exactly as before."""
from __future__ import annotations

import numpy as np
import pytest

from lessdb import LessdbError
from lessdb.tasks import catalog as tasks
from lessdb.selection import SelectConfig, select, show_selection
from lessdb.selection.picking import pick, split_by_weight
from lessdb.selection.scoring import top_k
from lessdb.selection.targets import parse_targets

from conftest import write_jsonl
from test_select import (WEIGHTS, WORDS, _expected_scores, _stored, _unit, _val_key, _write, cli,  # noqa: F401
                         cli_json, store)


# -- the picker, pure ------------------------------------------------------------------------------------------
def _ids(n):
    return [f"c{i:03d}" for i in range(n)]


def test_pick_max_equals_top_k_with_id_ties():
    rng = np.random.default_rng(0)
    scores = np.round(rng.standard_normal((50, 1)), 1)   # many ties
    ids = _ids(50)[::-1]
    valid = rng.random(50) > 0.1
    got = pick(scores, ids, valid, k=12)
    assert got.rows == list(top_k(scores[:, 0], ids, 12, valid)) and got.stopped_by == "count"


def test_round_robin_and_proportional_against_a_plain_simulation():
    rng = np.random.default_rng(1)
    s = rng.standard_normal((40, 3))
    ids = _ids(40)
    valid = np.ones(40, dtype=bool)

    def simulate(turns):
        orders = [sorted(range(40), key=lambda r: (-s[r, t], ids[r])) for t in range(3)]
        taken, out = set(), []
        for t in turns:
            r = next(r for r in orders[t] if r not in taken)
            taken.add(r)
            out.append((r, t))
        return out

    rr = pick(s, ids, valid, balance="round-robin", k=10)
    assert list(zip(rr.rows, rr.targets)) == simulate([0, 1, 2] * 3 + [0])
    prop = pick(s, ids, valid, balance="proportional", weights=[2, 1, 1], k=8)
    assert sorted(np.bincount(prop.targets, minlength=3)) == [2, 2, 4] and np.bincount(prop.targets)[0] == 4
    assert split_by_weight(10, [2, 1, 1]) == [5, 3, 2] and split_by_weight(7, [1, 1]) == [4, 3]
    mx = pick(s, ids, valid, balance="max", k=5)
    best = s.max(axis=1)
    assert mx.rows == sorted(range(40), key=lambda r: (-best[r], ids[r]))[:5]
    assert mx.targets == [int(s[r].argmax()) for r in mx.rows]


def test_budget_is_a_prefix_rule_and_reject_is_recorded():
    s = np.array([[5.0], [4.0], [3.0], [2.0], [1.0]])
    ids = _ids(5)
    tokens = np.array([10, 20, 50, 5, 5])
    got = pick(s, ids, np.ones(5, bool), k=None, tokens=tokens, max_tokens=40)
    assert got.rows == [0, 1] and got.tokens_used == 30 and got.stopped_by == "budget"   # row 2 does not fit
    got = pick(s, ids, np.ones(5, bool), k=2, tokens=tokens, max_tokens=1000)
    assert got.rows == [0, 1] and got.stopped_by == "count"
    rej = pick(s, ids, np.ones(5, bool), k=3, reject=lambda r, chosen: ("dup", chosen[0], 0.99) if r == 1 else None)
    assert rej.rows == [0, 2, 3] and [(x.row, x.reason, x.other_row) for x in rej.skips] == [(1, "dup", 0)]


def test_parse_targets_errors_are_clear():
    assert [(t.name, t.weight) for t in parse_targets(["bbh:2", "mmlu"])] == [("bbh", 2.0), ("mmlu", 1.0)]
    for bad, msg in ((["bbh:x"], "not a number"), (["bbh:-1"], "positive"), (["a", "a"], "twice"), ([":2"], "NAME")):
        with pytest.raises(LessdbError, match=msg):
            parse_targets(bad)


# -- end to end on a real workspace ------------------------------------------------------------------------------
@pytest.fixture
def two_tasks(store):
    """A second task `toy2` (2 subtasks) with validation features stored like toy's."""
    ws, rng, tmp = store["ws"], store["rng"], store["tmp"]
    recs = [{"subtask": sub, "prompt": f"{sub} q{k}: " + " ".join(rng.choice(WORDS, 5)),
             "completion": f"{sub} a{k} " + " ".join(rng.choice(WORDS, 3))}
            for sub in ("delta", "eps") for k in range(2)]
    write_jsonl(tmp / "task2.jsonl", recs)
    tasks.add_tasks(ws, "toy2", file=tmp / "task2.jsonl")
    task2 = tasks.load_task(ws, "toy2")
    for epoch in WEIGHTS:
        val_ids = [_val_key(m) for _, m in task2.examples()]
        _write(ws, epoch, "validation", val_ids, _unit(rng.standard_normal((len(val_ids), 16))))
    return dict(store, task2=task2)


def _per_target(ws, store):
    a = _expected_scores(ws, store["task"], "paper", store["ids"])
    b = _expected_scores(ws, store["task2"], "paper", store["ids"])
    return a, b


def test_max_balance_is_the_max_over_every_subtask_of_every_target(two_tasks):
    ws, ids = two_tasks["ws"], two_tasks["ids"]
    a, b = _per_target(ws, two_tasks)
    res = select(ws, SelectConfig(task=["toy", "toy2"], count=8, name="mix-max", progress=False))
    best = {c: max(a[c][0], b[c][0]) for c in ids}
    assert [m.candidate_id for m in res.members] == sorted(ids, key=lambda c: (-best[c], c))[:8]
    for m in res.members:
        assert m.score == pytest.approx(best[m.candidate_id], rel=1e-5)
        assert m.target == ("toy" if a[m.candidate_id][0] >= b[m.candidate_id][0] else "toy2")
        sub = (a if m.target == "toy" else b)[m.candidate_id][1]
        assert m.best_subtask == f"{m.target}/{sub}"
    assert res.task == "toy+toy2" and res.provenance["params"]["targets"][1]["task"] == "toy2"


def test_round_robin_alternates_targets_and_replays_exactly(two_tasks):
    ws, ids = two_tasks["ws"], two_tasks["ids"]
    a, b = _per_target(ws, two_tasks)
    res = select(ws, SelectConfig(task=["toy", "toy2"], balance="round-robin", count=7, name="mix-rr",
                                  progress=False))
    taken, expect = set(), []
    for t in [0, 1] * 3 + [0]:
        sc = a if t == 0 else b
        c = next(c for c in sorted(ids, key=lambda c: (-sc[c][0], c)) if c not in taken)
        taken.add(c)
        expect.append((c, ["toy", "toy2"][t]))
    assert [(m.candidate_id, m.target) for m in res.members] == expect
    # recorded per member, counted per target in the view and in `show`
    rows = cli_json(ws, "sql", "SELECT target, n FROM selection_targets WHERE selection_name = 'mix-rr' "
                               "ORDER BY target")
    assert rows == [{"target": "toy", "n": 4}, {"target": "toy2", "n": 3}]
    shown = show_selection(ws, "mix-rr")
    assert [(t["target"], t["n"]) for t in shown["targets"]] == [("toy", 4), ("toy2", 3)]
    assert "Members per target" in cli(ws, "show", "mix-rr")
    again = select(ws, SelectConfig(replay="mix-rr", progress=False))
    assert again.identical is True and [m.target for m in again.members] == [m.target for m in res.members]


def test_proportional_weights_from_the_cli(two_tasks):
    ws = two_tasks["ws"]
    out = cli_json(ws, "select", "--task", "toy:3", "--task", "toy2", "--balance", "proportional", "--count", "8",
                   "--name", "mix-prop")
    assert out["provenance"]["params"]["target_counts"] == {"toy": 6, "toy2": 2}
    text = cli(ws, "select", "--task", "toy:3", "--task", "toy2", "--balance", "proportional", "--count", "8")
    assert "targets (proportional): toy (weight 3): 6, toy2: 2" in text
    with pytest.raises(LessdbError, match=r"weights \(task NAME:WEIGHT\) only apply to balance proportional"):
        select(ws, SelectConfig(task=["toy:2", "toy2"], progress=False))


def test_single_task_selection_is_recorded_as_before(two_tasks):
    ws = two_tasks["ws"]
    res = select(ws, SelectConfig(task="toy", count=5, progress=False))
    params = res.provenance["params"]
    assert "targets" not in params and "picking" not in params and res.task == "toy"
    assert all(m.best_subtask in ("alpha", "beta", "gamma") and m.target == "toy" for m in res.members)
    rows = cli_json(ws, "sql", f"SELECT target, n FROM selection_targets WHERE selection_id = '{res.selection_id}'")
    assert rows == [{"target": "toy", "n": 5}]


def test_bad_selection_flags_are_clear_errors(store):
    from conftest import run_cli

    ws = store["ws"]
    proc = run_cli("select", "--task", "toy", "--max-tokens", "0", workspace=ws.root, check=False)
    assert proc.returncode != 0 and "--max-tokens 0: must be at least 1" in proc.stderr
    assert "Traceback" not in proc.stderr
    for cfg, msg in ((dict(dedup=1.5), r"^dedup 1.5: must be in \(0, 1\]"),
                     (dict(dedup_text=0), "^dedup_text 0"),
                     # SelectConfig's own checks name the field (the CLI shows the flag)
                     (dict(balance="zigzag"), "balance 'zigzag'"),
                     (dict(budget_on="prompt", max_tokens=10), "budget_on 'prompt'"),
                     (dict(task=["toy", "nosuchtask"]), "no task named 'nosuchtask'")):
        with pytest.raises(LessdbError, match=msg):
            select(ws, SelectConfig(**{"task": "toy", **cfg}, progress=False))
    # the fixture's feature set claims a tokenizer the run's model does not have: counting refuses, clearly
    with pytest.raises(LessdbError, match="another tokenizer than the run's"):
        select(ws, SelectConfig(task="toy", max_tokens=100, progress=False))
    assert cli_json(ws, "selections") == []   # nothing half-recorded
