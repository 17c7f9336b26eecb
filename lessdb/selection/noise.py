"""Sketch noise: do a selection's scores rise above what a d-dimensional sketch can tell apart? (The one line in
`select`'s summary; `diagnose.py` reports it in full.)

A JL sketch to d dimensions estimates a cosine c with variance ≈ (1 − c²)/d, so a LESS score Σᵢ η̄ᵢ cᵢ carries
noise with standard deviation σ ≈ √(Σᵢ η̄ᵢ² (1 − cᵢ²) / d). The gap between the k-th member's score and the
pool's median, in units of the noise of a difference of two scores (√2·σ), says whether the cut-off separates
anything: below 2 the members near the cut-off are not distinguishable from the median candidate by this
sketch, and a warning says so in plain words.
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
    z = (kth - median) / noise if noise > 0 else float("inf")
    out = {"kth_score": kth, "median_score": median, "gap": kth - median, "noise_sd_of_difference": noise,
           "gap_in_noise_sd": z, "dim": dim}
    if z < NOISE_Z_WARN:
        out["warning"] = (f"the k-th member's score is only {z:.2f} noise standard deviations above the median "
                          f"candidate's (sketch d = {dim}): near the cut-off this ranking is indistinguishable "
                          "from sketch noise; use a larger d, more checkpoints, or read the ranking as a coarse one")
    return out


def quick(plan, best: np.ndarray, valid: np.ndarray, kth: float) -> dict | None:
    """The select-time line (gradient methods: a sketch with a known d)."""
    fs = plan.fs
    if fs is None or not plan.weights or plan.aggregation == "dot":
        return None
    return gap_vs_noise(best[valid], kth, plan.weights, int(fs.dim))
