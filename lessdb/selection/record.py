"""Recording a selection: max over subtasks, top k (ties by id), the members, and a selection row with its
provenance (task version, run, feature set, checkpoints and weights, sketch, table versions, filter, method
parameters, unscorable counts, score histogram) — everything a replay needs (SPEC §3)."""
from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import faults
from ..errors import LessdbError
from ..settings import ref
from .config import invalid
from .methods import Scores
from .noise import quick as sketch_noise_line
from .plan import CANDIDATES, Plan


@dataclass
class Member:
    rank: int
    candidate_id: str
    score: float
    best_subtask: str | None
    target: str | None = None    # the target task that claimed it (choose.py)


@dataclass
class SelectionResult:
    selection_id: str
    name: str | None
    task: str
    task_hash: str
    method: str
    pool: str
    k: int
    percentage: float | None
    n_candidates: int          # passed the filter
    n_scored: int
    n_unscorable: int
    members: list[Member]
    provenance: dict
    seconds: float
    replay_of: str | None = None
    identical: bool | None = None    # replays: same members, ranks and scores as the original
    output: str | None = None
    notes: list[str] = field(default_factory=list)
    partial: dict | None = None      # allow_partial: what the feature set lacked (None: every candidate had a vector)

    def summary(self, top: int = 10) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "members"}
        d["members_head"] = [asdict(m) for m in self.members[:top]]
        return d

    def as_dict(self) -> dict:
        """What `lessdb select --json` prints (its notes name settings by field; the CLI shows flags)."""
        return self.summary()


def require_candidates(ws, plan: Plan, ids: list[str]) -> None:
    """A clear error when the filter (or the pool) leaves nothing to score, or fewer candidates than k could ever
    be scored: before any model loads or feature is read (at most len(ids) candidates get a score)."""
    from ..storage.candidates import select_candidate_ids
    from .choose import k_from_percentage

    if ids and plan.count is not None and plan.count > len(ids):
        raise invalid([("count", f"{plan.count:,} exceeds the {len(ids):,} candidates of pool {plan.pool!r}"
                                 + (" that pass the filter" if plan.where else "") + "; nothing was scored")])
    if ids and plan.percentage is not None and k_from_percentage(plan.percentage, len(ids)) < 1:
        raise invalid([("percentage", f"{plan.percentage} of the {len(ids):,} candidates of pool {plan.pool!r} is "
                                      f"{plan.percentage * len(ids):.2f} < 1; use {ref('count')} or a larger "
                                      f"{ref('percentage')}")])
    if ids:
        return
    total = len(select_candidate_ids(ws, plan.pool, None, plan.versions[CANDIDATES]))
    if plan.where:
        raise invalid([("where", f"{plan.where!r} matched none of the {total:,} candidates in pool "
                                 f"{plan.pool!r}; nothing to select")])
    raise LessdbError(f"pool {plan.pool!r} has no candidates (ingest some with `lessdb ingest`)")


