"""Turning scores into members: one greedy picker for every selection (pure functions over score arrays).

The scorers give, for N filtered candidates, a score per target task (T columns; one target is the classic
single-task selection). The picker walks candidates best first and stops at a count k and/or a token budget,
optionally rejecting near-duplicates of what it already took:

- balance "max" (the paper): one ranking by the best score over all targets (= the max over every subtask of
  every target); a member is claimed by the target that gave it that score.
- balance "round-robin" (RDS+'s multi-task selection): the targets take turns, each taking its own next best
  candidate that no other target took yet.
- balance "proportional": weighted turns (the target with the fewest picks per unit of weight goes next, ties
  in the order the targets were given), so each target's count is k·wₜ/Σw up to rounding; a token budget is
  split the same way, each target filling its own share.

Orders are score descending, ties by candidate id ascending, so the result is deterministic. A token budget is
a prefix rule: a target stops at its first candidate that does not fit in what is left of its budget (it does
not skip ahead to shorter ones, which would favour short examples beyond what the scores say).
A rejected candidate (near-duplicate) is skipped and reported, and its target moves on to its next one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

BALANCES = ("max", "round-robin", "proportional")


@dataclass
class Skip:
    row: int               # candidate row that was passed over
    target: int            # the target whose turn it was
    reason: str            # e.g. "near_duplicate_features", "near_duplicate_text"
    other_row: int | None  # the already selected member it resembles
    similarity: float | None


@dataclass
class Picked:
    rows: list[int] = field(default_factory=list)      # in pick order (rank 1 first)
    targets: list[int] = field(default_factory=list)   # claiming target of each row
    skips: list[Skip] = field(default_factory=list)
    tokens_used: int = 0
    stopped_by: str = "count"                          # count | budget | exhausted


# reject(row, chosen_rows) -> (reason, other_row, similarity) or None
Reject = Callable[[int, list[int]], "tuple[str, int | None, float | None] | None"]


def ranking(scores: np.ndarray, ids, valid: np.ndarray) -> np.ndarray:
    """Valid rows by score descending, ties by id ascending."""
    scores = np.asarray(scores, dtype=np.float64)
    ok = np.flatnonzero(np.asarray(valid, dtype=bool) & np.isfinite(scores))
    keys = np.asarray(ids, dtype=object)[ok].astype(str)
    return ok[np.lexsort((keys, -scores[ok]))]


def split_by_weight(total: int, weights: list[float]) -> list[int]:
    """Largest-remainder split of an integer total by weights (remainder ties go to the earlier target)."""
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    base = np.floor(exact + 1e-9).astype(np.int64)
    left = int(total - base.sum())
    order = sorted(range(len(w)), key=lambda t: (-(exact[t] - base[t]), t))
    for t in order[:left]:
        base[t] += 1
    return [int(x) for x in base]


def pick(target_scores: np.ndarray, ids, valid: np.ndarray, *, balance: str = "max",
         weights: list[float] | None = None, k: int | None = None, tokens: np.ndarray | None = None,
         max_tokens: int | None = None, reject: Reject | None = None) -> Picked:
    """Greedy selection over [N, T] per-target scores; see the module docstring.

    `k` caps the number of members (None: no cap, a budget must be given); `tokens` [N] are the per-candidate
    token counts the budget `max_tokens` is spent on; `reject` is asked about each candidate before it is taken.
    """
    scores = np.asarray(target_scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    n_targets = scores.shape[1]
    if balance not in BALANCES:
        raise ValueError(f"balance must be one of {BALANCES}, not {balance!r}")
    if k is None and max_tokens is None:
        raise ValueError("give k, max_tokens or both")
    weights = list(weights) if weights is not None else [1.0] * n_targets
    if max_tokens is not None and tokens is None:
        raise ValueError("a token budget needs token counts")

    if balance == "max" or n_targets == 1:
        best = scores.max(axis=1)
        claim = scores.argmax(axis=1)
        streams = [ranking(best, ids, valid)]
        stream_claims: list[np.ndarray | None] = [claim]
        turn_weights = [1.0]
    else:
        streams = [ranking(scores[:, t], ids, valid) for t in range(n_targets)]
        stream_claims = [None] * n_targets
        turn_weights = weights if balance == "proportional" else [1.0] * n_targets
    n_streams = len(streams)

    budgets: list[float] | None = None
    if max_tokens is not None:
        if balance == "proportional" and n_streams > 1:
            budgets = [max_tokens * w / sum(weights) for w in weights]
        else:
            budgets = [float(max_tokens)]   # shared by every stream
    quotas = split_by_weight(k, turn_weights) if (k is not None and balance == "proportional"
                                                   and n_streams > 1) else None

    out = Picked()
    taken = np.zeros(len(scores), dtype=bool)
    pointer = [0] * n_streams
    count = [0] * n_streams
    spent = [0.0] * (len(budgets) if budgets else 0)
    active = [True] * n_streams
    stopped_by_budget = False

    def next_turn() -> int | None:
        live = [s for s in range(n_streams) if active[s]]
        if not live:
            return None
        if balance == "round-robin":
            # equal turns: the stream with the fewest picks, ties in target order
            return min(live, key=lambda s: (count[s], s))
        return min(live, key=lambda s: (count[s] / turn_weights[s], s))

    while k is None or len(out.rows) < k:
        s = next_turn()
        if s is None:
            break
        if quotas is not None and count[s] >= quotas[s]:
            active[s] = False
            continue
        order = streams[s]
        took = False
        while pointer[s] < len(order):
            row = int(order[pointer[s]])
            if taken[row]:
                pointer[s] += 1
                continue
            if budgets is not None:
                b = s if len(budgets) > 1 else 0
                if spent[b] + float(tokens[row]) > budgets[b]:
                    stopped_by_budget = True
                    break   # prefix rule: this stream is done
            if reject is not None:
                verdict = reject(row, out.rows)
                if verdict is not None:
                    reason, other, sim = verdict
                    claim = stream_claims[s]
                    out.skips.append(Skip(row, int(claim[row]) if claim is not None else s, reason, other, sim))
                    pointer[s] += 1
                    continue
            pointer[s] += 1
            taken[row] = True
            claim = stream_claims[s]
            out.rows.append(row)
            out.targets.append(int(claim[row]) if claim is not None else s)
            if budgets is not None:
                spent[s if len(budgets) > 1 else 0] += float(tokens[row])
                out.tokens_used += int(tokens[row])
            count[s] += 1
            took = True
            break
        if not took:
            active[s] = False
            if quotas is not None and count[s] < quotas[s]:
                quotas = None   # a target ran out short of its share: the others fill the rest by weighted turns
    if k is not None and len(out.rows) >= k:
        out.stopped_by = "count"
    elif stopped_by_budget:
        out.stopped_by = "budget"
    else:
        out.stopped_by = "exhausted"
    return out
