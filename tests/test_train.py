"""`lessdb train` (LESS step 4) on the tiny Llama: a real pool, a real warmup, a real recorded selection, real
peft training with the warmup's trainer, real checkpoint files and DuckDB records."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cli, write_jsonl
from lessdb.tasks import catalog as tasks
from lessdb.conversation import content_hash
from lessdb.errors import LessdbError
from lessdb.ingest import ingest_files
from lessdb.runs.checkpoint_models import load_checkpoint_model
from lessdb.selection import SelectConfig, select
from lessdb.storage import meta_runs, meta_selections
from lessdb.storage.candidates import select_candidate_ids
from lessdb.models.tiny import tiny_llama, tiny_tokenizer
from lessdb.runs.lifecycle import sample_subset
from lessdb.runs.warmup import run_warmup
from lessdb.runs.config import build_warmup_config
import lessdb.runs.train as train_module
from lessdb.runs.config import build_train_config
from lessdb.runs.train import parse_random_fraction, run_train

POOL = "toy"
SMALL = dict(epochs=2, batch_size=8, micro_batch_size=4, lora_r=4, lora_alpha=16, max_seq_length=64, lr=1e-3)


def toy_records(n: int) -> list[dict]:
    """Learnable pairs; every 4th prompt is too long for max_seq_length 64 (no completion token survives)."""
    words = ["alpha", "beta", "gamma", "delta", "omega"]
    out = []
    for i in range(n):
        w = words[i % len(words)]
        prompt = ("x" * 400 if i % 4 == 0 else "") + f"repeat {w} #{i}"
        out.append({"messages": [{"role": "user", "content": prompt},
                                 {"role": "assistant", "content": f"{w} {w} {w}"}]})
    return out


@pytest.fixture
def sel(workspace, tmp_path):
    """A pool of 32, a tiny warmup run on it, a task, and a recorded random selection of 16 (run = the warmup)."""
    recs = toy_records(32)
    ingest_files(workspace, [write_jsonl(tmp_path / "pool.jsonl", recs)], pool=POOL, progress=False)
    warm = run_warmup(workspace, build_warmup_config(POOL, model="tiny", percentage=0.25, epochs=1, batch_size=8,
                                                     lora_r=4, lora_alpha=16, max_seq_length=64, device="cpu"),
                      progress=False, count_tokens=False)
    write_jsonl(tmp_path / "task.jsonl", [{"subtask": "rep", "prompt": f"repeat {w}", "completion": f"{w} {w} {w}"}
                                          for w in ("alpha", "beta")])
    tasks.add_tasks(workspace, "toytask", file=tmp_path / "task.jsonl")
    result = select(workspace, SelectConfig(task="toytask", method="random", pool=POOL, count=16, seed=3,
                                            name="rand16", progress=False))
    long_ids = {content_hash(r["messages"]) for r in recs if r["messages"][0]["content"].startswith("x" * 400)}
    return {"ws": workspace, "selection_id": result.selection_id, "warmup": warm.run_id, "long_ids": long_ids,
            "tmp": tmp_path}


def _base_params_by_name(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Non-LoRA parameters under their plain HF names (peft wraps targets as `<name>.base_layer`)."""
    out = {}
    for name, p in model.named_parameters():
        if "lora_" in name:
            continue
        out[name.replace("base_model.model.", "").replace(".base_layer", "")] = p.detach().clone()
    return out


