"""Typed configuration of LoRA training (warmup now, `lessdb train` later) and its presets.

Defaults are the paper's (LESS §4.1 / Appendix A.2), meant for a GPU. `cpu-small` sizes a warmup for a
2-core laptop CPU so the quickstart's warmup takes a few minutes on the real SmolLM2-135M; it turns exactly
the knobs listed in `PRESETS["cpu-small"]` and nothing else (same optimizer, schedule shape, loss, seed rules).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..models.batching import CPU_BATCH_TOKENS
from ..choices import DEFAULT_MODEL, MODEL_HELP
from ..errors import LessdbError
from ..names import check_names
from ..settings import DEFAULT_MAX_SEQ_LENGTH, SettingError, check_choices, check_ranges, raise_problems, setting

PAPER_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")

# Each preset overrides these fields; everything else stays at the paper's default or the user's flag.
PRESETS: dict[str, dict] = {
    # The paper's settings (the defaults), named so a run can say so.
    "paper": {},
    # A few minutes on a 2-core CPU with the real SmolLM2-135M: shorter sequences (256 vs 2048), a much
    # smaller LoRA (r=8, alpha=32: the paper's alpha/r = 4), at most 64 warmup examples, 2 epochs (N >= 2
    # checkpoints, so the influence sum still spans several epochs), effective batch 8 in micro-batches of 4
    # (8 optimizer steps per epoch at 64 examples, so the 1 warm-up step at lr 0 is a small part of epoch 1
    # and the cosine decay is visible; on a CPU the 512-padded-token cap of lessdb/models/batching.py makes the forward
    # passes 2 × 256). Optimizer, lr and schedule shape are the paper's; all layers kept.
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



@dataclass(frozen=True)
class LoraSettings:
    r: int = setting(128, "LoRA rank.", flag="--lora-r", min=1)
    alpha: int = setting(512, "LoRA alpha.", flag="--lora-alpha", above=0)
    dropout: float = setting(0.1, "LoRA dropout.", flag="--lora-dropout", min=0, below=1)
    target_modules: tuple[str, ...] = setting(PAPER_TARGET_MODULES, "Comma-separated module names to adapt.",
                                              flag="--target-modules", show=",".join(PAPER_TARGET_MODULES))

    def validate(self) -> None:
        problems = []
        check_ranges(self, problems)
        if not self.target_modules:
            problems.append(("target_modules", "must name at least one module"))
        raise_problems(self, problems)


@dataclass(frozen=True)
class TrainingSettings:
    """Optimizer, schedule and batching. `batch_size` is the effective batch (one optimizer step);
    `micro_batch_size` only bounds memory: the loss is normalised over the whole effective batch, so the
    result does not depend on it (up to float summation order)."""
    lr: float = setting(2e-5, "Peak learning rate.", above=0)
    epochs: int = setting(4, "Epochs = checkpoints N.", min=1)
    batch_size: int = setting(128, "Effective batch per optimizer step.", min=1)
    micro_batch_size: int = setting(8, "Examples per forward pass (memory only; on a CPU also at most "
                                     f"{CPU_BATCH_TOKENS} padded tokens).", min=1)
    warmup_ratio: float = setting(0.03, "Linear warm-up fraction of steps.", min=0, below=1)
    max_seq_length: int = setting(DEFAULT_MAX_SEQ_LENGTH, "Truncate examples to this many tokens.", min=8)
    beta1: float = setting(0.9, "AdamW beta1.", cli=False)
    beta2: float = setting(0.999, "AdamW beta2.", cli=False)
    eps: float = setting(1e-8, "AdamW epsilon.", cli=False)
    weight_decay: float = setting(0.0, "AdamW weight decay.", cli=False)
    # HF Trainer's default, which LESS's runs used; 0 disables clipping
    max_grad_norm: float = setting(1.0, "Gradient clipping norm (0: none).", cli=False)
    seed: int = setting(0, "Seed of the random subset (warmup) or random:P (train), LoRA init, order, dropout.")

    def validate(self) -> None:
        problems = []
        check_ranges(self, problems)
        raise_problems(self, problems)


DEVICE_HELP = "auto (cuda with bf16 if available, else cpu), cpu or cuda."


@dataclass(frozen=True)
class WarmupConfig:
    pool: str = setting(help="Pool to draw the warmup subset from.")
    model: str = setting(DEFAULT_MODEL, MODEL_HELP + ".")
    percentage: float = setting(0.05, "Fraction of the pool to train on (0.05 means 5%).", above=0, max=1)
    # presets use it; None: p% of the pool
    max_examples: int | None = setting(None, "Cap on the subset size.", min=1)
    lora: LoraSettings = setting(default_factory=LoraSettings, cli=False)
    training: TrainingSettings = setting(default_factory=TrainingSettings, cli=False)
    device: str = setting("auto", DEVICE_HELP)
    preset: str | None = setting(None, "Named settings; explicit options override them.", choices=tuple(PRESETS))
    run_id: str | None = setting(None, "Name of the new run, or the run to resume.", show="a fresh id")

    @property
    def seed(self) -> int:
        return self.training.seed

    def validate(self) -> None:
        problems = []
        check_choices(self, problems)
        check_ranges(self, problems)
        check_names(self, problems, "run_id")   # it becomes the folder checkpoints/<run id>/
        raise_problems(self, problems)
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


@dataclass(frozen=True)
class TrainConfig:
    selection: str = setting(help="A selection id or name (see `lessdb selections`), 'full' (every candidate of the "
                             "pool) or 'random:P' (a seeded random fraction P of the pool, e.g. random:0.05).")
    pool: str | None = setting(None, "Pool for full / random:P (default: the only pool); selections carry theirs.")
    model: str | None = setting(None, MODEL_HELP + ". A model other than the selection's is LESS-T and is recorded "
                                "as a transfer.", show=f"the selection's warmup model (full, random:P: the pool's newest warmup's), "
                                f"else {DEFAULT_MODEL}")
    lora: LoraSettings = setting(default_factory=LoraSettings, cli=False)
    training: TrainingSettings = setting(default_factory=TrainingSettings, cli=False)
    device: str = setting("auto", DEVICE_HELP)
    preset: str | None = setting(None, "Named settings (the warmup's; an example cap does not apply); explicit "
                                 "options override them.", choices=tuple(PRESETS))
    run_id: str | None = setting(None, "Name of the new run, or the run to resume.", show="a fresh id")

    @property
    def seed(self) -> int:
        return self.training.seed

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lora"]["target_modules"] = list(self.lora.target_modules)
        return d

    def validate(self) -> None:
        problems: list[tuple[str, str]] = []
        check_choices(self, problems)
        check_names(self, problems, "run_id")   # it becomes the folder checkpoints/<run id>/
        raise_problems(self, problems)
        self.lora.validate()
        self.training.validate()

    @classmethod
    def from_stored(cls, stored: dict, run_id: str) -> "TrainConfig":
        """The config a run recorded (`run_train`'s stored config), for resuming it."""
        lora = {**stored["lora"], "target_modules": tuple(stored["lora"]["target_modules"])}
        return cls(selection=stored["selection"], pool=stored.get("pool"), model=stored["model"],
                   lora=LoraSettings(**lora), training=TrainingSettings(**stored["training"]),
                   device=stored.get("device") or "auto", preset=stored.get("preset"), run_id=run_id)


def run_max_seq_length(run: dict) -> int:
    """The token window a run trained with, from its recorded config: a warmup's `warmup.training`, a train run's
    `training`, an older run's top level; the paper's 2048 where none is recorded. A whole number is taken however
    it was stored: a float (256.0) or a numpy integer, which the config's JSON holds as a string ("256"); a bool, a
    fraction or a non-positive value is no window and the next place is tried."""
    cfg = run.get("config") or {}
    for path in (("warmup", "training", "max_seq_length"), ("training", "max_seq_length"), ("max_seq_length",)):
        node = cfg
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        window = _whole_number(node)
        if window is not None and window > 0:
            return window
    return DEFAULT_MAX_SEQ_LENGTH


def _whole_number(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


LORA_PREFIX = "lora_"   # flat keys of LoRA settings: lora_r, lora_alpha, lora_dropout, lora_target_modules


def flat_settings() -> dict[str, tuple[type, str]]:
    """The flat option names of warmup and train (as the CLI and presets have them) -> (settings class, field)."""
    out = {LORA_PREFIX + f.name: (LoraSettings, f.name) for f in dataclasses.fields(LoraSettings)}
    out.update({f.name: (TrainingSettings, f.name) for f in dataclasses.fields(TrainingSettings)})
    return out


def _split_flat(flat: dict) -> tuple[dict, dict, dict]:
    """Flat options -> (LoraSettings kwargs, TrainingSettings kwargs, the rest)."""
    if "target_modules" in flat:   # the flag's historical key
        flat[LORA_PREFIX + "target_modules"] = flat.pop("target_modules")
    lora, training, rest = {}, {}, {}
    known = flat_settings()
    for key, value in flat.items():
        cls, name = known.get(key, (None, key))
        (lora if cls is LoraSettings else training if cls is TrainingSettings else rest)[name] = value
    if isinstance(lora.get("target_modules"), str) or "target_modules" in lora:
        tm = lora["target_modules"]
        lora["target_modules"] = tuple(x.strip() for x in (tm.split(",") if isinstance(tm, str) else tm) if x.strip())
    return lora, training, rest


def _preset_values(preset: str | None) -> dict:
    if preset is not None and preset not in PRESETS:
        raise SettingError(WarmupConfig, [("preset", f"{preset!r}: unknown; choose one of {', '.join(PRESETS)}")])
    return dict(PRESETS.get(preset or "paper", {}))


def build_warmup_config(pool: str, preset: str | None = None, **overrides) -> WarmupConfig:
    """A WarmupConfig from flat options (as the CLI has them): preset values first, then any option given
    explicitly (None means "not given"). Flat keys: WarmupConfig's fields, `lora_` + LoraSettings' fields
    and TrainingSettings' fields (`flat_settings`)."""
    flat = _preset_values(preset)
    flat.update({k: v for k, v in overrides.items() if v is not None})
    lora, training, rest = _split_flat(flat)
    unknown = set(rest) - {f.name for f in dataclasses.fields(WarmupConfig)}
    if unknown:
        raise LessdbError(f"unknown warmup settings: {sorted(unknown)}")
    cfg = WarmupConfig(pool=pool, preset=preset, lora=LoraSettings(**lora), training=TrainingSettings(**training),
                       **rest)
    cfg.validate()
    return cfg


def build_train_config(selection: str, preset: str | None = None, **overrides) -> TrainConfig:
    """A TrainConfig from flat options as the CLI has them (None = not given), with the warmup's LoRA, optimizer,
    schedule and preset handling (so the same option means the same thing). A preset's warmup-only example cap
    does not apply: `train` trains on every example of the selection (random:P draws a fraction)."""
    flat = {k: v for k, v in _preset_values(preset).items() if k in flat_settings()}
    flat.update({k: v for k, v in overrides.items() if v is not None})
    lora, training, rest = _split_flat(flat)
    for key in ("percentage", "max_examples"):
        if key in rest:
            raise SettingError(WarmupConfig, [(key, "is a warmup setting; `lessdb train` trains on every example "
                                                    "of the selection (use random:P for a random fraction)")])
    unknown = set(rest) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise LessdbError(f"unknown train settings: {sorted(unknown)}")
    cfg = TrainConfig(selection=selection, preset=preset, lora=LoraSettings(**lora),
                      training=TrainingSettings(**training), **rest)
    cfg.validate()
    return cfg
