"""Typed configuration of LoRA training (warmup now, `lessdb train` later) and its presets.

Defaults are the paper's (LESS §4.1 / Appendix A.2), meant for a GPU. `cpu-small` sizes a warmup for a
2-core laptop CPU so the quickstart's warmup takes a few minutes on the real SmolLM2-135M; it turns exactly
the knobs listed in `PRESETS["cpu-small"]` and nothing else (same optimizer, schedule shape, loss, seed rules).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import LessdbError

PAPER_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class LoraSettings:
    r: int = 128
    alpha: int = 512
    dropout: float = 0.1
    target_modules: tuple[str, ...] = PAPER_TARGET_MODULES

    def validate(self) -> None:
        if self.r < 1 or self.alpha <= 0 or not (0.0 <= self.dropout < 1.0) or not self.target_modules:
            raise LessdbError(f"invalid LoRA settings: {self}")


@dataclass(frozen=True)
class TrainingSettings:
    """Optimizer, schedule and batching. `batch_size` is the effective batch (one optimizer step);
    `micro_batch_size` only bounds memory: the loss is normalised over the whole effective batch, so the
    result does not depend on it (up to float summation order)."""
    lr: float = 2e-5
    epochs: int = 4
    batch_size: int = 128
    micro_batch_size: int = 8
    warmup_ratio: float = 0.03
    max_seq_length: int = 2048
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0       # HF Trainer's default, which LESS's runs used; 0 disables clipping
    seed: int = 0

    def validate(self) -> None:
        problems = []
        if self.lr <= 0:
            problems.append(f"lr {self.lr} must be > 0")
        if self.epochs < 1:
            problems.append(f"epochs {self.epochs} must be >= 1")
        if self.batch_size < 1 or self.micro_batch_size < 1:
            problems.append("batch sizes must be >= 1")
        if not (0.0 <= self.warmup_ratio < 1.0):
            problems.append(f"warmup_ratio {self.warmup_ratio} must be in [0, 1)")
        if self.max_seq_length < 8:
            problems.append(f"max_seq_length {self.max_seq_length} is too small")
        if problems:
            raise LessdbError("invalid training settings: " + "; ".join(problems))


@dataclass(frozen=True)
class WarmupConfig:
    pool: str
    model: str = "smollm2-135m"
    percentage: float = 0.05
    max_examples: int | None = None   # cap on the random subset (presets use it); None: p% of the pool
    lora: LoraSettings = field(default_factory=LoraSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    device: str = "auto"              # auto: cuda (bf16) when available, else cpu (float32)
    preset: str | None = None
    run_id: str | None = None         # None: a fresh id

    @property
    def seed(self) -> int:
        return self.training.seed

    def validate(self) -> None:
        if not (0.0 < self.percentage <= 1.0):
            raise LessdbError(f"--percentage {self.percentage}: must be in (0, 1] (0.05 means 5%)")
        if self.max_examples is not None and self.max_examples < 1:
            raise LessdbError(f"max_examples {self.max_examples} must be >= 1")
        self.lora.validate()
        self.training.validate()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lora"]["target_modules"] = list(self.lora.target_modules)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "WarmupConfig":
        lora = dict(d.get("lora") or {})
        if "target_modules" in lora:
            lora["target_modules"] = tuple(lora["target_modules"])
        known = {f.name for f in dataclasses.fields(cls)}
        rest = {k: v for k, v in d.items() if k in known and k not in ("lora", "training")}
        return cls(lora=LoraSettings(**lora), training=TrainingSettings(**(d.get("training") or {})), **rest)


# Each preset overrides these fields; everything else stays at the paper's default or the user's flag.
PRESETS: dict[str, dict] = {
    # The paper's settings (the defaults), named so a run can say so.
    "paper": {},
    # A few minutes on a 2-core CPU with the real SmolLM2-135M: shorter sequences (256 vs 2048), a much
    # smaller LoRA (r=8, alpha=32: the paper's alpha/r = 4), at most 64 warmup examples, 2 epochs (N >= 2
    # checkpoints, so the influence sum still spans several epochs), effective batch 8 in micro-batches of 4
    # (8 optimizer steps per epoch at 64 examples, so the 1 warm-up step at lr 0 is a small part of epoch 1
    # and the cosine decay is visible). Optimizer, lr and schedule shape are the paper's; all layers kept.
    "cpu-small": {
        "max_seq_length": 256,
        "lora_r": 8,
        "lora_alpha": 32,
        "max_examples": 64,
        "epochs": 2,
        "batch_size": 8,
        "micro_batch_size": 4,
    },
}


def build_warmup_config(pool: str, preset: str | None = None, **overrides) -> WarmupConfig:
    """A WarmupConfig from flat options (as the CLI has them): preset values first, then any option the
    user gave explicitly (None means "not given"). Flat keys: model, percentage, max_examples, device,
    run_id, lora_r, lora_alpha, lora_dropout, target_modules, and every TrainingSettings field."""
    if preset is not None and preset not in PRESETS:
        raise LessdbError(f"--preset {preset!r}: unknown; choose one of {', '.join(PRESETS)}")
    flat = dict(PRESETS.get(preset or "paper", {}))
    flat.update({k: v for k, v in overrides.items() if v is not None})
    lora_keys = {"lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "target_modules": "target_modules"}
    lora = {lora_keys[k]: flat.pop(k) for k in list(flat) if k in lora_keys}
    if "target_modules" in lora:
        tm = lora["target_modules"]
        lora["target_modules"] = tuple(x.strip() for x in (tm.split(",") if isinstance(tm, str) else tm) if x.strip())
    train_fields = {f.name for f in dataclasses.fields(TrainingSettings)}
    training = {k: flat.pop(k) for k in list(flat) if k in train_fields}
    top_fields = {f.name for f in dataclasses.fields(WarmupConfig)}
    unknown = set(flat) - top_fields
    if unknown:
        raise LessdbError(f"unknown warmup options: {sorted(unknown)}")
    cfg = WarmupConfig(pool=pool, preset=preset, lora=LoraSettings(**lora), training=TrainingSettings(**training),
                       **flat)
    cfg.validate()
    return cfg
