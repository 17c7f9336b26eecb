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
from dataclasses import asdict

from ..errors import InputError, ref
from ..storage.cleanup import clean_up_after_kills
from .config import RunOptions, SelectConfig
from .coverage import require_complete_features, require_scored_features
from .methods import Scores, get_method
from .plan import Plan, make_plan, metadata_reads, plan_from_record, prefetch
from .record import SelectionResult, record_selection, require_candidates, same_as_recorded


def select(ws, config: SelectConfig) -> SelectionResult:
    """Run a selection (or, with `config.replay`, replay a recorded one) and record it."""
    config.validate()   # every setting (the name's rule among them) before anything is read or written
    if config.replay:
        return replay(ws, config.replay, name=config.name, output=config.output, force=config.force,
                      **asdict(RunOptions.of(config)))
    check_output(ws, config.output, config.force)
    if config.where is not None:   # before anything is read or written
        from ..storage.user_filter import check_filter

        check_filter(config.where)
    started = time.monotonic()
    clean_up_after_kills(ws)   # every write command first clears what killed processes left
    if config.task:
        from ..tasks.catalog import ensure_builtin_tasks
        from .targets import parse_targets

        ensure_builtin_tasks(ws, [t.name for t in parse_targets(config.task)])   # may write: before the
        # read-only block below
    options = RunOptions.of(config)
    with metadata_reads(ws):
        plan = make_plan(ws, config, options)
        ids = prefetch(ws, plan)
    return _execute(ws, plan, ids, started, config.name, config.output, notes=[], force=config.force)


def replay(ws, ref: str, name: str | None = None, output: str | None = None, progress: bool = RunOptions.progress,
           batch_rows: int = RunOptions.batch_rows, device: str = RunOptions.device, force: bool = False,
           engine: str = RunOptions.engine, ray_address: str = RunOptions.ray_address) -> SelectionResult:
    """Re-run recorded selection `ref` against the LanceDB versions it read; records the replay (replay_of)
    and reports whether members, ranks and scores are identical to the original. How it runs (progress,
    batch_rows, device, engine, ray_address) takes SelectConfig's defaults."""
    from ..storage import meta_selections as meta

    if name is not None:   # a replay records a new selection: its name follows the one rule (lessdb/names.py)
        from ..names import check_name

        check_name(name, "name", SelectConfig)
    check_output(ws, output, force)
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


def check_output(ws, output: str | None, force: bool) -> None:
    """Refuse a bad `output` before the work, not after it. Standard output carries the selection's summary, so
    `-` is no destination here."""
    if not output:
        return
    from ..output_file import is_stdout
    from .export import resolve_target

    if is_stdout(output):
        raise InputError("standard output (-) carries the selection's summary; write the members there with "
                         "`lessdb export SELECTION --output -` after selecting", field=ref("output"))
    resolve_target(output, None, force, workspace=ws, stdout=False)


def _execute(ws, plan: Plan, ids: list[str], started: float, name: str | None, output: str | None,
             notes: list[str], force: bool = False) -> SelectionResult:
    require_candidates(ws, plan, ids)
    require_complete_features(ws, plan, ids)   # a partial feature set is refused before any scoring work
    scores: Scores = get_method(plan.method).score(ws, plan, ids)
    require_scored_features(plan, scores.unscorable, len(ids))
    return record_selection(ws, plan, ids, scores, started, name, output, notes, force=force)
