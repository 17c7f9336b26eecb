"""A run's checkpoint loaded back as a model: the run's base model (its weights' sha256 checked) with the LoRA
adapter of one epoch, for featurize, validation gradients and eval. The adapter's parameters require grad
(featurization differentiates them); the model is in eval mode (no LoRA dropout).

Reusing one loaded model within a block: `lessdb quickstart` runs featurize (checkpoints 1, 2) and then select
(validation gradients at checkpoints 1, 2) in one process: four loads of the same base model, each wrapped by
peft with the same LoRA layout. Inside `reuse_checkpoint_models()`, `load_checkpoint_model` keeps the model it
built and, asked for another checkpoint with the same base weights, device, dtype and adapter config, copies that
checkpoint's adapter weights into the kept model instead of loading the base model again (the values are the same
either way: the adapter file holds every LoRA matrix). Outside such a block nothing is kept, so a caller that
holds two checkpoint models at once (or trains one) never sees it change under it. One model is kept at a time.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager
from pathlib import Path

import torch

from ..errors import LessdbError
from ..models.loading import load_base_model, resolve_device
from .checkpoints import verify_checkpoint_files

_stack: list[dict] = []


@contextmanager
def reuse_checkpoint_models():
    slot: dict = {}
    _stack.append(slot)
    try:
        yield
    finally:
        _stack.remove(slot)
        slot.clear()
        gc.collect()


def kept(key: tuple):
    """The kept value for `key` inside a reuse block, else None (a different key drops the kept model)."""
    if not _stack:
        return None
    slot = _stack[-1]
    if slot.get("key") != key:
        slot.clear()
        return None
    return slot.get("value")


def keep(key: tuple, value) -> None:
    if _stack:
        _stack[-1].clear()
        _stack[-1].update(key=key, value=value)


def load_checkpoint_model(ws, run_id: str, epoch: int, device: str = "cpu", dtype: torch.dtype | None = None):
    """(peft_model, LoadedModel): the run's base model with the LoRA adapter of checkpoint `epoch`.

    The adapter's parameters require grad (featurization differentiates them); the model is in eval mode
    (no LoRA dropout), as gradient features are computed."""
    from ..storage import meta_runs

    run = meta_runs.get_run(ws, run_id)
    ckpt = {c.epoch: c for c in meta_runs.list_checkpoints(ws, run_id)}.get(int(epoch))
    if ckpt is None:
        raise LessdbError(f"run {run_id} has no checkpoint for epoch {epoch}")
    return load_checkpoint_model_from(ws, run_id, run["model_name"], run["model_sha256"], ckpt, device, dtype)


def load_checkpoint_model_from(ws, run_id: str, model_name: str, model_sha256: str, ckpt, device: str = "cpu",
                               dtype: torch.dtype | None = None):
    """`load_checkpoint_model` from explicit facts (base model name, its sha256, the CheckpointInfo) instead of
    catalogue reads: distributed workers call it with `ws` = an object with only `models_dir`, never DuckDB."""
    from peft import PeftModel

    verify_checkpoint_files(ckpt)
    reuse_key = _reuse_key(model_name, model_sha256, ckpt, device, dtype)
    reused = _reuse_kept_model(reuse_key, ckpt)
    if reused is not None:
        return reused
    base = load_base_model(ws, model_name, device=device, dtype=dtype, record=False)
    if base.sha256 != model_sha256:
        raise LessdbError(f"run {run_id} was trained on {model_name} with weights sha256 "
                          f"{model_sha256[:12]}…, but those weights now hash to {base.sha256[:12]}…")
    import warnings

    with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5 (harmless)
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = PeftModel.from_pretrained(base.model, ckpt.path, is_trainable=True)
    peft_model.eval()
    keep(reuse_key, (peft_model, base))
    return peft_model, base


def _reuse_key(model_name: str, model_sha256: str, ckpt, device: str, dtype) -> tuple:
    adapter_config = (Path(ckpt.path) / "adapter_config.json").read_text()
    return (model_name, model_sha256, resolve_device(device), str(dtype), adapter_config)


def _reuse_kept_model(key: tuple, ckpt):
    """Inside `reuse_checkpoint_models()`: the kept model of an earlier checkpoint of the same base
    weights and LoRA layout, with this checkpoint's adapter weights copied in; else None."""
    value = kept(key)
    if value is None:
        return None
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    peft_model, base = value
    weights = load_file(str(Path(ckpt.path) / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(peft_model, weights)
    lora_missing = [k for k in result.missing_keys if ".lora_" in k]
    if lora_missing or result.unexpected_keys:
        raise LessdbError(f"checkpoint {ckpt.path}: adapter weights do not match the kept model "
                          f"(missing {lora_missing[:2]}, unexpected {list(result.unexpected_keys)[:2]})")
    for name, p in peft_model.named_parameters():
        p.requires_grad_(".lora_" in name)
    peft_model.eval()
    return peft_model, base
