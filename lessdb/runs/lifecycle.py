"""The run lifecycle shared by `warmup` (step 1) and `train` (step 4): which examples a run trains on (a seeded
subset, encoded, those without a completion token excluded), what its record stores about tokenization and
schedule, training a registered run with each checkpoint registered as it lands, and resuming an interrupted run
from its last complete checkpoint with its recorded examples and weights (never re-resolved).
"""
from __future__ import annotations

import math
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import owners
from ..errors import LessdbError
from ..models.loading import LoadedModel, load_base_model
from ..models.tokenization import conversation_format, encode_rows, pad_token_id, tokenizer_id
from ..names import inside
from ..settings import SettingError
from ..storage import meta_runs
from ..storage.candidates import read_candidates
from .checkpoints import EpochResult, checkpoint_dir, read_checkpoint_meta
from .config import WarmupConfig
from .trainer import build_lora_model, completion_token_count, train_lora

LOSS_NORMALISATION = "token-mean over the completion tokens of each effective batch"

_WARMUP_ONLY = ("n_pool", "n_sampled")
_TRAIN_ONLY = ("selection", "selection_id", "is_transfer", "selection_run_id", "n_members", "excluded")


@dataclass
class RunSummary:
    """What a warmup or train run did (`lessdb warmup|train`, their `--json`): the fields both kinds share, then
    each kind's own (warmup: the pool and the sample drawn from it; train: the selection trained on), None for
    the other kind and left out of `as_dict`."""
    kind: str                               # warmup | train
    run_id: str
    pool: str
    model_name: str
    model_sha256: str
    device: str
    n_examples: int
    n_excluded: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    batch_size: int
    checkpoints: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    resumed_from_epoch: int | None = None
    seconds: float = 0.0
    tokens_per_second: float | None = None
    # warmup
    n_pool: int | None = None
    n_sampled: int | None = None
    # train
    selection: str | None = None
    selection_id: str | None = None
    is_transfer: bool | None = None
    selection_run_id: str | None = None
    n_members: int | None = None
    excluded: list[str] | None = None

    def as_dict(self) -> dict:
        other = _TRAIN_ONLY if self.kind == "warmup" else _WARMUP_ONLY
        return {k: v for k, v in self.__dict__.items() if k != "kind" and k not in other}

    def headline(self) -> str:
        if self.kind == "warmup":
            what = f"pool {self.pool} ({self.n_excluded} excluded)"
        else:
            what = (f"{self.selection} (pool {self.pool}; {self.n_excluded} excluded)"
                    + (" [LESS-T transfer]" if self.is_transfer else ""))
        return (f"Run {self.run_id}: {self.model_name} on {self.n_examples} examples of {what}, "
                f"{self.total_steps} optimizer steps (batch {self.batch_size}), device {self.device}")


def run_summary(ws, run_id: str, device: str, t0: float) -> RunSummary:
    """The summary of a registered run as its record and checkpoints say (`t0`: when the command started)."""
    run = meta_runs.get_run(ws, run_id)
    cfg = run["config"]
    summary = RunSummary(
        kind=run["kind"], run_id=run_id, pool=run["pool"], model_name=run["model_name"],
        model_sha256=run["model_sha256"], device=device, n_examples=run["n_examples"], n_excluded=run["n_excluded"],
        steps_per_epoch=cfg["steps_per_epoch"], total_steps=cfg["total_steps"], warmup_steps=cfg["warmup_steps"],
        batch_size=cfg["effective_batch_size"],
        checkpoints=[c.as_dict() for c in meta_runs.list_checkpoints(ws, run_id)],
        notes=list(cfg.get("notes", [])), seconds=time.monotonic() - t0)
    if summary.kind == "warmup":
        summary.n_pool, summary.n_sampled = cfg.get("n_pool", 0), run["n_examples"] + run["n_excluded"]
    else:
        summary.selection, summary.selection_id = cfg["selection"], run["selection_id"]
        summary.is_transfer, summary.selection_run_id = bool(run["is_transfer"]), cfg.get("selection_run_id")
        summary.n_members, summary.excluded = cfg["n_members"], list(cfg.get("excluded", []))
    return summary


def subset_size(n_pool: int, percentage: float, max_examples: int | None = None) -> int:
    k = max(1, math.floor(n_pool * percentage + 1e-9)) if n_pool else 0
    return min(k, max_examples) if max_examples else k


def sample_subset(sorted_ids: list[str], percentage: float, seed: int, max_examples: int | None = None) -> list[str]:
    """The warmup subset, sorted by id: a seeded draw without replacement from the sorted candidate ids."""
    k = subset_size(len(sorted_ids), percentage, max_examples)
    picks = np.random.default_rng(int(seed)).choice(len(sorted_ids), size=k, replace=False)
    return sorted(sorted_ids[i] for i in picks)


