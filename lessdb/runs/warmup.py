"""Step 1 of LESS: warmup LoRA training on a random p% of a pool, registered in the workspace.

Entry points: `run_warmup(ws, WarmupConfig)` and `resume_warmup(ws, run_id)`.

- The subset: `floor(p * N)` candidates (at least 1, at most `max_examples`) drawn without replacement by
  `numpy.random.default_rng(seed)` from the pool's candidate ids sorted, at the pool's current LanceDB
  version (recorded, so a resume reads exactly the same rows). Sampled examples that keep no completion
  token after truncation are excluded, recorded (`run_examples.excluded`) and reported, never trained on.
- Token counts (prompt, completion, total, truncated) of every candidate of the pool for this tokenizer and
  max_seq_length go to `token_counts` (lessdb/models/token_counts.py), so SQL filters can use them.
- Training, checkpoints and eta-bar: `trainer.train_lora`, through the run lifecycle (`lifecycle.py`). Each complete
  checkpoint is registered in `checkpoints` right after its directory is renamed into place; a checkpoint dir that was renamed but not
  registered (killed in between) is verified by its sha256s and registered on resume.
"""
from __future__ import annotations

import sys
import time

from .. import __version__
from ..errors import LessdbError
from ..models.loading import LoadedModel, load_base_model, resolve_device
from ..models.token_counts import record_token_counts
from ..settings import SettingError, ref
from ..storage import meta_runs
from ..storage.candidates import candidates_version, select_candidate_ids
from ..storage.cleanup import clean_up_after_kills
from .config import WarmupConfig
from .lifecycle import (RunSummary, encode_subset, new_run_id, prepare_resume, run_summary, run_to_resume,
                        sample_subset, schedule_notes, schedule_record, tokens_per_second, train_registered_run)
from .trainer import plan_schedule


def run_warmup(ws, config: WarmupConfig, *, progress: bool = True, on_checkpoint=None,
               count_tokens: bool = True) -> RunSummary:
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
        raise SettingError(WarmupConfig, f"none of the {len(subset)} sampled examples keeps a completion token "
                                         f"within {ref('max_seq_length')} {max_len}; raise it")
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
                  progress: bool = True, on_checkpoint=None) -> RunSummary:
    """Continue a warmup run from its last complete checkpoint (the latest unfinished run of `pool` when
    no run id is given). With the same device, the result equals an uninterrupted run's."""
    t0 = time.monotonic()
    run = run_to_resume(ws, "warmup", run_id, pool)
    stored = run["config"]
    config = WarmupConfig.from_dict(stored["warmup"])
    dev = resolve_device(device or config.device)
    point = prepare_resume(ws, run, training=config.training, device=dev, pool=config.pool,
                           version=stored["candidates_version"], label="warmup")
    if point.complete:
        return run_summary(ws, point.run_id, dev, t0)
    summary = _train(ws, point.run_id, config, point.loaded, point.kept, dev, point.resume_from,
                     list(stored.get("notes", [])), stored.get("n_pool", 0), run["n_examples"] + run["n_excluded"],
                     run["n_excluded"], progress, on_checkpoint, t0)
    summary.resumed_from_epoch = point.last_epoch
    return summary


def _train(ws, run_id, config: WarmupConfig, loaded: LoadedModel, kept, device, resume_from, notes, n_pool,
           n_sampled, n_excluded, progress, on_checkpoint, t0) -> RunSummary:
    results = train_registered_run(ws, run_id, config.lora, config.training, loaded, kept, device,
                                   resume_from=resume_from, progress=progress, on_checkpoint=on_checkpoint,
                                   label="warmup")
    summary = run_summary(ws, run_id, device, t0)
    summary.notes = notes
    summary.tokens_per_second = tokens_per_second(results)
    return summary
