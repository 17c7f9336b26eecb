"""`lessdb train --resume` on the tiny Llama: a train run killed after epoch 1 of 3 continues from its last
checkpoint with its recorded settings, model and examples, and ends bit-identical to an uninterrupted run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cli, write_jsonl
from lessdb.errors import LessdbError
from lessdb.ingest import ingest_files
from lessdb.storage import meta_runs, meta_selections
from lessdb.storage.candidates import candidates_version, select_candidate_ids
from lessdb.models.tiny import tiny_llama, tiny_tokenizer
from lessdb.runs.config import build_train_config
from lessdb.runs.train import resume_train, run_train
from lessdb.runs.checkpoints import load_optimizer_state
from lessdb.runs.lifecycle import sample_subset
from test_train import POOL, SMALL, sel  # noqa: F401  (sel: the shared pool/warmup/selection fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

THREE = {**SMALL, "epochs": 3}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "LESSDB_PROGRESS": "0"}  # same intra-op threads as this process


class Killed(Exception):
    pass


def kill_after_first(result):
    if result.epoch == 1:
        raise Killed


def start_and_kill(ws, spec: str, run_id: str, **options) -> None:
    with pytest.raises(Killed):
        run_train(ws, build_train_config(spec, run_id=run_id, **{**THREE, **options}), progress=False,
                  on_checkpoint=kill_after_first)
    assert meta_runs.get_run(ws, run_id)["status"] == "failed"
    assert [c.epoch for c in meta_runs.list_checkpoints(ws, run_id)] == [1]


def assert_same_training(ws, a: str, b: str) -> None:
    """Every checkpoint of run b equals run a's: loss, eta-bar, step, LoRA weights, Adam moments."""
    ca = {c.epoch: c for c in meta_runs.list_checkpoints(ws, a)}
    cb = {c.epoch: c for c in meta_runs.list_checkpoints(ws, b)}
    assert sorted(ca) == sorted(cb) == [1, 2, 3]
    for epoch in (1, 2, 3):
        x, y = ca[epoch], cb[epoch]
        assert (y.train_loss, y.mean_lr, y.optimizer_step) == (x.train_loss, x.mean_lr, x.optimizer_step)
        wa, wb = (load_file(str(Path(c.path) / "adapter_model.safetensors")) for c in (x, y))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        oa, ob = load_optimizer_state(x.path), load_optimizer_state(y.path)
        for moment in ("exp_avg", "exp_avg_sq"):
            assert oa[moment].keys() == ob[moment].keys()
            assert all(torch.equal(oa[moment][k], ob[moment][k]) for k in oa[moment])


def test_cli_resume_of_a_killed_selection_run_equals_uninterrupted(sel):
    ws = sel["ws"]
    # the trainer's permutation indexes the examples in the selection's rank order; a resume that read them
    # back sorted by id would train on other batches, so make sure the two orders differ here
    ranked = meta_selections.selection_members(ws, sel["selection_id"]).column("candidate_id").to_pylist()
    kept_ranked = [c for c in ranked if c not in sel["long_ids"]]
    assert kept_ranked != sorted(kept_ranked)

    run_train(ws, build_train_config("rand16", run_id="whole", **THREE), progress=False)
    start_and_kill(ws, "rand16", "killed")
    proc = run_cli("train", "--resume", "--json", workspace=ws.root, env=ONE_THREAD)  # the latest unfinished
    out = json.loads(proc.stdout)
    assert out["run_id"] == "killed" and out["resumed_from_epoch"] == 1
    assert out["selection_id"] == sel["selection_id"] and out["n_examples"] == len(kept_ranked)
    assert "resuming killed after epoch 1" in proc.stderr
    assert meta_runs.get_run(ws, "killed")["status"] == "complete"
    assert [c["epoch"] for c in out["checkpoints"]] == [1, 2, 3]
    assert_same_training(ws, "whole", "killed")


