"""One LoRA trainer, used by warmup (step 1) and later by `lessdb train` (step 4).

What it does, and why:
- peft LoRA on the configured modules; LoRA A is initialised from `torch.manual_seed(seed)` (B = 0).
- AdamW (torch), no weight decay; HF's linear warm-up (ceil(3% of steps), starting at lr 0) then cosine decay
  to 0 — the schedule LESS's HF Trainer runs. The lr of every optimizer step is read from the optimizer
  right before the step, so eta-bar_i (the mean over epoch i's steps) is the schedule actually applied.
- Loss normalisation: the mean token cross-entropy over all completion tokens of the *effective* batch
  (sum of token CE over its micro-batches / its number of completion tokens). This is what HF's causal-LM
  loss gives a whole batch, and it makes the update independent of `micro_batch_size`. (LESS's reference
  ran micro-batch 1 with HF's older per-micro-batch mean, which weights examples equally instead of tokens.)
- Gradient-norm clipping at 1.0 (HF Trainer's default, which LESS's runs used); 0 disables it.
- Steps per epoch: ceil(n / batch_size), the last batch smaller. A pool smaller than one batch trains with
  one optimizer step per epoch over all its examples.
- Each epoch: a fixed permutation from (seed, epoch); within an optimizer batch examples are ordered by
  length into micro-batches (less padding; the sum is the same).
- After every epoch a checkpoint directory, written under a temp name and renamed when complete:
  adapter_model.safetensors + adapter_config.json (peft), optimizer.safetensors (Adam m, v by parameter
  name, step/betas/eps in its metadata), rng_state.safetensors (torch RNG, so LoRA dropout continues
  identically after `--resume`), checkpoint.json (epoch, step, lrs, loss, sha256 of each file).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import faults
from .completion_loss import completion_token_losses
from .config import LoraSettings, TrainingSettings
from .errors import LessdbError
from .tokenization import IGNORE_INDEX, EncodedExample, collate

OPTIMIZER_FORMAT = "lessdb-adamw/1"
ADAPTER_FILE = "adapter_model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng_state.safetensors"
CHECKPOINT_FILE = "checkpoint.json"
TMP_PREFIX = ".tmp-"


# -- schedule -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SchedulePlan:
    n_examples: int
    batch_size: int          # effective batch actually used (min(requested, n))
    steps_per_epoch: int
    epochs: int
    warmup_steps: int

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


def plan_schedule(n_examples: int, settings: TrainingSettings) -> SchedulePlan:
    if n_examples < 1:
        raise LessdbError("nothing to train on: no example has a completion token left")
    batch = min(settings.batch_size, n_examples)
    steps = math.ceil(n_examples / batch)
    total = steps * settings.epochs
    return SchedulePlan(n_examples, batch, steps, settings.epochs, math.ceil(total * settings.warmup_ratio))


def make_scheduler(optimizer, plan: SchedulePlan):
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, plan.warmup_steps, plan.total_steps)


def epoch_batches(plan: SchedulePlan, seed: int, epoch: int) -> list[list[int]]:
    """Example indices of each optimizer step of `epoch` (1-based): a permutation fixed by (seed, epoch)."""
    perm = np.random.default_rng([int(seed), int(epoch)]).permutation(plan.n_examples).tolist()
    return [perm[i:i + plan.batch_size] for i in range(0, plan.n_examples, plan.batch_size)]


def micro_batches(indices: list[int], lengths: list[int], micro: int) -> list[list[int]]:
    ordered = sorted(indices, key=lambda i: (-lengths[i], i))
    return [ordered[i:i + micro] for i in range(0, len(ordered), micro)]


# -- loss ----------------------------------------------------------------------------------------------------
def token_ce_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum of next-token cross-entropy over labelled positions (labels -100 are ignored), and their count.
    logits [b, t, V] predict token t+1 from position t."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    n = int((shift_labels != IGNORE_INDEX).sum())
    loss = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)),
                                             shift_labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, n


def completion_token_count(example: EncodedExample) -> int:
    return sum(1 for x in example.labels[1:] if x != IGNORE_INDEX)


# -- LoRA ------------------------------------------------------------------------------------------------------
def build_lora_model(model: torch.nn.Module, lora: LoraSettings, seed: int):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(int(seed))  # LoRA A's Kaiming init draws from the global generator
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules), bias="none", task_type="CAUSAL_LM")
    try:
        with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5 (harmless)
            warnings.simplefilter("ignore", FutureWarning)
            return get_peft_model(model, config)
    except ValueError as exc:
        raise LessdbError(f"LoRA target modules {list(lora.target_modules)}: {exc}") from exc


def trainable_named_parameters(peft_model) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]


# -- optimizer state by name ---------------------------------------------------------------------------------
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

    from .models import sha256_file

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
    from .models import sha256_file

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


# -- progress ------------------------------------------------------------------------------------------------
class Progress:
    """Throttled one-line progress on stderr: examples/s, tokens/s, loss, ETA."""

    def __init__(self, total_examples: int, label: str, enabled: bool = True, every: float = 2.0):
        self.total, self.label, self.enabled, self.every = total_examples, label, enabled, every
        self.done = self.tokens = 0
        self.start = self.last = time.monotonic()

    def update(self, examples: int, tokens: int, loss: float | None, epoch: int, force: bool = False) -> None:
        self.done += examples
        self.tokens += tokens
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < self.every):
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        loss_txt = f" loss {loss:.4f}" if loss is not None else ""
        print(f"{self.label}: epoch {epoch}, {self.done}/{self.total} examples, {rate:.2f} ex/s, "
              f"{self.tokens / elapsed:.0f} tok/s,{loss_txt} ETA {_fmt_seconds(eta)}", file=sys.stderr, flush=True)


def _fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# -- the loop ------------------------------------------------------------------------------------------------
@dataclass
class TrainerState:
    """Where training stands: the next epoch to run and the optimizer steps already taken."""
    next_epoch: int = 1
    step: int = 0
    results: list[EpochResult] = field(default_factory=list)


class LoraTrainer:
    """Trains `peft_model`'s trainable (LoRA) parameters on `examples` for settings.epochs epochs, writing a
    checkpoint after each epoch. `optimizer` and `scheduler` are live attributes (tests compare them with
    what the checkpoints store)."""

    def __init__(self, peft_model, examples: list[EncodedExample], settings: TrainingSettings, run_dir: Path, *,
                 pad_token_id: int, device: str, progress_label: str = "train", progress: bool = True,
                 checkpoint_extra: dict | None = None):
        if any(completion_token_count(e) == 0 for e in examples):
            raise LessdbError("an example without completion tokens reached the trainer (must be excluded)")
        self.model, self.examples, self.settings = peft_model, examples, settings
        self.run_dir, self.pad_token_id, self.device = Path(run_dir), pad_token_id, device
        self.progress_label, self.progress = progress_label, progress
        self.plan = plan_schedule(len(examples), settings)
        self.named = trainable_named_parameters(peft_model)
        self.optimizer = torch.optim.AdamW([p for _, p in self.named], lr=settings.lr,
                                           betas=(settings.beta1, settings.beta2), eps=settings.eps,
                                           weight_decay=settings.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, self.plan)
        self.state = TrainerState()
        self.extra = {"steps_per_epoch": self.plan.steps_per_epoch, "total_steps": self.plan.total_steps,
                      "warmup_steps": self.plan.warmup_steps, "batch_size": self.plan.batch_size,
                      **(checkpoint_extra or {})}

    def resume(self, checkpoint: Path) -> None:
        """Load adapter, Adam state, schedule position and RNG of a complete checkpoint of this run."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        meta = read_checkpoint_meta(checkpoint)
        if meta is None:
            raise LessdbError(f"{checkpoint}: not a complete checkpoint")
        if meta.get("steps_per_epoch") not in (None, self.plan.steps_per_epoch):
            raise LessdbError(f"{checkpoint}: written with {meta['steps_per_epoch']} steps per epoch, "
                              f"this run has {self.plan.steps_per_epoch}; the data or settings changed")
        set_peft_model_state_dict(self.model, load_file(str(Path(checkpoint) / ADAPTER_FILE)))
        restore_optimizer_state(self.optimizer, self.named,
                                read_optimizer_state(Path(checkpoint) / OPTIMIZER_FILE), self.device)
        with warnings.catch_warnings():  # stepping the schedule forward without optimizer steps is the point
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(int(meta["optimizer_step"])):
                self.scheduler.step()
        restore_rng_state(load_file(str(Path(checkpoint) / RNG_FILE)))
        self.state = TrainerState(next_epoch=int(meta["epoch"]) + 1, step=int(meta["optimizer_step"]))

    def train(self, on_checkpoint: Callable[[EpochResult], None] | None = None) -> list[EpochResult]:
        plan, settings, examples = self.plan, self.settings, self.examples
        if self.run_dir.exists():
            remove_temp_dirs(self.run_dir)
        lengths = [len(e.input_ids) for e in examples]
        micro = max(1, settings.micro_batch_size)
        remaining = (plan.epochs - self.state.next_epoch + 1) * plan.n_examples
        prog = Progress(remaining, self.progress_label, enabled=self.progress)
        self.model.train()
        for epoch in range(self.state.next_epoch, plan.epochs + 1):
            t0 = time.monotonic()
            lrs, loss_sum, tok_sum, seq_tokens = [], 0.0, 0, 0
            for batch in epoch_batches(plan, settings.seed, epoch):
                n_tokens = sum(completion_token_count(examples[i]) for i in batch)
                batch_loss = 0.0
                for mb in micro_batches(batch, lengths, micro):
                    t = {k: v.to(self.device) for k, v in collate([examples[i] for i in mb], self.pad_token_id).items()}
                    ce_sum = completion_token_losses(self.model, **t).total()  # LM head at label positions only
                    (ce_sum / n_tokens).backward()  # token mean over the whole effective batch
                    batch_loss += float(ce_sum.detach())
                    seq_tokens += sum(lengths[i] for i in mb)
                    prog.update(len(mb), sum(lengths[i] for i in mb),
                                loss_sum / tok_sum if tok_sum else None, epoch)
                if settings.max_grad_norm and settings.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_([p for _, p in self.named], settings.max_grad_norm)
                lrs.append(float(self.optimizer.param_groups[0]["lr"]))  # the lr this step applies
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.state.step += 1
                loss_sum += batch_loss
                tok_sum += n_tokens
            result = EpochResult(epoch=epoch, optimizer_step=self.state.step, mean_lr=float(np.mean(lrs)),
                                 train_loss=loss_sum / tok_sum, lrs=lrs, path="", adapter_sha256="",
                                 optimizer_sha256="", seconds=time.monotonic() - t0, tokens=seq_tokens)
            prog.update(0, 0, result.train_loss, epoch, force=True)
            write_checkpoint(self.model, self.optimizer, self.named, self.run_dir, result, self.extra)
            self.state.results.append(result)
            if on_checkpoint is not None:
                on_checkpoint(result)
        self.model.eval()
        return self.state.results


def train_lora(peft_model, examples: list[EncodedExample], settings: TrainingSettings, run_dir: Path, *,
               pad_token_id: int, device: str, resume_from: Path | None = None,
               on_checkpoint: Callable[[EpochResult], None] | None = None, progress_label: str = "train",
               progress: bool = True, checkpoint_extra: dict | None = None) -> list[EpochResult]:
    """Train (or, with `resume_from`, continue after that checkpoint exactly as an uninterrupted run would)."""
    trainer = LoraTrainer(peft_model, examples, settings, run_dir, pad_token_id=pad_token_id, device=device,
                          progress_label=progress_label, progress=progress, checkpoint_extra=checkpoint_extra)
    if resume_from is not None:
        trainer.resume(resume_from)
    return trainer.train(on_checkpoint)