def new_run_id(kind: str = "warmup") -> str:
    return kind + "-" + time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def encode_subset(ws, loaded: LoadedModel, pool: str, subset: list[str], version: int, max_seq_length: int):
    """(kept [(id, EncodedExample)], excluded ids): excluded examples keep no completion token."""
    table = read_candidates(ws, subset, pool=pool, version=version, columns=["id", "messages"])
    encoded = encode_rows(loaded.tokenizer, table, max_seq_length)
    kept = [(cid, e) for cid, e in encoded if completion_token_count(e) > 0]
    excluded = [cid for cid, e in encoded if completion_token_count(e) == 0]
    return kept, excluded


def _register(ws, run_id: str, result: EpochResult) -> None:
    meta_runs.add_checkpoint(ws, meta_runs.CheckpointInfo(
        run_id=run_id, epoch=result.epoch, path=result.path, adapter_sha256=result.adapter_sha256,
        optimizer_sha256=result.optimizer_sha256, optimizer_step=result.optimizer_step, mean_lr=result.mean_lr,
        train_loss=result.train_loss))


def schedule_notes(n_sampled: int, excluded: list[str], plan, training, what: str = "sampled") -> list[str]:
    """Notes on exclusions and on how the schedule plays out (shared by warmup and `lessdb train`)."""
    notes = []
    if excluded:
        notes.append(f"{len(excluded)} of {n_sampled} {what} examples have no completion token within "
                     f"max_seq_length {training.max_seq_length} and were excluded (e.g. {excluded[0]})")
    if plan.batch_size < training.batch_size:
        notes.append(f"{plan.n_examples} examples are fewer than the batch size {training.batch_size}: "
                     f"each epoch is one optimizer step over all {plan.n_examples} (effective batch "
                     f"{plan.batch_size})")
    if plan.steps_per_epoch == 1 and what == "sampled":   # a warmup: LESS weighs each checkpoint by its eta-bar
        notes.append(ZERO_ETA_BAR.format(epoch=1) + " (each epoch is one optimizer step here, and epoch 1's is the "
                     "warm-up step at lr 0)")
    elif plan.warmup_steps >= plan.steps_per_epoch:
        notes.append(f"the {plan.warmup_steps} warm-up step(s) cover all of epoch 1, whose lr starts at 0 "
                     "(HF's linear warm-up): its eta-bar is small, as the schedule makes it")
    return notes


ZERO_ETA_BAR = ("epoch {epoch}'s mean learning rate (eta-bar) is 0, so LESS gives its checkpoint no weight: its "
                "features add nothing to a selection's scores. More examples (--percentage, --max-examples) or a "
                "smaller --batch-size give each epoch several optimizer steps")


def schedule_record(loaded: LoadedModel, plan, notes: list[str]) -> dict:
    """The part of a run's stored config that describes tokenization, loss and schedule (warmup and train)."""
    return {"tokenizer_id": tokenizer_id(loaded.tokenizer), "conversation_format": conversation_format(loaded.tokenizer),
            "loss": LOSS_NORMALISATION, "steps_per_epoch": plan.steps_per_epoch, "total_steps": plan.total_steps,
            "warmup_steps": plan.warmup_steps, "effective_batch_size": plan.batch_size,
            "schedule": "linear warm-up from 0, then cosine to 0 (transformers get_cosine_schedule_with_warmup)",
            "optimizer": "torch.optim.AdamW", "notes": notes}


def train_registered_run(ws, run_id: str, lora, training, loaded: LoadedModel, kept, device: str, *,
                         resume_from=None, progress: bool = True, on_checkpoint=None,
                         label: str = "warmup") -> list[EpochResult]:
    """LoRA-train a run already created with `meta_runs.create_run`: build the adapter, train with
    `train_lora`, register each checkpoint as it lands, and set the run's status (complete / failed)."""
    peft_model = build_lora_model(loaded.model, lora, training.seed)

    def register(result: EpochResult) -> None:
        _register(ws, run_id, result)
        print(f"{label}: epoch {result.epoch} checkpoint {result.path} (step {result.optimizer_step}, "
              f"eta-bar {result.mean_lr:.3e}, loss {result.train_loss:.4f})", file=sys.stderr, flush=True)
        if label == "warmup" and result.mean_lr == 0:
            print(f"{label}: warning: {ZERO_ETA_BAR.format(epoch=result.epoch)}", file=sys.stderr, flush=True)
        if on_checkpoint is not None:
            on_checkpoint(result)

    # the owner lock lets `lessdb runs` / `verify` tell a live run from one killed mid-training (`interrupted`)
    with owners.owning(ws, owners.RUN, run_id, what=f"{label} run {run_id}"):
        try:
            results = train_lora(peft_model, [e for _, e in kept], training, inside(ws.checkpoints_dir, run_id),
                                 pad_token_id=pad_token_id(loaded.tokenizer), device=device, resume_from=resume_from,
                                 on_checkpoint=register, progress_label=f"{label} {run_id}", progress=progress)
        except BaseException:
            meta_runs.set_run_status(ws, run_id, "failed")
            raise
        meta_runs.set_run_status(ws, run_id, "complete")
    return results


def tokens_per_second(results: list[EpochResult]) -> float | None:
    seconds = sum(r.seconds for r in results)
    return sum(r.tokens for r in results) / seconds if seconds > 0 else None


