"""Step 1 of LESS: warmup LoRA training on a random p% of a pool, registered in the workspace.

Entry points: `run_warmup(ws, WarmupConfig)` and `resume_warmup(ws, run_id)`.

- The subset: `floor(p * N)` candidates (at least 1, at most `max_examples`) drawn without replacement by
  `numpy.random.default_rng(seed)` from the pool's candidate ids sorted, at the pool's current LanceDB
  version (recorded, so a resume reads exactly the same rows). Sampled examples that keep no completion
  token after truncation are excluded, recorded (`run_examples.excluded`) and reported, never trained on.
- Token counts (prompt, completion, total, truncated) of every candidate of the pool for this tokenizer and
  max_seq_length go to `token_counts`, so SQL filters can use them.
- Training, checkpoints and eta-bar: `lessdb.training.train_lora`. Each complete checkpoint is registered in
  `checkpoints` right after its directory is renamed into place; a checkpoint dir that was renamed but not
  registered (killed in between) is verified by its sha256s and registered on resume.
"""
from __future__ import annotations

import math
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from . import __version__, owners
from .config import WarmupConfig
from .errors import LessdbError
from .models import LoadedModel, load_base_model, resolve_device
from .recovery import clean_up_after_kills
from .storage import meta_runs
from .storage.candidates import (candidates_version, iter_candidate_batches, read_candidates,
                                 select_candidate_ids)
from .tokenization import (EncodedExample, conversation_format, encode_conversation, pad_token_id,
                           tokenizer_id)
from .training import (EpochResult, build_lora_model, checkpoint_dir, completion_token_count, plan_schedule,
                       read_checkpoint_meta, train_lora)

LOSS_NORMALISATION = "token-mean over the completion tokens of each effective batch"


@dataclass
class WarmupSummary:
    run_id: str
    pool: str
    model_name: str
    model_sha256: str
    device: str
    n_pool: int
    n_sampled: int
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

    def as_dict(self) -> dict:
        return dict(self.__dict__)


# -- pure helpers -------------------------------------------------------------------------------------------
def subset_size(n_pool: int, percentage: float, max_examples: int | None = None) -> int:
    k = max(1, math.floor(n_pool * percentage + 1e-9)) if n_pool else 0
    return min(k, max_examples) if max_examples else k


def sample_subset(sorted_ids: list[str], percentage: float, seed: int, max_examples: int | None = None) -> list[str]:
    """The warmup subset, sorted by id: a seeded draw without replacement from the sorted candidate ids."""
    k = subset_size(len(sorted_ids), percentage, max_examples)
    picks = np.random.default_rng(int(seed)).choice(len(sorted_ids), size=k, replace=False)
    return sorted(sorted_ids[i] for i in picks)


def encode_rows(tokenizer, table: pa.Table, max_seq_length: int) -> list[tuple[str, EncodedExample]]:
    ids = table.column("id").to_pylist()
    messages = table.column("messages").to_pylist()
    return [(cid, encode_conversation(tokenizer, msgs, max_seq_length)) for cid, msgs in zip(ids, messages)]


