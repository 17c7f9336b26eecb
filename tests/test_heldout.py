"""Held-out outcome metrics (lessdb/evaluate/heldout.py) and the paired bootstrap (lessdb/evaluate/paired.py),
each against an independent computation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lessdb.evaluate import heldout as H
from lessdb.evaluate.items import EvalItem, TestSet, take_subset
from lessdb.evaluate.paired import paired_bootstrap, verdict_line
from lessdb.evaluate.shipped import shipped_bbh, shipped_mmlu
from lessdb.tasks.catalog import builtin_task
from lessdb.models.tiny import tiny_llama, tiny_tokenizer


# -- items ------------------------------------------------------------------------------------------------------
def test_bbh_choice_sets_follow_the_items():
    ts = shipped_bbh()
    items = {it.item_id: it for it in H.heldout_items(ts)}
    by_subtask: dict[str, list] = {}
    for it in items.values():
        by_subtask.setdefault(it.subtask, []).append(it)
    assert by_subtask["boolean_expressions"][0].choices == ("False", "True")
    assert by_subtask["formal_fallacies"][0].choices == ("invalid", "valid")
    assert by_subtask["sports_understanding"][0].choices == ("no", "yes")
    # free-form subtasks have no choices
    for sub in ("dyck_languages", "multistep_arithmetic_two", "object_counting", "word_sorting"):
        assert all(it.choices is None for it in by_subtask[sub])
    # a letter item chooses among the options its own input lists, gold among them
    for it in by_subtask["date_understanding"] + by_subtask["logical_deduction_three_objects"]:
        if it.choices is not None:
            assert it.answer in it.choices
            assert all(f"\n{c}" in "\n" + it.question for c in it.choices)
    assert {len(it.choices) for it in by_subtask["logical_deduction_three_objects"]} == {3}
    # the user turn is the instruction, then the question in LESS's Q/A shape, without the exemplars
    first = by_subtask["boolean_expressions"][0]
    assert first.user.startswith("Evaluate the result of a random Boolean expression.\n\nQ: ")
    assert first.user.endswith("\nA:") and "Let's think step by step" not in first.user


def test_choice_sets_of_a_subset_equal_those_of_the_whole_set():
    whole = shipped_bbh()
    sub = TestSet("bbh", "test", whole.source, take_subset(whole.items, 2, 42), whole.shots)
    by_id = {it.item_id: it.choices for it in H.heldout_items(whole)}
    assert all(by_id[it.item_id] == it.choices for it in H.heldout_items(sub, whole.items))


def test_mmlu_items_are_the_validation_format_and_overlap_is_found():
    ts = shipped_mmlu()
    items = H.heldout_items(ts)
    assert all(it.choices == ("A", "B", "C", "D") and it.answer in "ABCD" for it in items)
    assert items[0].user.endswith("\nAnswer:\nThe answer is:")
    val = [ex.messages[0]["content"] for exs in builtin_task("mmlu").subtasks.values() for ex in exs]
    overlap = H.validation_overlap(items, val)
    # MMLU repeats five dev questions of one medical subject, with the same options, in the test split of another
    assert sorted(overlap) == ["clinical_knowledge/252", "clinical_knowledge/56", "clinical_knowledge/93",
                               "college_medicine/152", "college_medicine/81"]
    # an exemplar question of BBH used as a test item is caught too
    bbh = H.heldout_items(shipped_bbh())
    bbh_val = [ex.messages[0]["content"] for exs in builtin_task("bbh").subtasks.values() for ex in exs]
    assert H.validation_overlap(bbh, bbh_val) == []
    exemplar = H.bbh_exemplar_questions(shipped_bbh().shots["navigate"])[0]
    planted = H.HeldoutItem("navigate/x", "navigate", "u", "Yes", ("No", "Yes"), exemplar)
    assert H.validation_overlap([planted], bbh_val) == ["navigate/x"]


# -- scoring against a loop over items ------------------------------------------------------------------------------
def by_hand(model, tokenizer, user: str, continuation: str) -> tuple[float, int]:
    """Summed log-probability of `continuation` after the prompt: one unpadded forward pass with full logits."""
    p = H.prompt_ids(tokenizer, user)
    c = tokenizer(continuation, add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([p + c])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(float(logp[len(p) - 1 + j, tok]) for j, tok in enumerate(c)), len(c)


def toy_items() -> list[H.HeldoutItem]:
    return [
        H.HeldoutItem("t/0", "t", "Is the sky blue?", "Yes", ("No", "Yes")),                    # multi-byte choices
        H.HeldoutItem("t/1", "t", "Pick one:\n(A) x\n(B) y\n(C) z", "(B)", ("(A)", "(B)", "(C)")),
        H.HeldoutItem("t/2", "t", "Letter?", "C", ("A", "B", "C", "D")),                       # single tokens
        H.HeldoutItem("t/3", "t", "Sort these words: pear apple fig", "apple fig pear"),      # free form
        H.HeldoutItem("t/4", "u", "A much longer prompt " * 6 + "?", "ok", ("ok", "no way", "k")),
    ]


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_scores_equal_a_loop_over_items(one_torch_thread, batch_size):
    model, tok = tiny_llama(seed=3), tiny_tokenizer()
    items = toy_items()
    scores = H.score_heldout(model, tok, items, batch_size=batch_size)
    for it, sc in zip(items, scores):
        texts = it.choices or (it.answer,)
        hand = [by_hand(model, tok, it.user, t) for t in texts]
        gold_ll, gold_n = hand[texts.index(it.answer)]
        assert sc.answer_loss == pytest.approx(-gold_ll / gold_n, abs=2e-5)
        assert sc.answer_tokens == gold_n
        if it.choices is None:
            assert sc.choice_logliks is None and sc.correct is None
        else:
            assert sc.choice_logliks == pytest.approx([h[0] for h in hand], abs=5e-5)
            best = max(range(len(hand)), key=lambda i: (hand[i][0], -i))
            assert sc.correct == (1.0 if best == texts.index(it.answer) else 0.0)
    summary = H.summarize(scores)
    assert summary["n_items"] == 5 and summary["n_choice_items"] == 4
    assert summary["answer_loss"] == pytest.approx(sum(s.answer_loss for s in scores) / 5)


def test_a_trained_model_changes_the_scores(one_torch_thread):
    """The scores read the model they are given (a perturbed model gives other losses)."""
    tok = tiny_tokenizer()
    items = toy_items()
    a = H.score_heldout(tiny_llama(seed=3), tok, items)
    b = H.score_heldout(tiny_llama(seed=4), tok, items)
    assert all(x.answer_loss != y.answer_loss for x, y in zip(a, b))


def test_choose_breaks_ties_to_the_first():
    assert H.choose([1.0, 2.0, 2.0]) == 1
    assert H.choose([-1.0]) == 0


# -- paired bootstrap ---------------------------------------------------------------------------------------------
def test_bootstrap_of_a_constant_shift_is_exact():
    rng = np.random.default_rng(1)
    b = rng.normal(2.0, 0.5, size=(300, 1)) + rng.normal(0.0, 0.001, size=(300, 3))   # 3 runs that nearly agree
    a = b - 0.05                       # A's loss is lower by exactly 0.05 on every item and run
    d = paired_bootstrap(a, b, higher_is_better=False)
    assert d.improvement == pytest.approx(0.05)
    # items are resampled jointly, so a pure shift has no item noise; runs are resampled independently per side
    a1, b1 = b[:, :1] - 0.05, b[:, :1]
    d1 = paired_bootstrap(a1, b1, higher_is_better=False)
    assert d1.low == pytest.approx(0.05) and d1.high == pytest.approx(0.05)
    assert d.verdict == "better"


def test_bootstrap_interval_matches_the_normal_theory_width():
    """One run each: the bootstrap interval of a paired mean difference is mean +- 1.96 sd / sqrt(n)."""
    rng = np.random.default_rng(7)
    n = 2000
    base = rng.normal(0.0, 3.0, size=n)          # item difficulty, shared by A and B (pairing removes it)
    diff = rng.normal(0.1, 1.0, size=n)
    a, b = base + diff, base
    d = paired_bootstrap(a, b, higher_is_better=True, n_boot=4000)
    se = diff.std(ddof=1) / math.sqrt(n)
    assert d.improvement == pytest.approx(diff.mean())
    assert d.low == pytest.approx(diff.mean() - 1.96 * se, abs=0.25 * se)
    assert d.high == pytest.approx(diff.mean() + 1.96 * se, abs=0.25 * se)
    # unpaired intervals would be ~3x wider: the pairing is what makes it this narrow
    assert d.high - d.low < 2 * 1.96 * 1.2 * se


def test_bootstrap_is_deterministic_and_signs_follow_the_metric():
    rng = np.random.default_rng(0)
    a, b = rng.random((50, 2)), rng.random((50, 3))
    assert paired_bootstrap(a, b, higher_is_better=True) == paired_bootstrap(a, b, higher_is_better=True)
    up = paired_bootstrap(a, b, higher_is_better=True)
    down = paired_bootstrap(a, b, higher_is_better=False)
    assert up.improvement == pytest.approx(-down.improvement)
    with pytest.raises(ValueError, match="items"):
        paired_bootstrap(a[:10], b, higher_is_better=True)
    with pytest.raises(ValueError, match="not finite"):
        paired_bootstrap(np.full((50, 1), np.nan), b, higher_is_better=True)


def test_bootstrap_resamples_runs_too():
    """Seed noise widens the interval: two runs of A that disagree by a constant give a wider interval than one."""
    rng = np.random.default_rng(3)
    b = rng.normal(1.0, 0.2, size=(400, 1))
    one = paired_bootstrap(b - 0.1, b, higher_is_better=False)
    two = paired_bootstrap(np.hstack([b - 0.0, b - 0.2]), b, higher_is_better=False)
    assert two.improvement == pytest.approx(one.improvement)
    assert (two.high - two.low) > 10 * (one.high - one.low + 1e-12)
    assert two.low == pytest.approx(0.0, abs=1e-9) and two.high == pytest.approx(0.2, abs=1e-9)


def test_verdict_lines():
    better = paired_bootstrap(np.zeros((20, 1)), np.full((20, 1), 0.031), higher_is_better=False)
    assert verdict_line(better, "random-5%", "nats") == "better than random-5% by 0.031 nats [0.031, 0.031]"
    worse = paired_bootstrap(np.full((20, 1), 0.5), np.full((20, 1), 0.6), higher_is_better=True)
    assert verdict_line(worse, "bm25", digits=2) == "worse than bm25 by 0.10 [0.10, 0.10]"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 1))
    same = paired_bootstrap(x + rng.normal(0, 0.01, size=(200, 1)), x, higher_is_better=False)
    line = verdict_line(same, "bm25", "nats")
    assert line.startswith("indistinguishable from bm25 (") and line.endswith(" nats)")