@dataclass
class ResumePoint:
    """Where an interrupted run goes on: after `last_epoch`, from `resume_from`, with the run's model and its
    recorded examples (encoded, in training order). `loaded` is None when every checkpoint is already there."""
    run_id: str
    last_epoch: int
    loaded: LoadedModel | None = None
    kept: list = field(default_factory=list)
    resume_from: Path | None = None

    @property
    def complete(self) -> bool:
        return self.loaded is None


def refuse_settings_with_resume(options: dict, preset: str | None = None, config_cls=WarmupConfig) -> None:
    """A resumed run keeps its recorded settings: any given setting (None = not given) is an error."""
    given = sorted(k for k, v in options.items() if v is not None) + (["preset"] if preset else [])
    if given:
        raise SettingError(config_cls, [(tuple(given), "cannot be given when resuming: a resumed run continues with "
                                                       "its recorded settings")])


def run_to_resume(ws, kind: str, run_id: str | None, pool: str | None) -> dict:
    """The run record to resume: `run_id`, else the latest unfinished run of this kind (of `pool` if given)."""
    if run_id is None:
        run_id = meta_runs.latest_unfinished_run(ws, kind, pool)
        if run_id is None:
            raise LessdbError(f"no unfinished {kind} run to resume" + (f" for pool {pool!r}" if pool else ""))
    run = meta_runs.get_run(ws, run_id)
    if run["kind"] != kind:
        raise LessdbError(f"run {run_id} is a {run['kind']} run, not a {kind} run; resume it with "
                          f"`lessdb {run['kind']} --resume --run-id {run_id}`")
    return run


def register_landed_checkpoints(ws, run_id: str, epochs: int) -> int:
    """Register checkpoints renamed into place but not registered (killed in between) if their hashes verify,
    in epoch order; returns the last epoch of the unbroken run of complete checkpoints."""
    registered = {c.epoch for c in meta_runs.list_checkpoints(ws, run_id)}
    run_dir = ws.checkpoints_dir / run_id
    last = max(registered, default=0)
    for epoch in range(1, epochs + 1):
        if epoch in registered:
            continue
        meta = read_checkpoint_meta(checkpoint_dir(run_dir, epoch))
        if meta is None or epoch != last + 1:
            break
        _register(ws, run_id, EpochResult(epoch=epoch, optimizer_step=meta["optimizer_step"], mean_lr=meta["mean_lr"],
                                          train_loss=meta["train_loss"], lrs=meta["lrs"],
                                          path=str(checkpoint_dir(run_dir, epoch)),
                                          adapter_sha256=meta["sha256"]["adapter_model.safetensors"],
                                          optimizer_sha256=meta["sha256"]["optimizer.safetensors"]))
        last = epoch
    return last


def prepare_resume(ws, run: dict, *, training, device: str, pool: str, version: int | None,
                   label: str, order=None) -> ResumePoint:
    """Everything a resumed run needs, read back from its record, never re-resolved: the same weights
    (sha256-checked), the recorded examples at the recorded candidates version, encoded as before.
    `order(ids sorted by id) -> ids` gives the order the run handed them to the trainer (default: by id),
    which the per-epoch permutation indexes. A run with every checkpoint is marked complete and not loaded. The
    model is the run's (`model_name`: a folder inside the workspace where the workspace is now)."""
    run_id, model = run["run_id"], run["model_name"]
    if owners.is_alive(ws, owners.RUN, run_id):
        owner = owners.last_owner(ws, owners.RUN, run_id)
        raise LessdbError(f"run {run_id} is still running (pid {owner.get('pid')} on {owner.get('host')} since "
                          f"{owner.get('started')}); resume it only after that process ends")
    last = register_landed_checkpoints(ws, run_id, training.epochs)
    if last >= training.epochs:
        meta_runs.set_run_status(ws, run_id, "complete")
        print(f"{label}: run {run_id} already has all {training.epochs} checkpoints; nothing to resume",
              file=sys.stderr)
        return ResumePoint(run_id, last)
    loaded = load_base_model(ws, model, device=device)
    if loaded.sha256 != run["model_sha256"]:
        raise LessdbError(f"run {run_id} was trained on weights {run['model_sha256'][:12]}…, but {model} "
                          f"now loads as {loaded.sha256[:12]}…; cannot resume on a different model")
    ids = meta_runs.run_examples(ws, run_id)
    if order is not None:
        ids = order(ids)
    table = read_candidates(ws, ids, pool=pool, version=version, columns=["id", "messages"])
    kept = encode_rows(loaded.tokenizer, table, training.max_seq_length)
    if any(completion_token_count(e) == 0 for _, e in kept):
        raise LessdbError(f"run {run_id}: its examples no longer tokenize as recorded (tokenizer changed?)")
    meta_runs.set_run_status(ws, run_id, "running")
    print(f"{label}: resuming {run_id} after epoch {last}" if last else f"{label}: restarting {run_id} from the start",
          file=sys.stderr)
    return ResumePoint(run_id, last, loaded, kept, checkpoint_dir(ws.checkpoints_dir / run_id, last) if last else None)
