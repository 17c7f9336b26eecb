"""The LoRA trainer (loop, optimizer, schedule), used by warmup (step 1) and `lessdb train` (step 4); the stage
entries are warmup.py and train.py, the run lifecycle lifecycle.py and the checkpoint files checkpoints.py.

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

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import LessdbError
from ..models.batching import batches_by_length, token_budget
from ..models.completion_loss import completion_token_losses
from ..models.tokenization import IGNORE_INDEX, EncodedExample, collate, to_device
from ..progress import Progress
from .checkpoints import (ADAPTER_FILE, OPTIMIZER_FILE, RNG_FILE, EpochResult, read_checkpoint_meta,
                          read_optimizer_state, remove_temp_dirs, restore_optimizer_state, restore_rng_state,
                          write_checkpoint)
from .config import LoraSettings, TrainingSettings



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


def micro_batches(indices: list[int], lengths: list[int], micro: int, max_tokens: int | None = None) -> list[list[int]]:
    """The forward passes of one optimizer step: its examples longest first, at most `micro` per pass and, on a
    CPU, at most `max_tokens` padded tokens (memory only: the step's gradient is the same sum either way)."""
    ordered = sorted(indices, key=lambda i: (-lengths[i], i))
    return batches_by_length(ordered, [lengths[i] for i in ordered], micro, max_tokens)


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
        micro, max_tokens = max(1, settings.micro_batch_size), token_budget(self.device)
        remaining = (plan.epochs - self.state.next_epoch + 1) * plan.n_examples
        prog = Progress(self.progress_label, remaining, enabled=self.progress, every_seconds=2.0)
        self.model.train()
        for epoch in range(self.state.next_epoch, plan.epochs + 1):
            t0 = time.monotonic()
            lrs, loss_sum, tok_sum, seq_tokens = [], 0.0, 0, 0
            for batch in epoch_batches(plan, settings.seed, epoch):
                n_tokens = sum(completion_token_count(examples[i]) for i in batch)
                batch_loss = 0.0
                for mb in micro_batches(batch, lengths, micro, max_tokens):
                    t = to_device(collate([examples[i] for i in mb], self.pad_token_id), self.device)
                    ce_sum = completion_token_losses(self.model, **t).total()  # LM head at label positions only
                    (ce_sum / n_tokens).backward()  # token mean over the whole effective batch
                    batch_loss += float(ce_sum.detach())
                    seq_tokens += sum(lengths[i] for i in mb)
                    prog.update(len(mb), tokens=sum(lengths[i] for i in mb),
                                note=f"epoch {epoch}" + (f", loss {loss_sum / tok_sum:.4f}" if tok_sum else ""))
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
            prog.update(0, note=f"epoch {epoch}, loss {result.train_loss:.4f}", force=True)
            write_checkpoint(self.model, self.optimizer, self.named, self.run_dir, result, self.extra)
            self.state.results.append(result)
            if on_checkpoint is not None:
                on_checkpoint(result)
        prog.close()
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
