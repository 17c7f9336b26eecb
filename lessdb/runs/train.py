"""Step 4 of LESS: LoRA fine-tuning on exactly a selection's examples — `run_train(ws, TrainConfig)`.

- What is trained on: every member of a recorded selection (read at the candidates version the selection
  read, so later appends change nothing), or `full` (every candidate of a pool) or `random:P` (a seeded
  draw of ⌊P·N⌋ candidates, the warmup's draw), so the paper's baselines run through the same path.
  Members that keep no completion token within max_seq_length are excluded, recorded
  (`run_examples.excluded`) and reported, never trained on.
- How: the warmup's trainer and bookkeeping (`lifecycle.train_registered_run` -> `trainer.train_lora`), with the
  same LoRA/optimizer settings, presets and flags; a checkpoint per epoch, registered as it lands.
- Recorded as a run with kind 'train', `selection_id` (NULL for full/random), config["selection"] = the
  selection id, "full" or "random:P" (what `lessdb compare` groups by), and `is_transfer` = the trained
  model's weights differ from those of the selection's warmup run (LESS-T).
- Resume (`resume_train`): a run killed mid-way continues from its last complete checkpoint with its recorded
  settings, model (sha256-checked) and examples (`run_examples` at the recorded candidates version, in the
  order it was trained on them), never re-resolving `--selection`; it ends bit-identical to an uninterrupted
  run on the same device. The machinery is the warmup's (`lifecycle.prepare_resume`).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from .. import __version__
from ..choices import DEFAULT_MODEL
from ..errors import LessdbError
from ..models.loading import load_base_model, resolve_device
from ..settings import SettingError, ref
from ..storage import meta_runs, meta_selections
from ..storage.candidates import candidates_version, select_candidate_ids
from ..storage.cleanup import clean_up_after_kills
from ..storage.lance_tables import CANDIDATES
from .config import TrainConfig
from .lifecycle import (RunSummary, encode_subset, new_run_id, prepare_resume, run_summary, run_to_resume,
                        sample_subset, schedule_notes, schedule_record, tokens_per_second, train_registered_run)
from .trainer import plan_schedule

FULL = "full"
RANDOM_PREFIX = "random:"


@dataclass
class TrainingSet:
    """The examples a train run is given, resolved from `--selection`."""
    label: str                        # config["selection"]: selection id, "full" or "random:P"
    selection_id: str | None
    pool: str
    version: int
    ids: list[str]
    percentage: float | None
    selection_run_id: str | None = None
    selection_model: str | None = None
    selection_model_sha256: str | None = None


# -- resolving --selection ---------------------------------------------------------------------------------
def parse_random_fraction(spec: str) -> float:
    text = spec[len(RANDOM_PREFIX):]
    try:
        p = float(text)
    except ValueError:
        raise SettingError(TrainConfig, [("selection", f"{spec!r}: P in random:P must be a number in (0, 1], "
                                                        "e.g. random:0.05")]) from None
    if not (0.0 < p <= 1.0):
        raise SettingError(TrainConfig, [("selection", f"{spec!r}: P must be in (0, 1] (0.05 means 5%)")])
    return p


def _pool_or_only(ws, pool: str | None, spec: str) -> str:
    if pool:
        return pool
    pools = meta_selections.pools(ws)
    if len(pools) != 1:
        raise SettingError(TrainConfig, [("selection", f"{spec} needs {ref('pool')}" + (
            f" (pools: {', '.join(pools)})" if pools else ": ingest a pool first with `lessdb ingest`"))])
    return pools[0]


def resolve_training_set(ws, spec: str, pool: str | None, seed: int) -> TrainingSet:
    """The examples of `--selection SPEC` (see the module docstring), with the selection's model if any."""
    spec = (spec or "").strip()
    if not spec:
        raise SettingError(TrainConfig, [("selection", "is required: a selection id or name (see `lessdb "
                                                        "selections`), 'full' or 'random:P' (or "
                                                        f"{ref('resume')} to continue an interrupted train run)")])
    if spec == FULL or spec.startswith(RANDOM_PREFIX):
        pool = _pool_or_only(ws, pool, spec)
        version = candidates_version(ws)
        pool_ids = select_candidate_ids(ws, pool, version=version) if version is not None else []
        if not pool_ids:
            raise LessdbError(f"pool {pool!r} has no candidates; add some with `lessdb ingest FILE --pool {pool}`")
        if spec == FULL:
            out = TrainingSet(FULL, None, pool, version, pool_ids, 1.0)
        else:
            p = parse_random_fraction(spec)
            out = TrainingSet(f"{RANDOM_PREFIX}{p:g}", None, pool, version, sample_subset(pool_ids, p, seed), p)
        out.selection_model = pool_warmup_model(ws, pool)
        return out
    sel = meta_selections.get_selection(ws, spec)
    members = meta_selections.selection_members(ws, sel["selection_id"])
    ids = members.column("candidate_id").to_pylist()
    sel_pool = (sel.get("params") or {}).get("pool") or (members.column("pool")[0].as_py() if ids else None)
    if pool and pool != sel_pool:
        raise SettingError(TrainConfig, f"selection {sel['selection_id']} was drawn from pool {sel_pool!r}, not "
                                        f"{pool!r}; drop {ref('pool')}")
    if not ids:
        raise LessdbError(f"selection {sel['selection_id']} has no members")
    version = (sel.get("table_versions") or {}).get(CANDIDATES)
    out = TrainingSet(sel["selection_id"], sel["selection_id"], sel_pool, version, ids, sel.get("percentage"),
                      selection_run_id=sel.get("run_id"))
    if out.selection_run_id:
        run = meta_runs.get_run(ws, out.selection_run_id)
        out.selection_model, out.selection_model_sha256 = run["model_name"], run["model_sha256"]
    else:   # a text method's selection (bm25, random, ...): no run of its own
        out.selection_model = pool_warmup_model(ws, sel_pool)
    return out


