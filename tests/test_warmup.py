"""Warmup (LESS step 1) on the tiny Llama: real peft, real files, real workspace."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import MISSING_COMPONENT, missing, run_cli, write_jsonl
from lessdb.runs.config import PRESETS, TrainingSettings, build_warmup_config
from lessdb.errors import LessdbError
from lessdb.ingest import ingest_files
from lessdb.models.loading import load_base_model
from lessdb.runs.checkpoint_models import load_checkpoint_model
from lessdb.runs.checkpoints import load_optimizer_state, optimizer_state_by_name
from lessdb.storage import meta_runs
from lessdb.models.tiny import tiny_tokenizer
from lessdb.models.tokenization import encode_conversation
from lessdb.runs.trainer import (LoraTrainer, build_lora_model, plan_schedule, trainable_named_parameters)
from lessdb.runs.lifecycle import sample_subset, subset_size
from lessdb.runs.warmup import resume_warmup, run_warmup


def toy_records(n: int, long_prompt_every: int = 0) -> list[dict]:
    """A learnable pool: the answer is a fixed function of the prompt (repeat the word three times)."""
    words = ["alpha", "beta", "gamma", "delta", "omega"]
    out = []
    for i in range(n):
        w = words[i % len(words)]
        prompt = f"repeat {w} #{i}"
        if long_prompt_every and i % long_prompt_every == 0:
            prompt = "x" * 400 + prompt  # no completion token survives max_seq_length 64
        out.append({"messages": [{"role": "user", "content": prompt},
                                 {"role": "assistant", "content": f"{w} {w} {w}"}]})
    return out


def make_pool(ws, tmp_path: Path, n: int = 40, pool: str = "toy", **kw) -> None:
    ingest_files(ws, [write_jsonl(tmp_path / f"{pool}.jsonl", toy_records(n, **kw))], pool=pool)


def tiny_config(pool="toy", **over):
    opts = dict(model="tiny", percentage=0.5, epochs=3, batch_size=8, micro_batch_size=3, lora_r=4, lora_alpha=16,
                max_seq_length=64, device="cpu")
    opts.update(over)
    return build_warmup_config(pool, **opts)


def independent_lrs(peak: float, total: int, warmup: int) -> list[float]:
    """HF linear warm-up from 0 then cosine decay to 0, written out from its definition."""
    out = []
    for s in range(total):
        if s < warmup:
            out.append(peak * s / warmup)
        else:
            out.append(peak * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))))
    return out


def test_subset_is_seeded_sized_and_sorted():
    ids = [f"{i:04d}" for i in range(1000)]
    a = sample_subset(ids, 0.05, seed=3)
    assert len(a) == 50 and a == sorted(a) and a == sample_subset(ids, 0.05, seed=3)
    assert a != sample_subset(ids, 0.05, seed=4)
    assert subset_size(10, 0.05) == 1 and subset_size(1000, 0.05, max_examples=64) == 50
    assert len(sample_subset(ids, 0.5, seed=0, max_examples=64)) == 64


def test_eta_bar_equals_independent_schedule_and_checkpoints_are_registered(workspace, tmp_path):
    make_pool(workspace, tmp_path, n=40)
    summary = run_warmup(workspace, tiny_config(), progress=False)
    plan = plan_schedule(20, TrainingSettings(batch_size=8, epochs=3))
    assert (summary.steps_per_epoch, summary.total_steps, summary.warmup_steps) == (3, 9, 1) == \
        (plan.steps_per_epoch, plan.total_steps, plan.warmup_steps)
    lrs = independent_lrs(2e-5, 9, 1)
    ckpts = meta_runs.list_checkpoints(workspace, summary.run_id)
    assert [c.epoch for c in ckpts] == [1, 2, 3]
    for c in ckpts:
        expected = sum(lrs[(c.epoch - 1) * 3:c.epoch * 3]) / 3
        assert c.mean_lr == pytest.approx(expected, rel=1e-9, abs=1e-15)
        assert c.optimizer_step == 3 * c.epoch
        files = {p.name for p in Path(c.path).iterdir()}
        assert {"adapter_model.safetensors", "adapter_config.json", "optimizer.safetensors",
                "checkpoint.json"} <= files
        meta = json.loads((Path(c.path) / "checkpoint.json").read_text())
        assert meta["lrs"] == pytest.approx(lrs[(c.epoch - 1) * 3:c.epoch * 3], rel=1e-9, abs=1e-15)
    run = meta_runs.get_run(workspace, summary.run_id)
    assert run["status"] == "complete" and run["n_examples"] == 20 and run["seed"] == 0
    assert run["config"]["warmup"]["lora"]["r"] == 4
    assert len(meta_runs.run_examples(workspace, summary.run_id)) == 20
    # token counts recorded for every candidate of the pool, for this tokenizer
    counts = meta_runs.token_counts(workspace, run["config"]["tokenizer_id"], 64)
    assert len(counts) == 40 and all(c["completion_tokens"] > 0 for c in counts.values())
    with workspace.duck.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM models WHERE name = 'tiny'").fetchone()[0] == 1


def test_stored_adam_state_equals_live_optimizer_by_name(workspace, tmp_path):
    loaded = load_base_model(workspace, "tiny", record=False)
    tok = loaded.tokenizer
    examples = [encode_conversation(tok, r["messages"], 64) for r in toy_records(10)]
    peft_model = build_lora_model(loaded.model, build_warmup_config("p", lora_r=4, lora_alpha=16).lora, seed=0)
    trainer = LoraTrainer(peft_model, examples, TrainingSettings(batch_size=4, micro_batch_size=2, epochs=2),
                          tmp_path / "run", pad_token_id=0, device="cpu", progress=False)
    seen = []

    def check(result):
        stored = load_optimizer_state(result.path)
        live = optimizer_state_by_name(trainer.optimizer, trainer.named)
        names = [n for n, _ in trainable_named_parameters(peft_model)]
        assert sorted(stored["exp_avg"]) == sorted(names) == sorted(live["exp_avg"])
        assert any(".lora_A." in n for n in names) and any(".lora_B." in n for n in names)
        for n in names:
            assert torch.equal(stored["exp_avg"][n], live["exp_avg"][n])
            assert torch.equal(stored["exp_avg_sq"][n], live["exp_avg_sq"][n])
            p = dict(peft_model.named_parameters())[n]
            assert torch.equal(trainer.optimizer.state[p]["exp_avg"], stored["exp_avg"][n])
        assert stored["step"] == result.optimizer_step == 3 * result.epoch
        assert stored["betas"] == (0.9, 0.999) and stored["eps"] == 1e-8
        seen.append(result.epoch)

    trainer.train(on_checkpoint=check)
    assert seen == [1, 2]


def test_loss_falls_over_epochs_on_a_learnable_pool(workspace, tmp_path):
    make_pool(workspace, tmp_path, n=40)
    summary = run_warmup(workspace, tiny_config(percentage=1.0, epochs=4, lr=5e-3, lora_r=8, lora_alpha=32,
                                                warmup_ratio=0.0), progress=False)
    losses = [c["train_loss"] for c in summary.checkpoints]
    assert all(math.isfinite(x) for x in losses)
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[0] - losses[-1] > 0.1, losses  # well beyond float noise; a frozen model gives 0


def test_all_prompt_examples_are_excluded_and_reported_not_nan(workspace, tmp_path):
    make_pool(workspace, tmp_path, n=20, long_prompt_every=4)  # 5 of 20 lose every completion token at 64
    summary = run_warmup(workspace, tiny_config(percentage=1.0, epochs=2), progress=False)
    assert summary.n_excluded == 5 and summary.n_examples == 15 and summary.n_sampled == 20
    assert any("excluded" in n for n in summary.notes)
    assert all(math.isfinite(c["train_loss"]) for c in summary.checkpoints)
    assert len(meta_runs.run_examples(workspace, summary.run_id)) == 15
    assert len(meta_runs.run_examples(workspace, summary.run_id, include_excluded=True)) == 20
    tid = meta_runs.get_run(workspace, summary.run_id)["config"]["tokenizer_id"]
    zero = [c for c in meta_runs.token_counts(workspace, tid, 64).values() if c["completion_tokens"] == 0]
    assert len(zero) == 5 and all(c["truncated"] for c in zero)


def test_pool_smaller_than_one_batch_takes_one_step_per_epoch(workspace, tmp_path):
    make_pool(workspace, tmp_path, n=30)
    summary = run_warmup(workspace, tiny_config(percentage=0.05, epochs=2, batch_size=128), progress=False)
    assert summary.n_examples == 1 and summary.batch_size == 1
    assert [c["optimizer_step"] for c in summary.checkpoints] == [1, 2]
    assert any("one optimizer step" in n for n in summary.notes)


def test_kill_and_resume_equals_uninterrupted(workspace, tmp_path):
    make_pool(workspace, tmp_path, n=40)
    full = run_warmup(workspace, tiny_config(run_id="full"), progress=False)

    class Killed(Exception):
        pass

    def kill_after_first(result):
        if result.epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        run_warmup(workspace, tiny_config(run_id="killed"), progress=False, on_checkpoint=kill_after_first)
    assert meta_runs.get_run(workspace, "killed")["status"] == "failed"
    assert [c.epoch for c in meta_runs.list_checkpoints(workspace, "killed")] == [1]
    # a checkpoint half-written when the process died: a temp dir, never registered, cleaned on resume
    half = workspace.checkpoints_dir / "killed" / ".tmp-epoch-2-zzz"
    half.mkdir()
    (half / "adapter_model.safetensors").write_bytes(b"partial")
    resumed = resume_warmup(workspace, pool="toy", progress=False)
    assert resumed.run_id == "killed" and resumed.resumed_from_epoch == 1
    assert not half.exists()
    assert meta_runs.get_run(workspace, "killed")["status"] == "complete"
    a = {c.epoch: c for c in meta_runs.list_checkpoints(workspace, "full")}
    b = {c.epoch: c for c in meta_runs.list_checkpoints(workspace, "killed")}
    assert sorted(b) == [1, 2, 3]
    for epoch in (2, 3):
        assert b[epoch].mean_lr == a[epoch].mean_lr and b[epoch].train_loss == a[epoch].train_loss
        wa, wb = (load_file(str(Path(c.path) / "adapter_model.safetensors")) for c in (a[epoch], b[epoch]))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        oa, ob = load_optimizer_state(a[epoch].path), load_optimizer_state(b[epoch].path)
        assert all(torch.equal(oa["exp_avg_sq"][k], ob["exp_avg_sq"][k]) for k in oa["exp_avg_sq"])
    with pytest.raises(LessdbError):
        resume_warmup(workspace, pool="toy", progress=False)  # nothing left to resume


def test_load_checkpoint_model_restores_adapter_with_names_matching_optimizer(workspace, tmp_path):
    make_pool(workspace, tmp_path, n=20)
    summary = run_warmup(workspace, tiny_config(epochs=2), progress=False)
    ckpt = meta_runs.list_checkpoints(workspace, summary.run_id)[1]
    peft_model, base = load_checkpoint_model(workspace, summary.run_id, 2)
    opt = load_optimizer_state(ckpt.path)
    trainable = dict(trainable_named_parameters(peft_model))
    assert sorted(trainable) == sorted(opt["exp_avg"])
    saved = load_file(str(Path(ckpt.path) / "adapter_model.safetensors"))
    for name, p in trainable.items():
        assert torch.equal(p.detach(), saved[name.replace(".default", "")])
    assert not peft_model.training and base.name == "tiny"
    with pytest.raises(LessdbError):
        load_checkpoint_model(workspace, summary.run_id, 7)


def test_cpu_small_preset_keeps_at_least_two_checkpoints_and_flags_override():
    cfg = build_warmup_config("p", preset="cpu-small")
    assert cfg.training.epochs >= 2 and cfg.training.max_seq_length == 256 and cfg.lora.r == 8
    assert cfg.max_examples == 64 and cfg.training.batch_size == 8 and cfg.training.lr == 2e-5 and cfg.lora.alpha / cfg.lora.r == 4
    assert build_warmup_config("p", preset="cpu-small", epochs=3).training.epochs == 3
    default = build_warmup_config("p")
    assert (default.lora.r, default.lora.alpha, default.lora.dropout, default.training.batch_size,
            default.training.epochs, default.percentage) == (128, 512, 0.1, 128, 4, 0.05)
    assert set(PRESETS) >= {"paper", "cpu-small"}
    with pytest.raises(LessdbError):
        build_warmup_config("p", preset="nope")


def test_cli_warmup_and_runs(workspace, tmp_path):
    make_pool(workspace, tmp_path, n=20)
    out = run_cli("warmup", "--pool", "toy", "--model", "tiny", "--percentage", "0.5", "--epochs", "2",
                  "--batch-size", "4", "--lora-r", "4", "--lora-alpha", "16", "--max-seq-length", "64", "--json",
                  workspace=workspace.root)
    summary = json.loads(out.stdout)
    assert len(summary["checkpoints"]) == 2
    # one RunSummary type for warmup and train; warmup's --json keeps its keys (and none of train's)
    assert set(summary) == {"run_id", "pool", "model_name", "model_sha256", "device", "n_pool", "n_sampled",
                            "n_examples", "n_excluded", "steps_per_epoch", "total_steps", "warmup_steps",
                            "batch_size", "checkpoints", "notes", "resumed_from_epoch", "seconds",
                            "tokens_per_second"}
    assert (summary["n_pool"], summary["n_sampled"]) == (20, 10)
    from lessdb.runs.lifecycle import run_summary
    text = run_summary(workspace, summary["run_id"], "cpu", 0.0).headline()
    assert text == (f"Run {summary['run_id']}: tiny on {summary['n_examples']} examples of pool toy "
                    f"({summary['n_excluded']} excluded), {summary['total_steps']} optimizer steps (batch 4), "
                    "device cpu")
    assert "examples" in out.stderr or "epoch" in out.stderr  # progress goes to stderr
    runs = json.loads(run_cli("runs", "--json", workspace=workspace.root).stdout)
    assert runs[0]["run_id"] == summary["run_id"] and [c["epoch"] for c in runs[0]["checkpoints"]] == [1, 2]
    assert runs[0]["checkpoints"][0]["mean_lr"] > 0
    text = run_cli("runs", workspace=workspace.root).stdout
    assert summary["run_id"] in text and "eta_bar" in text
    with pytest.raises(LessdbError, match="no candidates"):
        run_warmup(workspace, tiny_config(pool="nope"), progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason=missing(
    MISSING_COMPONENT, "a CUDA GPU", "runs where torch.cuda.is_available() (the GPU machines)"))
def test_cuda_warmup_uses_bf16_base_and_fp32_adam_state(workspace, tmp_path):
    make_pool(workspace, tmp_path, n=20)
    summary = run_warmup(workspace, tiny_config(device="cuda", epochs=2), progress=False)
    assert summary.device == "cuda" and len(summary.checkpoints) == 2
    opt = load_optimizer_state(summary.checkpoints[-1]["path"])
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in opt["exp_avg"].values())
    peft_model, base = load_checkpoint_model(workspace, summary.run_id, 2, device="cuda")
    assert next(base.model.parameters()).dtype == torch.bfloat16