def record_token_counts(ws, tokenizer, pool: str, max_seq_length: int, version: int | None = None,
                        ids: list[str] | None = None, progress: bool = True) -> str:
    """Store token counts of the pool's candidates (those not yet counted) for this tokenizer; returns its id."""
    tid = tokenizer_id(tokenizer)
    ids = ids if ids is not None else select_candidate_ids(ws, pool, version=version)
    done = meta_runs.counted_candidate_ids(ws, tid, max_seq_length)
    todo = [i for i in ids if i not in done]
    t0, counted = time.monotonic(), 0
    for table in iter_candidate_batches(ws, todo, pool=pool, version=version, batch_size=512):
        rows = encode_rows(tokenizer, table, max_seq_length)
        meta_runs.insert_token_counts(ws, pa.Table.from_pylist([
            {"tokenizer_id": tid, "max_seq_length": max_seq_length, "candidate_id": cid,
             "prompt_tokens": e.prompt_tokens, "completion_tokens": e.completion_tokens,
             "total_tokens": e.total_tokens, "truncated": e.truncated} for cid, e in rows],
            schema=meta_runs.TOKEN_COUNT_SCHEMA))
        counted += len(rows)
        if progress and len(todo) > 512:
            rate = counted / max(time.monotonic() - t0, 1e-9)
            print(f"warmup: token counts {counted}/{len(todo)} candidates, {rate:.0f}/s, "
                  f"ETA {(len(todo) - counted) / max(rate, 1e-9):.0f}s", file=sys.stderr, flush=True)
    return tid


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
    if plan.warmup_steps >= plan.steps_per_epoch:
        notes.append(f"the {plan.warmup_steps} warm-up step(s) cover all of epoch 1, whose lr starts at 0 "
                     "(HF's linear warm-up): its eta-bar is small, as the schedule makes it")
    return notes


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
        if on_checkpoint is not None:
            on_checkpoint(result)

    # the owner lock lets `lessdb runs` / `verify` tell a live run from one killed mid-training (`interrupted`)
    with owners.owning(ws, owners.RUN, run_id, what=f"{label} run {run_id}"):
        try:
            results = train_lora(peft_model, [e for _, e in kept], training, ws.checkpoints_dir / run_id,
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


# -- entry points ------------------------------------------------------------------------------------------
def run_warmup(ws, config: WarmupConfig, *, progress: bool = True, on_checkpoint=None,
               count_tokens: bool = True) -> WarmupSummary:
    """Train a fresh warmup run; see the module docstring. `on_checkpoint(EpochResult)` is called after each
    checkpoint is registered (tests use it to simulate a kill)."""
    config.validate()
    t0 = time.monotonic()
    clean_up_after_kills(ws)   # every write command first clears what killed processes left
    version = candidates_version(ws)
    pool_ids = select_candidate_ids(ws, config.pool, version=version) if version is not None else []
    if not pool_ids:
        raise LessdbError(f"pool {config.pool!r} has no candidates; add some with `lessdb ingest FILE --pool {config.pool}`")
    device = resolve_device(config.device)
    loaded = load_base_model(ws, config.model, device=device)
    subset = sample_subset(pool_ids, config.percentage, config.seed, config.max_examples)
    max_len = config.training.max_seq_length
    if count_tokens:
        record_token_counts(ws, loaded.tokenizer, config.pool, max_len, version, pool_ids, progress)
    kept, excluded = encode_subset(ws, loaded, config.pool, subset, version, max_len)
    if not kept:
        raise LessdbError(f"none of the {len(subset)} sampled examples keeps a completion token within "
                          f"max_seq_length {max_len}; raise --max-seq-length")
    plan = plan_schedule(len(kept), config.training)
    run_id = config.run_id or new_run_id("warmup")
    notes = schedule_notes(len(subset), excluded, plan, config.training)
    stored = {"warmup": config.to_dict(), "candidates_version": version, "n_pool": len(pool_ids),
              **schedule_record(loaded, plan, notes)}
    meta_runs.create_run(ws, run_id=run_id, kind="warmup", pool=config.pool, model_name=loaded.name,
                         model_sha256=loaded.sha256, seed=config.seed, percentage=config.percentage,
                         n_examples=len(kept), n_excluded=len(excluded), config=stored, device=device,
                         lessdb_version=__version__,
                         examples=[(c, False) for c, _ in kept] + [(c, True) for c in excluded])
    for note in notes:
        print(f"warmup: note: {note}", file=sys.stderr)
    return _train(ws, run_id, config, loaded, kept, device, None, notes, len(pool_ids), len(subset), len(excluded),
                  progress, on_checkpoint, t0)


def resume_warmup(ws, run_id: str | None = None, pool: str | None = None, *, device: str | None = None,
                  progress: bool = True, on_checkpoint=None) -> WarmupSummary:
    """Continue a warmup run from its last complete checkpoint (the latest unfinished run of `pool` when
    no run id is given). With the same device, the result equals an uninterrupted run's."""
    t0 = time.monotonic()
    run = run_to_resume(ws, "warmup", run_id, pool)
    stored = run["config"]
    config = WarmupConfig.from_dict(stored["warmup"])
    dev = resolve_device(device or config.device)
    point = prepare_resume(ws, run, model=config.model, training=config.training, device=dev, pool=config.pool,
                           version=stored["candidates_version"], label="warmup")
    if point.complete:
        return _summary_from_db(ws, point.run_id, dev, t0)
    summary = _train(ws, point.run_id, config, point.loaded, point.kept, dev, point.resume_from,
                     list(stored.get("notes", [])), stored.get("n_pool", 0), run["n_examples"] + run["n_excluded"],
                     run["n_excluded"], progress, on_checkpoint, t0)
    summary.resumed_from_epoch = point.last_epoch
    return summary


# -- resuming (shared by `warmup --resume` and `train --resume`) --------------------------------------------
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


def refuse_settings_with_resume(options: dict, preset: str | None = None) -> None:
    """A resumed run keeps its recorded settings: any given setting (None = not given) is an error."""
    given = sorted(k for k, v in options.items() if v is not None) + (["preset"] if preset else [])
    if given:
        raise LessdbError("--resume continues a run with its recorded settings; drop "
                          + ", ".join("--" + k.replace("_", "-") for k in given))


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


def prepare_resume(ws, run: dict, *, model: str, training, device: str, pool: str, version: int | None,
                   label: str, order=None) -> ResumePoint:
    """Everything a resumed run needs, read back from its record, never re-resolved: the same weights
    (sha256-checked), the recorded examples at the recorded candidates version, encoded as before.
    `order(ids sorted by id) -> ids` gives the order the run handed them to the trainer (default: by id),
    which the per-epoch permutation indexes. A run with every checkpoint is marked complete and not loaded."""
    run_id = run["run_id"]
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


def _train(ws, run_id, config: WarmupConfig, loaded: LoadedModel, kept, device, resume_from, notes, n_pool,
           n_sampled, n_excluded, progress, on_checkpoint, t0) -> WarmupSummary:
    results = train_registered_run(ws, run_id, config.lora, config.training, loaded, kept, device,
                                   resume_from=resume_from, progress=progress, on_checkpoint=on_checkpoint,
                                   label="warmup")
    summary = _summary_from_db(ws, run_id, device, t0)
    summary.notes = notes
    summary.tokens_per_second = tokens_per_second(results)
    return summary


def _summary_from_db(ws, run_id: str, device: str, t0: float) -> WarmupSummary:
    run = meta_runs.get_run(ws, run_id)
    cfg = run["config"]
    return WarmupSummary(
        run_id=run_id, pool=run["pool"], model_name=run["model_name"], model_sha256=run["model_sha256"],
        device=device, n_pool=cfg.get("n_pool", 0), n_sampled=run["n_examples"] + run["n_excluded"],
        n_examples=run["n_examples"], n_excluded=run["n_excluded"], steps_per_epoch=cfg["steps_per_epoch"],
        total_steps=cfg["total_steps"], warmup_steps=cfg["warmup_steps"], batch_size=cfg["effective_batch_size"],
        checkpoints=[c.as_dict() for c in meta_runs.list_checkpoints(ws, run_id)], notes=list(cfg.get("notes", [])),
        seconds=time.monotonic() - t0)




def warmup_command(ws, *, pool: str | None, resume: bool = False, run_id: str | None = None,
                   preset: str | None = None, device: str | None = None, progress: bool = True,
                   **options) -> WarmupSummary:
    """What `lessdb warmup` does: resume a run, or build a config from a preset plus the given options (None =
    not given) and train a fresh run."""
    from .config import build_warmup_config

    if resume:
        refuse_settings_with_resume(options, preset)
        return resume_warmup(ws, run_id, pool, device=device, progress=progress)
    if not pool:
        raise LessdbError("--pool is required (the pool to draw the warmup subset from)")
    config = build_warmup_config(pool, preset=preset, run_id=run_id, device=device, **options)
    return run_warmup(ws, config, progress=progress)
