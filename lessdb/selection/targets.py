"""Several target tasks in one selection (`lessdb select --task bbh:2 --task mmlu --balance proportional`).

All targets are scored in ONE pass over the candidate features: their subtasks are merged into one list whose
names are prefixed with the target ("bbh/boolean_expressions"), so the scorer folds them into one query
matrix exactly as it folds one task's subtasks. A target's score for a candidate is the max over its own
subtask columns (the paper's max over subtasks); `picking.pick` then balances the targets.

A single `--task NAME` keeps the unprefixed subtask names, so single-target selections and their replays are
byte for byte what they were.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..settings import ref
from .config import invalid
from .picking import BALANCES

SEPARATOR = "/"


@dataclass(frozen=True)
class Target:
    name: str
    weight: float = 1.0


def parse_targets(specs: list[str] | tuple[str, ...] | str | None) -> list[Target]:
    """`["bbh:2", "mmlu"]` -> targets with weights; a name may appear once."""
    if specs is None:
        return []
    if isinstance(specs, str):
        specs = [specs]
    out: list[Target] = []
    for spec in specs:
        name, sep, weight = str(spec).rpartition(":")
        if not sep:
            name, weight = str(spec), ""
        name = name.strip()
        if not name:
            raise invalid([("task", f"{spec!r}: expected NAME or NAME:WEIGHT")])
        w = 1.0
        if weight:
            try:
                w = float(weight)
            except ValueError:
                raise invalid([("task", f"{spec!r}: weight {weight!r} is not a number")]) from None
            if not (w > 0 and np.isfinite(w)):
                raise invalid([("task", f"{spec!r}: the weight must be a positive number")])
        if any(t.name == name for t in out):
            raise invalid([("task", f"{name} is given twice")])
        out.append(Target(name, w))
    return out


def check_balance(balance: str, targets: list[Target]) -> None:
    if balance not in BALANCES:
        raise invalid([("balance", f"{balance!r}: choose one of {', '.join(BALANCES)}")])
    if balance != "proportional" and any(t.weight != 1.0 for t in targets):
        raise invalid(f"target weights ({ref('task')} NAME:WEIGHT) only apply to {ref('balance')} proportional")


def combined_name(targets: list[Target]) -> str:
    return "+".join(t.name for t in targets)


def combined_hash(hashes: list[str]) -> str:
    """The recorded task_hash of a multi-target selection: a hash of the targets' own hashes, in order."""
    return hashlib.sha256("\0".join(hashes).encode()).hexdigest()[:16]


def merge_subtasks(per_target: list[tuple[str, dict]]) -> dict:
    """{target: {subtask: examples}} -> {"target/subtask": examples}, sorted (the scorer's column order)."""
    merged = {}
    for target, subtasks in per_target:
        for s, exs in subtasks.items():
            merged[f"{target}{SEPARATOR}{s}"] = exs
    return dict(sorted(merged.items()))


def target_of(subtask: str, targets: list[str]) -> str | None:
    """The target a merged subtask column belongs to (None: a single-target selection's plain name)."""
    head = subtask.split(SEPARATOR, 1)[0]
    return head if head in targets else None


def per_target_scores(per_subtask: np.ndarray, subtasks: tuple[str, ...], targets: list[str]) -> np.ndarray:
    """[N, m] merged subtask scores -> [N, T]: each target's max over its own columns. A column "*" (the random
    baseline, which has no subtasks) counts for every target."""
    n = per_subtask.shape[0]
    out = np.full((n, len(targets)), -np.inf)
    for j, s in enumerate(subtasks):
        owner = target_of(s, targets)
        cols = range(len(targets)) if (owner is None) else [targets.index(owner)]
        for t in cols:
            out[:, t] = np.maximum(out[:, t], per_subtask[:, j])
    return out


def best_subtask_of_target(per_subtask: np.ndarray, subtasks: tuple[str, ...], targets: list[str],
                           row: int, target: int) -> str | None:
    """The subtask (merged name) that gave `row` its score for `target`."""
    cols = [j for j, s in enumerate(subtasks) if target_of(s, targets) in (targets[target], None)]
    if not cols or subtasks == ("*",):
        return None
    j = max(cols, key=lambda c: (per_subtask[row, c], -c))
    return subtasks[j]


# -- planning: what the selection records and a replay restores -----------------------------------------------
def _subtask_examples(task) -> dict:
    return {s: [(ex.example_id, ex.messages) for ex in task.subtasks[s]] for s in sorted(task.subtasks)}


def plan_targets(ws, specs) -> tuple[str, str, dict, list[dict]]:
    """(recorded task name, task hash, subtasks to score, recorded targets) for `--task` values.

    One target: its own name, hash and subtasks, and no recorded targets (the classic record). Several:
    "bbh+mmlu", a hash over their hashes, merged "target/subtask" names, and [{task, task_hash, weight}]."""
    from ..tasks.catalog import load_task

    targets = parse_targets(specs)
    if not targets:
        raise invalid([("task", "is required (see `lessdb tasks`)")])
    if len(targets) == 1:   # a weight means nothing without other targets
        task = load_task(ws, targets[0].name)
        return task.name, task.task_hash, _subtask_examples(task), []
    loaded = [load_task(ws, t.name) for t in targets]
    recorded = [{"task": task.name, "task_hash": task.task_hash, "weight": t.weight}
                for t, task in zip(targets, loaded)]
    return (combined_name(targets), combined_hash([t.task_hash for t in loaded]),
            merge_subtasks([(task.name, _subtask_examples(task)) for task in loaded]), recorded)


def recorded_targets(ws, row: dict) -> dict | None:
    """The merged subtasks of a recorded multi-target selection (None: a single-target record)."""
    from ..tasks.catalog import load_task_version

    recorded = (row.get("params") or {}).get("targets")
    if not recorded:
        return None
    return merge_subtasks([(t["task"], _subtask_examples(load_task_version(ws, t["task_hash"], t["task"])))
                           for t in recorded])
