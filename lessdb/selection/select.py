"""`select(ws, SelectConfig)`: LESS step 3 as a recorded query — SQL filter over candidate metadata, then
streamed scoring of the remaining candidates, top k, and a selection row with everything needed to replay it
(SPEC §1 Step 3, §3). `replay(ws, ref)` re-runs a recorded selection against the table versions it read.

Every method (LESS, its ablations and the baselines; see `methods/`) goes plan (`plan.py`) → per-subtask
scores [N, m] (the method's registered scorer) → max over subtasks → top k (ties by id) → record (`record.py`).
A candidate that cannot be scored (no completion token, no feature) gets no score and is never selected; the
count is recorded.
"""
from __future__ import annotations

import time

from ..storage.cleanup import clean_up_after_kills
from .methods import Scores, get_method, method_names
from .methods.gradient import compute_validation_features  # noqa: F401  (re-exported: older imports)
from .plan import (DEFAULT_PERCENTAGE, Plan, RunOptions, SelectConfig, make_plan, metadata_reads,  # noqa: F401
                   plan_from_record, prefetch)
from .reading import IdIndex  # noqa: F401  (re-exported: older imports)
from .record import Member, SelectionResult, record_selection, require_candidates, same_as_recorded


def __getattr__(name: str):
    if name == "METHODS":   # the registry's names, as the tuple this module used to define
        return method_names()
    raise AttributeError(name)


def select(ws, config: SelectConfig) -> SelectionResult:
    """Run a selection (or, with `config.replay`, replay a recorded one) and record it."""
    if config.output:   # refuse a bad --output before the work, not after it
        from .export import resolve_target

        resolve_target(config.output, None, config.force)
    if config.where is not None and not config.replay:   # before anything is read or written
        from ..storage.user_filter import check_filter

        check_filter(config.where)
    if config.replay:
        return replay(ws, config.replay, name=config.name, output=config.output, progress=config.progress,
                      batch_rows=config.batch_rows, device=config.device, force=config.force,
                      engine=config.engine, ray_address=config.ray_address)
    started = time.monotonic()
    clean_up_after_kills(ws)   # every write command first clears what killed processes left
    if config.task:
        from ..tasks import catalog as tasks

        from .targets import parse_targets

        tasks.ensure_builtin_tasks(ws, [t.name for t in parse_targets(config.task)])   # may write: before the
        # read-only block below
    options = RunOptions(batch_rows=config.batch_rows, device=config.device, progress=config.progress,
                         engine=config.engine, ray_address=config.ray_address)
    with metadata_reads(ws):
        plan = make_plan(ws, config, options)
        ids = prefetch(ws, plan)
    return _execute(ws, plan, ids, started, config.name, config.output, notes=[], force=config.force)


def replay(ws, ref: str, name: str | None = None, output: str | None = None, progress: bool = True,
           batch_rows: int = 4096, device: str = "cpu", force: bool = False, engine: str = "local",
           ray_address: str = "local") -> SelectionResult:
    """Re-run recorded selection `ref` against the LanceDB versions it read; records the replay (replay_of)
    and reports whether members, ranks and scores are identical to the original."""
    from ..storage import meta_selections as meta

    started = time.monotonic()
    options = RunOptions(batch_rows=batch_rows, device=device, progress=progress, engine=engine,
                         ray_address=ray_address)
    with metadata_reads(ws):
        row = meta.get_selection(ws, ref)
        plan = plan_from_record(ws, row, options)
        ids = prefetch(ws, plan)
    result = _execute(ws, plan, ids, started, name, output, notes=[f"replay of {row['selection_id']}"], force=force)
    result.identical = same_as_recorded(ws, result, row["selection_id"])
    return result


def _execute(ws, plan: Plan, ids: list[str], started: float, name: str | None, output: str | None,
             notes: list[str], force: bool = False) -> SelectionResult:
    require_candidates(ws, plan, ids)
    scores: Scores = get_method(plan.method).score(ws, plan, ids)
    return record_selection(ws, plan, ids, scores, started, name, output, notes, force=force)
