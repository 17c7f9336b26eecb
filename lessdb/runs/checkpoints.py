"""Checkpoint files of a training run and their integrity: one directory per epoch, written under a temp name and
renamed when complete — adapter (peft safetensors), Adam state by parameter name (optimizer.safetensors), RNG state,
and checkpoint.json with the sha256 of each file. Used by the trainer (writing), resume and featurization
(reading, hash-checked). No model loading here: checkpoint_models.py loads a checkpoint back on its base model.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import faults
from ..errors import LessdbError, WorkspaceDamaged
from ..models.loading import sha256_file

OPTIMIZER_FORMAT = "lessdb-adamw/1"
ADAPTER_FILE = "adapter_model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng_state.safetensors"
CHECKPOINT_FILE = "checkpoint.json"
TMP_PREFIX = ".tmp-"


def optimizer_state_by_name(optimizer, named_params) -> dict:
    """The live AdamW state keyed by parameter name (the form checkpoints store)."""
    group = optimizer.param_groups[0]
    exp_avg, exp_avg_sq, steps = {}, {}, set()
    for name, p in named_params:
        st = optimizer.state.get(p)
        if not st:
            raise LessdbError(f"optimizer has no state for {name} (no step taken yet?)")
        exp_avg[name] = st["exp_avg"].detach().float().cpu().contiguous()
        exp_avg_sq[name] = st["exp_avg_sq"].detach().float().cpu().contiguous()
        steps.add(int(st["step"].item() if torch.is_tensor(st["step"]) else st["step"]))
    if len(steps) != 1:
        raise LessdbError(f"parameters disagree on the Adam step: {sorted(steps)}")
    return {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq, "step": steps.pop(),
            "betas": tuple(float(b) for b in group["betas"]), "eps": float(group["eps"]),
            "weight_decay": float(group.get("weight_decay", 0.0))}


def write_optimizer_state(path: Path, state: dict) -> None:
    from safetensors.torch import save_file

    tensors = {f"exp_avg.{n}": t for n, t in state["exp_avg"].items()}
    tensors.update({f"exp_avg_sq.{n}": t for n, t in state["exp_avg_sq"].items()})
    meta = {"format": OPTIMIZER_FORMAT, "step": str(state["step"]), "betas": json.dumps(list(state["betas"])),
            "eps": repr(state["eps"]), "weight_decay": repr(state.get("weight_decay", 0.0))}
    save_file(tensors, str(path), metadata=meta)


def read_optimizer_state(path: Path) -> dict:
    from safetensors import safe_open

    if not Path(path).exists():
        raise LessdbError(f"{path}: no optimizer state here")
    exp_avg, exp_avg_sq = {}, {}
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        if meta.get("format") != OPTIMIZER_FORMAT:
            raise LessdbError(f"{path}: not a lessdb optimizer state (format {meta.get('format')!r})")
        for key in fh.keys():
            kind, name = key.split(".", 1)
            (exp_avg if kind == "exp_avg" else exp_avg_sq)[name] = fh.get_tensor(key)
    return {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq, "step": int(meta["step"]),
            "betas": tuple(json.loads(meta["betas"])), "eps": float(meta["eps"]),
            "weight_decay": float(meta.get("weight_decay", "0.0"))}


def restore_optimizer_state(optimizer, named_params, state: dict, device) -> None:
    names = {n for n, _ in named_params}
    if set(state["exp_avg"]) != names:
        raise LessdbError("checkpoint optimizer state does not match this model's LoRA parameters")
    for name, p in named_params:
        optimizer.state[p] = {"step": torch.tensor(float(state["step"])),
                              "exp_avg": state["exp_avg"][name].to(device=device, dtype=p.dtype).clone(),
                              "exp_avg_sq": state["exp_avg_sq"][name].to(device=device, dtype=p.dtype).clone()}


# -- RNG state (safetensors, never pickle) ---------------------------------------------------------------
def rng_state_tensors() -> dict[str, torch.Tensor]:
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"torch_cuda.{i}"] = s
    return out


def restore_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


# -- checkpoints --------------------------------------------------------------------------------------------
@dataclass
class EpochResult:
    epoch: int
    optimizer_step: int
    mean_lr: float
    train_loss: float
    lrs: list[float]
    path: str
    adapter_sha256: str
    optimizer_sha256: str
    seconds: float = 0.0
    tokens: int = 0


def checkpoint_dir(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / f"epoch-{epoch}"


def write_checkpoint(peft_model, optimizer, named_params, run_dir: Path, result: EpochResult, extra: dict) -> EpochResult:
    """Write the checkpoint into a temp dir, hash its files, then rename it to epoch-<i> (atomic)."""
    from safetensors.torch import save_file


    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(run_dir, result.epoch)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}epoch-{result.epoch}-", dir=run_dir))
    try:
        peft_model.save_pretrained(str(tmp), safe_serialization=True)
        write_optimizer_state(tmp / OPTIMIZER_FILE, optimizer_state_by_name(optimizer, named_params))
        save_file(rng_state_tensors(), str(tmp / RNG_FILE))
        result.adapter_sha256 = sha256_file(tmp / ADAPTER_FILE)
        result.optimizer_sha256 = sha256_file(tmp / OPTIMIZER_FILE)
        result.path = str(final)
        meta = {"epoch": result.epoch, "optimizer_step": result.optimizer_step, "mean_lr": result.mean_lr,
                "train_loss": result.train_loss, "lrs": result.lrs, "tokens": result.tokens,
                "seconds": result.seconds,
                "sha256": {ADAPTER_FILE: result.adapter_sha256, OPTIMIZER_FILE: result.optimizer_sha256,
                           RNG_FILE: sha256_file(tmp / RNG_FILE)}, **extra}
        with open(tmp / CHECKPOINT_FILE, "w") as fh:
            json.dump(meta, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        if final.exists():  # an unregistered leftover of an interrupted run being redone
            shutil.rmtree(final)
        os.rename(tmp, final)
        faults.point("train.after_checkpoint")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def read_checkpoint_meta(path: Path, verify: bool = True) -> dict | None:
    """checkpoint.json of a complete checkpoint dir (files present, hashes matching), else None."""

    path = Path(path)
    try:
        meta = json.loads((path / CHECKPOINT_FILE).read_text())
    except (OSError, ValueError):
        return None
    if verify:
        for fname, want in meta.get("sha256", {}).items():
            if not (path / fname).exists() or sha256_file(path / fname) != want:
                return None
    return meta


def remove_temp_dirs(run_dir: Path) -> None:
    for p in Path(run_dir).glob(TMP_PREFIX + "*"):
        shutil.rmtree(p, ignore_errors=True)


def verify_checkpoint_files(ckpt) -> None:
    path = Path(ckpt.path)
    for fname, want in (("adapter_model.safetensors", ckpt.adapter_sha256),
                        ("optimizer.safetensors", ckpt.optimizer_sha256)):
        if not (path / fname).exists():
            raise WorkspaceDamaged(f"checkpoint {path}: {fname} is missing")
        if want and sha256_file(path / fname) != want:
            raise WorkspaceDamaged(f"checkpoint {path}: {fname} does not match its recorded sha256 (modified?)")


def load_optimizer_state(path: Path | str) -> dict:
    """Adam state of a checkpoint, keyed by trainable parameter name (as `peft_model.named_parameters()`):
    {"exp_avg": {name: tensor}, "exp_avg_sq": {name: tensor}, "step": int, "betas": (b1, b2), "eps": float}.
    `path` is the checkpoint directory or its optimizer.safetensors."""
    path = Path(path)
    return read_optimizer_state(path / "optimizer.safetensors" if path.is_dir() else path)