def test_selection_training_changes_only_lora_and_records_the_link(sel, monkeypatch):
    ws = sel["ws"]
    captured = []
    real_load = train_module.load_base_model
    monkeypatch.setattr(train_module, "load_base_model", lambda *a, **k: captured.append(real_load(*a, **k))
                        or captured[-1])
    summary = run_train(ws, build_train_config("rand16", **SMALL), progress=False)

    members = meta_selections.selection_members(ws, sel["selection_id"]).column("candidate_id").to_pylist()
    want_excluded = sorted(set(members) & sel["long_ids"])
    assert want_excluded, "the fixture's selection should contain some over-long examples"
    run = meta_runs.get_run(ws, summary.run_id)
    assert run["kind"] == "train" and run["status"] == "complete"
    assert run["selection_id"] == sel["selection_id"] and run["config"]["selection"] == sel["selection_id"]
    assert run["is_transfer"] is False and summary.is_transfer is False
    assert run["model_name"] == "tiny"  # defaults to the selection's warmup model
    assert run["config"]["selection_run_id"] == sel["warmup"]
    # exactly the selection's members: the trainable ones trained on, the over-long ones recorded as excluded
    assert sorted(summary.excluded) == want_excluded == sorted(run["config"]["excluded"])
    assert meta_runs.run_examples(ws, summary.run_id) == sorted(set(members) - set(want_excluded))
    assert sorted(meta_runs.run_examples(ws, summary.run_id, include_excluded=True)) == sorted(members)
    assert (run["n_examples"], run["n_excluded"]) == (len(members) - len(want_excluded), len(want_excluded))
    assert any("excluded" in n for n in summary.notes)
    assert run["config"]["training"]["epochs"] == 2 and run["config"]["lora"]["r"] == 4
    ckpts = meta_runs.list_checkpoints(ws, summary.run_id)
    n_kept = len(members) - len(want_excluded)
    assert [c.epoch for c in ckpts] == [1, 2]
    assert ckpts[-1].optimizer_step == summary.total_steps == 2 * -(-n_kept // 8)

    # the trained in-memory model: base weights bit-identical to a fresh tiny model, LoRA B moved off zero
    (loaded,) = captured
    fresh = dict(tiny_llama(0).named_parameters())
    base = _base_params_by_name(loaded.model)
    assert set(base) == set(fresh)
    for name, p in fresh.items():
        assert torch.equal(base[name], p.detach()), name
    lora_b = [p for n, p in loaded.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().max() > 0 for p in lora_b)
    # the checkpoint holds only LoRA tensors and reproduces a model that differs from the base
    adapter = load_file(f"{ckpts[-1].path}/adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    peft_model, _ = load_checkpoint_model(ws, summary.run_id, 2)
    ids = torch.tensor([list(range(3, 20))])
    with torch.no_grad():
        tuned = peft_model(input_ids=ids).logits
        with peft_model.disable_adapter():
            plain = peft_model(input_ids=ids).logits
        ref = tiny_llama(0).eval()(input_ids=ids).logits
    assert torch.equal(plain, ref) and not torch.allclose(tuned, ref)


def test_other_model_is_recorded_as_transfer(sel):
    ws, model_dir = sel["ws"], sel["tmp"] / "tiny3"
    tiny_llama(3).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    summary = run_train(ws, build_train_config(sel["selection_id"][:8], model=str(model_dir), **{**SMALL,
                                                                                                  "epochs": 1}),
                        progress=False)
    run = meta_runs.get_run(ws, summary.run_id)
    assert run["is_transfer"] is True and run["selection_id"] == sel["selection_id"]
    assert run["model_name"] == str(model_dir.resolve())
    assert any("LESS-T" in n for n in summary.notes)


def test_full_and_random_baselines_run_through_the_same_path(sel):
    ws = sel["ws"]
    pool_ids = select_candidate_ids(ws, POOL)
    full = run_train(ws, build_train_config("full", pool=POOL, model="tiny", **{**SMALL, "epochs": 1}),
                     progress=False)
    rand = run_train(ws, build_train_config("random:0.5", model="tiny", seed=5, **{**SMALL, "epochs": 1}),
                     progress=False)
    for summary, label, ids in ((full, "full", pool_ids), (rand, "random:0.5", sample_subset(pool_ids, 0.5, 5))):
        run = meta_runs.get_run(ws, summary.run_id)
        assert run["selection_id"] is None and run["config"]["selection"] == label
        assert run["is_transfer"] is False and run["status"] == "complete"
        assert sorted(meta_runs.run_examples(ws, summary.run_id, include_excluded=True)) == sorted(ids)
        assert run["n_excluded"] == len(set(ids) & sel["long_ids"])
    assert len(sample_subset(pool_ids, 0.5, 5)) == 16
    assert [r["run_id"] for r in meta_runs.list_runs(ws, kind="train")] == [full.run_id, rand.run_id]


def test_bad_selection_specs_are_user_errors(sel):
    for spec in ("random:0", "random:1.5", "random:abc"):
        with pytest.raises(LessdbError):
            parse_random_fraction(spec)
    with pytest.raises(LessdbError, match="no selection"):
        run_train(sel["ws"], build_train_config("nope", **SMALL), progress=False)
    with pytest.raises(LessdbError, match="percentage is a warmup setting"):
        build_train_config("full", percentage=0.1)
    with pytest.raises(LessdbError, match="not 'other'"):
        run_train(sel["ws"], build_train_config("rand16", pool="other", **SMALL), progress=False)
    assert meta_runs.list_runs(sel["ws"], kind="train") == []


def test_cli_train_json(sel):
    proc = run_cli("train", "--selection", "rand16", "--epochs", "1", "--batch-size", "8", "--lora-r", "4",
                   "--lora-alpha", "16", "--max-seq-length", "64", "--device", "cpu", "--json",
                   workspace=sel["ws"].root)
    out = json.loads(proc.stdout)
    # one RunSummary type for warmup and train; train's --json keeps its keys (and none of warmup's)
    assert set(out) == {"run_id", "selection", "selection_id", "pool", "model_name", "model_sha256", "is_transfer",
                        "selection_run_id", "device", "n_members", "n_examples", "n_excluded", "excluded",
                        "steps_per_epoch", "total_steps", "warmup_steps", "batch_size", "checkpoints", "notes",
                        "resumed_from_epoch", "seconds", "tokens_per_second"}
    assert out["selection_id"] == sel["selection_id"] and out["model_name"] == "tiny" and not out["is_transfer"]
    from lessdb.runs.lifecycle import run_summary
    assert run_summary(sel["ws"], out["run_id"], "cpu", 0.0).headline() == (
        f"Run {out['run_id']}: tiny on {out['n_examples']} examples of {out['selection']} (pool {out['pool']}; "
        f"{out['n_excluded']} excluded), {out['total_steps']} optimizer steps (batch 8), device cpu")
    assert [c["epoch"] for c in out["checkpoints"]] == [1]
    assert meta_runs.get_run(sel["ws"], out["run_id"])["config"]["selection"] == sel["selection_id"]