def pool_warmup_model(ws, pool: str) -> str | None:
    """The model of the pool's newest complete warmup: what the baselines (full, random:P, text-method
    selections) train when no --model is given, so they compare with a LESS selection trained without one
    (SmolLM2 only for a pool with no warmup)."""
    warm = [r for r in meta_runs.list_runs(ws, kind="warmup", pool=pool) if r["status"] == "complete"]
    return warm[-1]["model_name"] if warm else None


# -- entry points ------------------------------------------------------------------------------------------
def run_train(ws, config: TrainConfig, *, progress: bool = True, on_checkpoint=None) -> RunSummary:
    """Train a fresh run on `config.selection`'s examples; see the module docstring."""
    t0 = time.monotonic()
    config.validate()
    clean_up_after_kills(ws)   # every write command first clears what killed processes left
    tset = resolve_training_set(ws, config.selection, config.pool, config.seed)
    device = resolve_device(config.device)
    model = config.model or tset.selection_model or DEFAULT_MODEL
    loaded = load_base_model(ws, model, device=device)
    is_transfer = tset.selection_model_sha256 is not None and loaded.sha256 != tset.selection_model_sha256
    max_len = config.training.max_seq_length
    kept, excluded = encode_subset(ws, loaded, tset.pool, tset.ids, tset.version, max_len)
    if not kept:
        raise SettingError(TrainConfig, f"none of the {len(tset.ids)} examples of {ref('selection')} "
                                        f"{config.selection} keeps a completion token within "
                                        f"{ref('max_seq_length')} {max_len}; raise it")
    plan = plan_schedule(len(kept), config.training)
    run_id = config.run_id or new_run_id("train")
    notes = schedule_notes(len(tset.ids), excluded, plan, config.training, what="selected")
    if is_transfer:
        notes.append(f"LESS-T: training {loaded.name} on a selection made with {tset.selection_model} "
                     f"(run {tset.selection_run_id})")
    stored = {**{k: v for k, v in config.to_dict().items() if k != "selection"}, "model": loaded.name,
              "selection": tset.label, "selection_run_id": tset.selection_run_id,
              "selection_model_sha256": tset.selection_model_sha256, "candidates_version": tset.version,
              "n_members": len(tset.ids), "excluded": excluded, **schedule_record(loaded, plan, notes)}
    meta_runs.create_run(ws, run_id=run_id, kind="train", pool=tset.pool, model_name=loaded.name,
                         model_sha256=loaded.sha256, seed=config.seed, percentage=tset.percentage,
                         n_examples=len(kept), n_excluded=len(excluded), config=stored, device=device,
                         lessdb_version=__version__, selection_id=tset.selection_id, is_transfer=is_transfer,
                         examples=[(c, False) for c, _ in kept] + [(c, True) for c in excluded])
    for note in notes:
        print(f"train: note: {note}", file=sys.stderr)
    results = train_registered_run(ws, run_id, config.lora, config.training, loaded, kept, device,
                                   progress=progress, on_checkpoint=on_checkpoint, label="train")
    summary = run_summary(ws, run_id, device, t0)
    summary.tokens_per_second = tokens_per_second(results)
    return summary


def training_order(ws, run: dict, ids: list[str]) -> list[str]:
    """A train run's kept ids (given sorted by id) in the order `run_train` gave them to the trainer, whose
    per-epoch permutation indexes that list: a selection's rank order (read from the selection the run
    recorded, whose members never change), else by id (full and random:P are drawn sorted)."""
    if not run["selection_id"]:
        return ids
    wanted = set(ids)
    ranked = meta_selections.selection_members(ws, run["selection_id"]).column("candidate_id").to_pylist()
    ordered = [cid for cid in ranked if cid in wanted]
    if len(ordered) != len(ids):
        raise LessdbError(f"run {run['run_id']}: {len(ids) - len(set(ordered))} of its examples are not members "
                          f"of its selection {run['selection_id']}; cannot resume it in its training order")
    return ordered


def resume_train(ws, run_id: str | None = None, pool: str | None = None, *, device: str | None = None,
                 progress: bool = True, on_checkpoint=None) -> RunSummary:
    """Continue a train run from its last complete checkpoint (the latest unfinished train run, of `pool` if
    given, when no run id is given); see the module docstring."""
    t0 = time.monotonic()
    run = run_to_resume(ws, "train", run_id, pool)
    stored = run["config"]
    config = TrainConfig.from_stored(stored, run["run_id"])
    dev = resolve_device(device or config.device)
    point = prepare_resume(ws, run, training=config.training, device=dev, pool=run["pool"],
                           version=stored["candidates_version"], label="train",
                           order=lambda ids: training_order(ws, run, ids))
    if point.complete:
        return run_summary(ws, point.run_id, dev, t0)
    results = train_registered_run(ws, point.run_id, config.lora, config.training, point.loaded, point.kept, dev,
                                   resume_from=point.resume_from, progress=progress, on_checkpoint=on_checkpoint,
                                   label="train")
    summary = run_summary(ws, point.run_id, dev, t0)
    summary.resumed_from_epoch = point.last_epoch
    summary.tokens_per_second = tokens_per_second(results)
    return summary
