"""From a scorer's per-subtask scores to the recorded members: targets, balance, token budget, near-duplicates.

`picking_options(cfg)` validates the select flags into the plan's recorded `params["picking"]` (so a replay
restores them); `choose(...)` runs `picking.pick` with them and returns the members, what was skipped and why,
and what to record. With one target, no budget and no dedup this is exactly the classic top k (ties by id).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..settings import ref
from . import targets as tgt
from .config import invalid
from .budget import budget_tokenizer, token_array
from .picking import pick


def k_from_percentage(percentage: float, n: int) -> int:
    """k = ⌊p·N⌋, computed without float surprises (0.05·100 = 5.000000000000001)."""
    return int(np.floor(round(percentage * n, 9)))


def picking_options(cfg) -> dict:
    """The recorded picking options of a validated select config (empty for a classic selection: old records
    match). The values were checked against their settings' choices and ranges (SelectConfig.validate)."""
    opts: dict = {}
    if (cfg.balance or "max") != "max":
        opts["balance"] = cfg.balance
    if cfg.max_tokens is not None:
        opts["budget"] = {"max_tokens": int(cfg.max_tokens), "budget_on": cfg.budget_on or "completion"}
    for key in ("dedup", "dedup_text"):
        value = getattr(cfg, key)
        if value is not None:
            opts[key] = float(value)
    return opts


@dataclass
class Choice:
    members: list[tuple[int, str | None, float, str | None]]   # (row, target, score, best subtask) by rank
    skips: list[dict] = field(default_factory=list)
    record: dict = field(default_factory=dict)                  # merged into the selection's params
    tokens: np.ndarray | None = None                            # [N] budget tokens (None: no budget)

    def tables(self, selection_id: str, ids: list[str]) -> dict:
        """The extra rows recorded with the selection (storage/meta_selection_extras.py writes them)."""
        import pyarrow as pa

        n = len(self.members)
        toks = [None if self.tokens is None or np.isnan(self.tokens[r]) else int(self.tokens[r])
                for r, *_ in self.members]
        member_rows = pa.table({
            "selection_id": pa.array([selection_id] * n, pa.string()),
            "rank": pa.array(range(1, n + 1), pa.int64()),
            "candidate_id": pa.array([ids[r] for r, *_ in self.members], pa.string()),
            "target": pa.array([t for _, t, _, _ in self.members], pa.string()),
            "target_score": pa.array([s for _, _, s, _ in self.members], pa.float64()),
            "budget_tokens": pa.array(toks, pa.int64())})
        skip_rows = pa.table({
            "selection_id": pa.array([selection_id] * len(self.skips), pa.string()),
            "seq": pa.array(range(1, len(self.skips) + 1), pa.int64()),
            "candidate_id": pa.array([s["candidate_id"] for s in self.skips], pa.string()),
            "target": pa.array([s["target"] for s in self.skips], pa.string()),
            "score": pa.array([s["score"] for s in self.skips], pa.float64()),
            "reason": pa.array([s["reason"] for s in self.skips], pa.string()),
            "similar_to": pa.array([s["similar_to"] for s in self.skips], pa.string()),
            "similarity": pa.array([s["similarity"] for s in self.skips], pa.float64())})
        return {"members": member_rows, "skips": skip_rows}


def choose(ws, plan, ids: list[str], per_subtask: np.ndarray, subtasks: tuple[str, ...], valid: np.ndarray,
           k: int | None) -> Choice:
    opts = plan.params.get("picking") or {}
    target_names = [t["task"] for t in plan.params.get("targets", [])] or [plan.task_name]
    weights = [float(t.get("weight", 1.0)) for t in plan.params.get("targets", [])] or [1.0]
    multi = len(target_names) > 1
    per_target = (tgt.per_target_scores(per_subtask, subtasks, target_names) if multi
                  else per_subtask.max(axis=1)[:, None])
    record: dict = {}

    tokens, max_tokens = None, None
    budget = opts.get("budget")
    if budget:
        tok = budget_tokenizer(ws, plan)
        tokens = token_array(ws, plan, ids, budget["budget_on"], tok)
        uncounted = int((valid & np.isnan(tokens)).sum())
        valid = valid & ~np.isnan(tokens)
        max_tokens = budget["max_tokens"]
        record["budget"] = dict(budget, tokenizer_id=tok["tokenizer_id"], max_seq_length=tok["max_seq_length"],
                                uncounted=uncounted)

    reject = None
    if opts.get("dedup") is not None or opts.get("dedup_text") is not None:
        from .dedup import make_reject

        reject, dedup_record = make_reject(ws, plan, ids, per_target.max(axis=1), valid, opts)
        record["dedup"] = dedup_record

    balance = opts.get("balance", "max")
    picked = pick(per_target, ids, valid, balance=balance, weights=weights, k=k, tokens=tokens,
                  max_tokens=max_tokens, reject=reject)
    if not picked.rows:
        raise invalid("nothing could be selected: " + (
            f"the best candidate alone exceeds {ref('max_tokens')} {max_tokens}" if budget
            else "every candidate was skipped"))
    with_subtask = subtasks != ("*",)
    members = []
    for row, t in zip(picked.rows, picked.targets):
        if multi:
            sub = tgt.best_subtask_of_target(per_subtask, subtasks, target_names, row, t)
            members.append((row, target_names[t], float(per_target[row, t]), sub))
        else:
            j = int(per_subtask[row].argmax())
            members.append((row, target_names[0], float(per_subtask[row, j]),
                            subtasks[j] if with_subtask else None))
    skips = [{"candidate_id": ids[s.row], "target": target_names[s.target], "score": float(per_target[s.row, s.target]),
              "reason": s.reason, "similar_to": None if s.other_row is None else ids[s.other_row],
              "similarity": s.similarity} for s in picked.skips]
    if budget:
        record["budget"].update(tokens_used=picked.tokens_used, stopped_by=picked.stopped_by)
    if multi:
        counts = {name: 0 for name in target_names}
        for _, name, _, _ in members:
            counts[name] += 1
        record["target_counts"] = counts
    if skips:
        reasons: dict[str, int] = {}
        for s in skips:
            reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
        record["skipped"] = reasons
    if k is not None and len(members) < k:
        record["short_of_k"] = {"k": k, "selected": len(members), "stopped_by": picked.stopped_by}
    return Choice(members, skips, record, tokens)
