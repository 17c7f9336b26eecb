"""Sketch noise: do a selection's scores rise above what a d-dimensional sketch can tell apart? (The one line in
`select`'s summary; `diagnose.py` reports it in full.)

A JL sketch to d dimensions estimates a cosine c with variance ≈ (1 − c²)/d, so a LESS score Σᵢ η̄ᵢ cᵢ carries
noise with standard deviation σ ≈ √(Σᵢ η̄ᵢ² (1 − cᵢ²) / d). The gap between the k-th member's score and the
pool's median, in units of the noise of a difference of two scores (√2·σ), says whether the cut-off separates
anything: below 2 the members near the cut-off are not distinguishable from the median candidate by this
sketch, and a warning says so in plain words.

The line is shown only where the k-th member competes with the median on that score: not for `hybrid`, whose fused
scores are ranks or z-scores rather than a sketch estimate, and not for round-robin or proportional balancing,
where members are claimed per target and the k-th can sit below the pool's median by design. Zero noise (every
checkpoint weighs 0, or every |cos| = 1) gives no ratio rather than an infinite one.
"""
from __future__ import annotations

import numpy as np

NOISE_Z_WARN = 2.0


def sketch_noise(weights: list[float], cosines: np.ndarray | float, dim: int) -> float:
    """σ of a score Σᵢ wᵢ cᵢ estimated through a d-dimensional JL sketch (cosines per checkpoint)."""
    w = np.asarray(weights, dtype=np.float64)
    c = np.broadcast_to(np.asarray(cosines, dtype=np.float64), w.shape)
    return float(np.sqrt(np.sum(w ** 2 * (1 - np.clip(c, -1, 1) ** 2)) / dim))


def gap_vs_noise(scores: np.ndarray, kth: float, weights: list[float], dim: int,
                 kth_cosines=None, median_cosines=None) -> dict:
    """The k-th-vs-median gap in units of the noise of a score difference. Without per-checkpoint cosines the
    mean cosine s/Σw stands in (cosines are small, so 1 − c² ≈ 1 anyway)."""
    median = float(np.median(scores))
    total = float(sum(weights)) or 1.0
    sk = sketch_noise(weights, kth / total if kth_cosines is None else kth_cosines, dim)
    sm = sketch_noise(weights, median / total if median_cosines is None else median_cosines, dim)
    noise = float(np.hypot(sk, sm))
    z = (kth - median) / noise if noise > 0 else None   # zero noise: every checkpoint weighs 0, or |cos| = 1
    out = {"kth_score": kth, "median_score": median, "gap": kth - median, "noise_sd_of_difference": noise,
           "gap_in_noise_sd": z, "dim": dim}
    if z is not None and z < NOISE_Z_WARN:
        out["warning"] = (f"the k-th member's score is only {z:.2f} noise standard deviations above the median "
                          f"candidate's (sketch d = {dim}): near the cut-off this ranking is indistinguishable "
                          "from sketch noise; use a larger d, more checkpoints, or read the ranking as a coarse one")
    return out


def noise_applies(method: str, params: dict) -> bool:
    """Whether the k-th-vs-median noise comparison means anything for this selection (see the module docstring)."""
    balance = (params.get("picking") or {}).get("balance", "max")
    return method != "hybrid" and balance == "max"


def per_checkpoint_cosines(terms: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """cosᵢ = termᵢ / η̄ᵢ; a checkpoint with η̄ = 0 contributes nothing, so its cosine is taken as 0."""
    return np.divide(terms, weights, out=np.zeros(len(weights)), where=weights != 0)


def quick(plan, best: np.ndarray, valid: np.ndarray, kth: float) -> dict | None:
    """The select-time line (gradient methods: a sketch with a known d)."""
    fs = plan.fs
    if fs is None or not plan.weights or plan.aggregation == "dot" or not noise_applies(plan.method, plan.params):
        return None
    return gap_vs_noise(best[valid], kth, plan.weights, int(fs.dim))