def record_selection(ws, plan: Plan, ids: list[str], scores: Scores, started: float, name: str | None,
                     output: str | None, notes: list[str], force: bool = False) -> SelectionResult:
    """Top k of the scored candidates, written as one selection row plus its members."""
    from .. import __version__
    from ..storage import meta_selections as meta
    from .choose import choose
    from .scoring import k_from_percentage

    best = scores.per_subtask.max(axis=1) if scores.per_subtask.shape[1] else np.zeros(len(ids))
    valid = scores.valid & np.isfinite(best)
    n_scored = int(valid.sum()) + scores.n_coarse_only   # with --prefilter, k = p·N counts the whole pool
    n_unscorable = len(ids) - n_scored
    if n_scored == 0:
        reasons = ", ".join(f"{n} {r}" for r, n in scores.unscorable.items() if n) or "no scores"
        raise LessdbError(f"none of the {len(ids):,} candidates could be scored ({reasons})")
    if plan.count is not None:
        k = plan.count
        if k > n_scored:
            raise invalid([("count", f"{k} exceeds the {n_scored:,} candidates that have a score")])
    elif plan.percentage is not None:
        base, what = percentage_base(plan.params, len(ids), n_scored)
        k = k_from_percentage(plan.percentage, base)
        if k < 1:
            raise invalid([("percentage", f"{plan.percentage} of {base:,} {what} is "
                                          f"{plan.percentage * base:.2f} < 1; use {ref('count')} or a larger "
                                          f"{ref('percentage')}")])
        if k > n_scored:   # candidates that can never have a score (no completion token) count in N
            notes = list(notes) + [f"{plan.percentage} of {base:,} {what} is {k:,}, more than the {n_scored:,} "
                                   f"that have a score: all {n_scored:,} were taken"]
            k = n_scored
    else:
        k = None   # a token budget alone decides
    # the top k, or targets taking turns, a token budget, near-duplicates skipped (choose.py)
    choice = choose(ws, plan, ids, scores.per_subtask, scores.subtasks, valid, k)
    k = len(choice.members)
    members = [Member(rank + 1, ids[row], score, sub, target)
               for rank, (row, target, score, sub) in enumerate(choice.members)]
    plan.params.update(choice.record)
    # (the noise line compares the k-th score with the median of all scores: a prefilter has exact scores of
    # its shortlist only)
    noise = None if plan.params.get("prefilter") else sketch_noise_line(plan, best, valid,
                                                                        min(m.score for m in members))
    if noise:
        plan.params["diagnostics"] = noise

    selection_id = "sel-" + uuid.uuid4().hex[:10]
    params = {k_: v for k_, v in plan.params.items() if not k_.startswith("_")}
    # the select stage's compute, for validate's selection-to-tuning ratio (issue 22)
    params["compute"] = {"select_seconds": round(time.monotonic() - started, 3), "device": plan.params.get("device")}
    params.update({"pool": plan.pool, "count": plan.count, "subtasks": list(scores.subtasks),
                   "n_candidates": len(ids), "unscorable": scores.unscorable,
                   "score_histogram": _histogram(best[valid], members[-1].score)})
    fs = plan.fs if plan.spec.feature_required else None
    sketch = None if fs is None else dict(fs.sketch, grad_kind=fs.grad_kind, bias_correction=fs.bias_correction,
                                          max_seq_length=fs.max_seq_length, model_sha256=fs.model_sha256)
    row = {"selection_id": selection_id, "name": name, "task": plan.task_name, "task_hash": plan.task_hash,
           "method": plan.method, "params": params, "run_id": plan.run_id,
           "feature_set_id": None if fs is None else fs.feature_set_id,
           "checkpoints": plan.epochs or None, "weights": plan.weights or None, "sketch": sketch,
           "table_versions": plan.versions, "sql_filter": plan.where, "k": k,
           "percentage": plan.percentage, "seed": plan.seed, "n_scored": n_scored, "n_unscorable": n_unscorable,
           "replay_of": None if plan.recorded is None else plan.recorded["selection_id"],
           "lessdb_version": __version__}
    import pyarrow as pa

    members_table = pa.table({
        "rank": pa.array([m.rank for m in members], pa.int64()),
        "candidate_id": pa.array([m.candidate_id for m in members], pa.string()),
        "pool": pa.array([plan.pool] * len(members), pa.string()),
        "score": pa.array([m.score for m in members], pa.float64()),
        "best_subtask": pa.array([m.best_subtask for m in members], pa.string())})
    faults.point("select.before_record")
    meta.insert_selection(ws, row, members_table, extras=choice.tables(selection_id, ids))
    faults.point("select.before_tag")
    meta.tag_versions(ws, plan.versions, selection_id)
    result = SelectionResult(selection_id, name, plan.task_name, plan.task_hash, plan.method, plan.pool, k,
                             plan.percentage, len(ids), n_scored, n_unscorable, members,
                             {k_: v for k_, v in row.items() if k_ not in ("selection_id", "name")},
                             time.monotonic() - started, replay_of=row["replay_of"],
                             notes=list(notes) + list(plan.params.get("_notes", [])),
                             partial=plan.params.get("partial"))
    if output:
        from .export import export_selection

        result.output = export_selection(ws, selection_id, output, force=force)["path"]
    result.seconds = time.monotonic() - started
    return result


def percentage_base(params: dict, n_candidates: int, n_scored: int) -> tuple[int, str]:
    """(N, what N counts) for k = floor(p*N): the filtered pool (every candidate that passes the filter, scored or
    not; README, "Select"), or, for selections recorded before that rule, the candidates that got a score."""
    if params.get("percentage_of") == "filtered":
        return n_candidates, "filtered candidates"
    return n_scored, "scored candidates"


def same_as_recorded(ws, result: SelectionResult, original_id: str) -> bool:
    """Replay bookkeeping: the replay's members, ranks, scores and best subtasks equal the original's."""
    from ..storage import meta_selections as meta

    original = meta.selection_members(ws, original_id)
    mine = [(m.rank, m.candidate_id, m.score, m.best_subtask) for m in result.members]
    theirs = list(zip(*(original.column(c).to_pylist() for c in ("rank", "candidate_id", "score", "best_subtask"))))
    return mine == theirs


def _histogram(scores: np.ndarray, threshold: float, bins: int = 20) -> dict:
    counts, edges = np.histogram(scores, bins=bins)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts], "threshold": threshold,
            "min": float(scores.min()), "max": float(scores.max()), "mean": float(scores.mean())}