@pytest.mark.slow   # a whole train, a killed one and its resume: ~26 CPU s
def test_resume_reads_back_the_recorded_random_draw_not_a_new_one(sel):
    ws = sel["ws"]
    version = candidates_version(ws)
    drawn = sample_subset(select_candidate_ids(ws, POOL, version=version), 0.5, 7)
    run_train(ws, build_train_config("random:0.5", pool=POOL, seed=7, run_id="whole", **THREE), progress=False)
    start_and_kill(ws, "random:0.5", "killed", pool=POOL, seed=7)
    # the pool grows: random:0.5 would now draw other examples from a newer candidates version
    more = [{"messages": [{"role": "user", "content": f"new {i}"}, {"role": "assistant", "content": "new new"}]}
            for i in range(40)]
    ingest_files(ws, [write_jsonl(sel["tmp"] / "more.jsonl", more)], pool=POOL, progress=False)
    grown = select_candidate_ids(ws, POOL, version=candidates_version(ws))
    assert sample_subset(grown, 0.5, 7) != drawn

    summary = resume_train(ws, "killed", progress=False)
    assert summary.resumed_from_epoch == 1 and summary.selection == "random:0.5"
    assert sorted(meta_runs.run_examples(ws, "killed", include_excluded=True)) == drawn
    assert meta_runs.get_run(ws, "killed")["config"]["candidates_version"] == version
    assert_same_training(ws, "whole", "killed")


def test_resume_refuses_settings_other_kinds_and_missing_runs(sel):
    ws = sel["ws"]
    with pytest.raises(LessdbError, match="no unfinished train run to resume"):
        ws.train(resume=True, progress=False)
    with pytest.raises(LessdbError, match="^selection is required"):
        ws.train(progress=False)
    with pytest.raises(LessdbError, match=f"is a warmup run, not a train run.*--run-id {sel['warmup']}"):
        ws.train(resume=True, run_id=sel["warmup"], progress=False)
    # the library names the settings; the CLI names the flags
    with pytest.raises(LessdbError, match="epochs or selection or preset cannot be given when resuming"):
        ws.train("rand16", resume=True, epochs=2, preset="cpu-small", progress=False)
    proc = run_cli("train", "--resume", "--lora-r", "8", "--target-modules", "q_proj", workspace=ws.root,
                   check=False, env=ONE_THREAD)
    assert proc.returncode != 0 and "--lora-r or --target-modules cannot be given when resuming" in proc.stderr
    assert meta_runs.list_runs(ws, kind="train") == []


def test_resuming_a_complete_run_changes_nothing(sel, capsys):
    ws = sel["ws"]
    done = run_train(ws, build_train_config("rand16", run_id="done", **{**SMALL, "epochs": 1}), progress=False)
    with pytest.raises(LessdbError, match="no unfinished train run"):
        resume_train(ws, progress=False)
    capsys.readouterr()
    run_dir = ws.checkpoints_dir / "done"
    before = {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
    again = resume_train(ws, "done", progress=False)
    assert "already has all 1 checkpoints; nothing to resume" in capsys.readouterr().err
    assert again.resumed_from_epoch is None and again.checkpoints == done.checkpoints
    assert before and {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()} == before
    assert meta_runs.get_run(ws, "done")["status"] == "complete"


def test_resume_refuses_a_model_whose_weights_changed(sel):
    ws, model_dir = sel["ws"], sel["tmp"] / "tinymodel"
    tiny_llama(3).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    start_and_kill(ws, "rand16", "killed", model=str(model_dir))
    tiny_llama(4).save_pretrained(model_dir)  # same path, other weights
    with pytest.raises(LessdbError, match="cannot resume on a different model"):
        resume_train(ws, "killed", progress=False)
    assert [c.epoch for c in meta_runs.list_checkpoints(ws, "killed")] == [1]
    assert meta_runs.get_run(ws, "killed")["status"] == "failed"
