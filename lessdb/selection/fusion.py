"""The hybrid selector's math: fuse LESS's gradient score with BM25's lexical score (pure functions).

Why: on a task-recovery benchmark (bench/recovery.py) BM25 wins when the target's validation examples share a
template with the pool, and gradient similarity is the method meant to find the same skill in another surface
form. The hybrid ranks every candidate by both and fuses them per subtask, before the usual max over subtasks
and top k, so a candidate that is near the top of either list rises.

Rules (neither weight was tuned on any benchmark; both are fixed before looking at results):

- ``rrf``, reciprocal-rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009):
      fused(z) = Σ_s 1 / (K + rank_s(z)),   K = 60,
  rank_s(z) the 1-based rank of z among the scorable candidates under signal s (highest score = 1; tied scores
  share their mean rank, so the result does not depend on candidate order). K = 60 is the constant of the
  original paper, used unchanged by Elasticsearch and others. Ranks ignore each signal's scale, so nothing
  has to be calibrated, and the fused values of different subtasks lie on the same scale (max over subtasks is
  meaningful).
- ``zscore`` (the default since round 3), standardised-score fusion with equal weights:
      fused(z) = ½ · (g(z) − mean g) / sd g + ½ · (b(z) − mean b) / sd b
  over the scorable candidates of the subtask. Equal weight is the rule: once both signals have unit
  variance, neither is preferred a priori. A constant signal (sd 0) contributes 0.

Why z-score is the default: it won on both measured surfaces of bench/recovery.py (13 skills, same surface
0.954 vs RRF 0.923; cross surface 0.262 vs 0.235) and on issue 22's 14-task recovery (0.941 vs 0.821); RRF stays
available (`--method-param fusion=rrf`), and hybrid selections recorded with RRF replay with RRF.

Signals: LESS and BM25 by default; `signals=less,bm25,rds+` adds RDS+ (mean-pooled hidden states) as a third.
With three, z-score weights are gradient_weight on LESS and the rest shared equally (¼, ¼ at the default ½).
"""
from __future__ import annotations

import numpy as np

FUSIONS = ("rrf", "zscore")
RRF_K = 60
SIGNALS = ("less", "bm25")   # gradient score first, lexical second (the order of `weights`)
KNOWN_SIGNALS = ("less", "bm25", "rds+")


def fusion_rule(fusion: str = "zscore", rrf_k: int = RRF_K, gradient_weight: float = 0.5,
                signals: tuple[str, ...] = SIGNALS) -> dict:
    """The complete, recorded rule of a hybrid selection (a replay reads it back)."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, not {fusion!r}")
    signals = tuple(signals)
    if signals[:2] != SIGNALS or not set(signals) <= set(KNOWN_SIGNALS) or len(set(signals)) != len(signals):
        raise ValueError(f"signals must be less,bm25 optionally followed by rds+, not {','.join(signals)!r}")
    out = {"fusion": fusion, "signals": list(signals)}
    if fusion == "rrf":
        out["rrf_k"] = int(rrf_k)
    else:
        rest = (1.0 - float(gradient_weight)) / (len(signals) - 1)
        out["weights"] = [float(gradient_weight)] + [rest] * (len(signals) - 1)
    return out


def average_ranks(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """1-based ranks, highest score first, among the `valid` entries; ties share their mean rank; NaN elsewhere."""
    scores = np.asarray(scores, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    out = np.full(scores.shape, np.nan)
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        return out
    vals = -scores[idx]
    order = np.argsort(vals, kind="stable")
    sorted_vals = vals[order]
    # tie groups: runs of equal values in sorted order share the mean of their 1-based positions
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], sorted_vals.size]
    mean_rank = (starts + 1 + ends) / 2.0            # mean of positions start+1 .. end
    ranks = np.repeat(mean_rank, ends - starts)
    out[idx[order]] = ranks
    return out


def standardise(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(x − mean) / sd over the valid entries (population sd); 0 where sd is 0; NaN outside `valid`."""
    scores = np.asarray(scores, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    out = np.full(scores.shape, np.nan)
    if valid.any():
        x = scores[valid]
        sd = x.std()
        out[valid] = (x - x.mean()) / sd if sd > 0 else 0.0
    return out


def fuse_column(signals: list[np.ndarray], valid: np.ndarray, params: dict) -> np.ndarray:
    """One subtask's fused score from its per-signal scores [N] each (NaN outside `valid`)."""
    if params["fusion"] == "rrf":
        k = float(params["rrf_k"])
        return sum(1.0 / (k + average_ranks(s, valid)) for s in signals)
    if params["fusion"] == "zscore":
        return sum(w * standardise(s, valid) for w, s in zip(params["weights"], signals))
    raise ValueError(f"unknown fusion {params['fusion']!r}")


def fuse(gradient: np.ndarray, lexical: np.ndarray, valid: np.ndarray, params: dict,
         *more: np.ndarray) -> np.ndarray:
    """[N, m] per-subtask hybrid scores from [N, m] gradient and lexical scores (and any further signals, e.g.
    RDS+) of the same subtasks (same column order), fused column by column over the candidates that every
    signal scored (`valid`, [N])."""
    signals = [np.asarray(x, np.float64) for x in (gradient, lexical, *more)]
    for x in signals[1:]:
        if x.shape != signals[0].shape:
            raise ValueError(f"gradient scores {signals[0].shape} and lexical scores {x.shape} differ in shape")
    valid = np.asarray(valid, dtype=bool)
    for x in signals:
        valid = valid & np.isfinite(x).all(axis=1)
    out = np.full(signals[0].shape, np.nan)
    for j in range(signals[0].shape[1]):
        out[:, j] = fuse_column([x[:, j] for x in signals], valid, params)
    return out
