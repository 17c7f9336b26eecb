"""`lessdb validate` (issue 22) on the tiny Llama: a real pool, warmup, features and LESS selection; real LoRA
training of the selection and its comparisons; held-out scores checked against an independent forward pass of each
trained checkpoint; the recorded verdicts against a recomputation from the recorded per-item scores."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import run_cli, write_jsonl
from lessdb import Workspace
from lessdb.evaluate.heldout import continuation_ids, prompt_ids
from lessdb.runs.checkpoint_models import load_checkpoint_model
from lessdb.storage import meta_runs, meta_selections
from lessdb.storage.meta_validations import get_eval

pytestmark = pytest.mark.slow   # ~30 CPU s: a warmup, featurize and a dozen tiny trainings

WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]
BUDGET = dict(epochs=3, lr=1e-2, batch_size=8, items_per_subtask=None)


@pytest.fixture(scope="module")
def ws(tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("validate")
    w = Workspace.init(root / "ws")
    recs = [{"messages": [{"role": "user", "content": f"repeat {WORDS[i % 8]} #{i}"},
                          {"role": "assistant", "content": f"{WORDS[i % 8]} {WORDS[i % 8]}"}]} for i in range(80)]
    w.ingest(str(write_jsonl(root / "pool.jsonl", recs)), pool="toy", progress=False)
    w.task_add("toytask", file=str(write_jsonl(root / "task.jsonl", [
        {"subtask": "rep", "prompt": f"repeat {x}", "completion": f"{x} {x}"} for x in ("alpha", "beta")])))
    warm = w.warmup("toy", model="tiny", percentage=0.1, epochs=2, batch_size=8, lora_r=4, lora_alpha=16,
                    max_seq_length=64, device="cpu", progress=False)
    w.featurize(warm.run_id, progress=False)
    w.select("toytask", method="less", count=8, name="less-toy", progress=False)
    tests = [{"id": f"t{i}", "prompt": f"say {x} twice", "answer": f"{x} {x}", "choices": [f"{x} {x}", "no no"]}
             for i, x in enumerate(WORDS[2:])]
    w.test_file = write_jsonl(root / "test.jsonl", tests)
    w.tmp = root
    return w


def independent_answer_loss(ws, run_id: str, item: dict) -> float:
    """Mean NLL of the answer's tokens after the prompt: one unpadded forward pass over the whole sequence."""
    epoch = max(c.epoch for c in meta_runs.list_checkpoints(ws, run_id))
    model, loaded = load_checkpoint_model(ws, run_id, epoch, device="cpu")
    p, a = prompt_ids(loaded.tokenizer, item["prompt"]), continuation_ids(loaded.tokenizer, item["answer"])
    with torch.no_grad():
        logits = model(torch.tensor([p + a])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    return -sum(logp[len(p) - 1 + i, t].item() for i, t in enumerate(a)) / len(a)


def test_validate_trains_each_comparison_and_records_verdicts_that_recompute(ws):
    res = ws.validate("less-toy", against="random,bm25,full", seeds=2, test_file=str(ws.test_file), progress=False,
                      **BUDGET)
    sets = res.training_sets
    assert set(sets) == {"selection", "random", "bm25", "full"} and all(len(v) == 2 for v in sets.values())
    sel = meta_selections.get_selection(ws, "less-toy")
    members = set(meta_selections.selection_members(ws, sel["selection_id"]).column("candidate_id").to_pylist())
    runs = {name: [meta_runs.get_run(ws, r["run_id"]) for r in rs] for name, rs in sets.items()}
    # one base model and one budget for everything; seeds 0 and 1; full: one pass over steps x batch draws
    assert {r["model_sha256"] for rs in runs.values() for r in rs} == {runs["selection"][0]["model_sha256"]}
    assert [r["seed"] for r in runs["selection"]] == [0, 1]
    for name, rs in runs.items():
        for r in rs:
            assert r["config"]["training"]["lr"] == 1e-2 and r["config"]["training"]["batch_size"] == 8
            assert r["config"]["training"]["epochs"] == (1 if name == "full" else 3)
    assert all(set(meta_runs.run_examples(ws, r["run_id"], include_excluded=True)) == members
               for r in runs["selection"])
    steps = runs["selection"][0]["config"]["total_steps"]
    assert all(r["n_examples"] + r["n_excluded"] == steps * 8 for r in runs["full"])
    assert all(r["config"]["total_steps"] == steps for r in runs["full"])
    draws = [set(meta_runs.run_examples(ws, r["run_id"], include_excluded=True)) for r in runs["random"]]
    assert draws[0] != draws[1] and all(len(d) == 8 for d in draws)
    # the recorded per-item scores are each run's own last checkpoint (checked by an independent forward pass)
    items = [json.loads(x) for x in ws.test_file.read_text().splitlines()]
    scores = {}
    for name, rs in runs.items():
        for r in rs:
            epoch = max(c.epoch for c in meta_runs.list_checkpoints(ws, r["run_id"]))
            scores[r["run_id"]] = get_eval(ws, r["run_id"], epoch, res.items["items_hash"])["scores"]
    probe = runs["selection"][1]["run_id"]
    assert scores[probe][2][1] == pytest.approx(independent_answer_loss(ws, probe, items[2]), rel=1e-4)
    assert len({round(scores[r["run_id"]][0][1], 6) for rs in runs.values() for r in rs}) > 1   # training moved
    # each verdict's point estimate is the mean difference of the recorded scores (loss: theirs - ours)
    by = {(r["comparison"], r["metric"]): r for r in res.results}
    for comp in ("random", "bm25", "full"):
        ours = [s[1] for r in runs["selection"] for s in scores[r["run_id"]]]
        theirs = [s[1] for r in runs[comp] for s in scores[r["run_id"]]]
        row = by[(comp, "answer_loss")]
        assert row["improvement"] == pytest.approx(np.mean(theirs) - np.mean(ours), abs=1e-12)
        assert row["low"] <= row["improvement"] <= row["high"] and row["n_items"] == 6
        assert row["verdict"] == ("better" if row["low"] > 0 else "worse" if row["high"] < 0 else "indistinguishable")
        acc = by[(comp, "choice_accuracy")]
        assert 0 <= acc["selection_mean"] <= 1 and acc["n_runs"] == 2
    assert ("base", "answer_loss") in by
    assert any(line.startswith("answer loss: ") and "random (2 draws)" in line for line in res.lines)
    # recorded: the view, `show`, `validations`
    view = ws.sql("SELECT comparison, metric, verdict, line FROM validation_verdicts WHERE selection_name = "
                  "'less-toy'").to_pylist()
    assert {(v["comparison"], v["metric"]) for v in view} == set(by)
    shown = ws.show("less-toy")["validations"][-1]
    assert sorted(shown["lines"]) == sorted(r["line"] for r in res.results) and shown["seeds"] == 2
    assert res.cost["selection_compute"]["stages"]["select"]["seconds"] >= 0
    assert res.cost["selection_to_tuning_ratio"] > 0
    human = run_cli("show", "less-toy", workspace=ws.root).stdout
    assert f"Validation {res.validation_id}" in human and "selection-to-tuning ratio" in human
    assert "Compute that made it (seconds): warmup" in human
    page = ws.report("less-toy", ws.tmp / "report.html")
    html = (ws.tmp / "report.html").read_text()
    assert page["images"] >= 1 and "Does it pay off?" in html and res.validation_id in html


def test_a_rerun_reuses_every_run_and_score(ws):
    first = ws.validate("less-toy", against="random,bm25", seeds=2, test_file=str(ws.test_file), progress=False,
                        **BUDGET)
    n_runs = len(ws.runs(kind="train"))
    n_evals = ws.sql("SELECT count(*) AS n FROM validation_evals").to_pylist()[0]["n"]
    again = ws.validate("less-toy", against="random,bm25", seeds=2, test_file=str(ws.test_file), progress=False,
                        **BUDGET)
    assert again.validation_id == first.validation_id and again.results == first.results   # same record, same scores
    assert len(ws.runs(kind="train")) == n_runs
    assert ws.sql("SELECT count(*) AS n FROM validation_evals").to_pylist()[0]["n"] == n_evals
    # one more seed trains only the third seed of each training set
    ws.validate("less-toy", against="random,bm25", seeds=3, test_file=str(ws.test_file), progress=False, **BUDGET)
    assert len(ws.runs(kind="train")) == n_runs + 3


def test_bad_input_is_refused_and_records_nothing(ws):
    def refused(*args):
        out = run_cli("validate", "less-toy", *args, workspace=ws.root, check=False)
        assert out.returncode in (1, 2) and "Traceback" not in out.stderr, out.stderr
        return out.stderr

    before = ws.sql("SELECT count(*) AS n FROM validations").to_pylist()[0]["n"]
    assert "--test-file" in refused("--seeds", "1")                     # a custom task needs held-out items
    overlap = write_jsonl(ws.tmp / "overlap.jsonl", [{"id": "a", "prompt": "repeat alpha", "answer": "alpha alpha"},
                                                     {"id": "b", "prompt": "new one", "answer": "x"}])
    assert "1 of its 2 test items repeat a validation example" in refused("--test-file", overlap)
    bad = write_jsonl(ws.tmp / "bad.jsonl", ['{"id": "a", "prompt": "p", "answer": "x"}', '{"id": "b", "prompt": ""}'])
    assert f"{bad}:2: field 'prompt'" in refused("--test-file", bad)
    wrong = write_jsonl(ws.tmp / "wrong.jsonl", [{"id": "a", "prompt": "p", "answer": "x", "choices": ["y", "z"]}])
    assert "not one of its choices" in refused("--test-file", wrong)
    assert "'nope': not a comparison" in refused("--against", "random,nope", "--test-file", ws.test_file)
    # full at the same number of steps needs more examples than the pool has
    assert "the filtered pool has 80" in refused("--against", "full", "--epochs", "20", "--test-file", ws.test_file)
    assert ws.sql("SELECT count(*) AS n FROM validations").to_pylist()[0]["n"] == before


def test_baselines_train_the_pools_warmup_model_without_model(ws):
    summary = ws.train("random:0.2", pool="toy", epochs=1, batch_size=8, lr=1e-3, max_seq_length=64, lora_r=4,
                       lora_alpha=16, progress=False)
    assert meta_runs.get_run(ws, summary.run_id)["model_name"] == "tiny"   # was smollm2-135m before issue 22


def test_compare_flags_runs_trained_with_other_settings(ws):
    small = dict(pool="toy", epochs=1, batch_size=8, max_seq_length=64, lora_r=4, lora_alpha=16, progress=False)
    a = ws.train("random:0.2", lr=1e-3, seed=1, **small)
    b = ws.train("random:0.2", lr=5e-3, seed=2, **small)
    for run in (a, b):
        ws.evaluate("toytask", run_id=run.run_id, metrics="loss")
    rows = [r for r in ws.compare("toytask") if set(r["eval_ids"]) and r["method"].startswith("random")]
    assert rows and any("training settings differ" in " ".join(r["flags"]) for r in rows), rows
    out = run_cli("compare", "--task", "toytask", workspace=ws.root).stdout
    assert "flags" in out and "training settings differ" in out


def test_two_embeds_at_once_store_each_candidate_once(ws):
    import subprocess
    import sys

    from lessdb.featurize.embeddings import EPOCH
    from lessdb.storage.meta_selections import scan_features

    run = meta_runs.list_runs(ws, kind="warmup")[-1]["run_id"]
    cmd = [sys.executable, "-m", "lessdb.cli.main", "embed", "--run", run, "--pooling", "last", "--json",
           "--workspace", str(ws.root)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [json.loads(p.communicate()[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    table = outs[0]["lance_table"]
    ids = [i for batch in scan_features(ws, table, ws.lance.version(table), "candidate", EPOCH, ("example_id",), 4096)
           for i in batch.column("example_id").to_pylist()]
    assert len(ids) == len(set(ids)) == 80    # the second waited for the first, then found every vector present
    assert sorted(o["examples"] for o in outs) == [0, 80]
