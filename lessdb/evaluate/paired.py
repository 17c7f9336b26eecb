"""Paired bootstrap of a difference between two trained models' held-out metrics (issue 22), in plain numpy.

Inputs are per-(item, run) metric arrays: `a[i, r]` is item i's metric under run r of method A (runs = training
seeds, or selection seed x training seed), `b[i, s]` the same items under method B's runs. Items are paired (the
same test items for both); runs are not (A's seed 0 has nothing to do with B's seed 0).

The statistic is the improvement of A over B, signed so that **positive always means A is better**:
- a lower-is-better metric (answer loss, nats): improvement = mean(b) - mean(a);
- a higher-is-better metric (choice accuracy):   improvement = mean(a) - mean(b).
Each bootstrap replicate resamples the items with replacement (the same draw for A and B: that is the pairing)
and, independently, A's runs and B's runs with replacement; the interval is the percentile interval of the
replicates (default 95%, 2,000 replicates, RNG seed 0, so the same inputs give the same interval).

Verdict: "better" when the whole interval is above 0, "worse" when it is below, else "indistinguishable".
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

N_BOOT = 2000
LEVEL = 0.95
SEED = 0


@dataclass(frozen=True)
class PairedDifference:
    improvement: float          # positive: A is better (see the module docstring)
    low: float
    high: float
    n_items: int
    n_runs_a: int
    n_runs_b: int
    n_boot: int
    level: float
    seed: int
    higher_is_better: bool

    @property
    def verdict(self) -> str:
        return "better" if self.low > 0 else "worse" if self.high < 0 else "indistinguishable"

    def as_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict}


def _as_matrix(x, name: str) -> np.ndarray:
    m = np.asarray(x, dtype=np.float64)
    if m.ndim == 1:
        m = m[:, None]
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
        raise ValueError(f"{name}: expected [items, runs] values, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError(f"{name}: {int((~np.isfinite(m)).sum())} values are not finite (drop those items)")
    return m


def paired_bootstrap(a, b, *, higher_is_better: bool, n_boot: int = N_BOOT, level: float = LEVEL,
                     seed: int = SEED) -> PairedDifference:
    """Improvement of A over B and its bootstrap interval; `a` [items, runs of A], `b` [items, runs of B]."""
    a, b = _as_matrix(a, "a"), _as_matrix(b, "b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a has {a.shape[0]} items, b has {b.shape[0]}: the items must be the same (paired)")
    if not 0 < level < 1 or n_boot < 1:
        raise ValueError("level must be in (0, 1) and n_boot >= 1")
    sign = 1.0 if higher_is_better else -1.0
    point = sign * (a.mean() - b.mean())
    rng = np.random.default_rng(seed)
    n = a.shape[0]
    items = rng.integers(0, n, size=(n_boot, n))
    # mean over the resampled items of each run column: [n_boot, runs]
    col_a = a[items].mean(axis=1)
    col_b = b[items].mean(axis=1)
    runs_a = rng.integers(0, a.shape[1], size=(n_boot, a.shape[1]))
    runs_b = rng.integers(0, b.shape[1], size=(n_boot, b.shape[1]))
    mean_a = np.take_along_axis(col_a, runs_a, axis=1).mean(axis=1)
    mean_b = np.take_along_axis(col_b, runs_b, axis=1).mean(axis=1)
    reps = sign * (mean_a - mean_b)
    tail = (1 - level) / 2
    low, high = np.quantile(reps, [tail, 1 - tail])
    return PairedDifference(float(point), float(low), float(high), n, a.shape[1], b.shape[1], n_boot, level, seed,
                            higher_is_better)


def _num(x: float, digits: int) -> str:
    return f"{x:.{digits}f}".replace("-", "\u2212")


def verdict_line(d: PairedDifference, against: str, unit: str = "", digits: int = 3) -> str:
    """One line in plain words, e.g. "better than random-5% by 0.031 nats [0.012, 0.049]" or
    "indistinguishable from bm25 (−0.004 [−0.020, 0.010] nats)". Intervals are of the improvement, except that a
    "worse" line states by how much A is worse (both bounds flipped, so they read positive)."""
    u = f" {unit}" if unit else ""
    if d.verdict == "better":
        return f"better than {against} by {_num(d.improvement, digits)}{u} [{_num(d.low, digits)}, {_num(d.high, digits)}]"
    if d.verdict == "worse":
        return (f"worse than {against} by {_num(-d.improvement, digits)}{u} "
                f"[{_num(-d.high, digits)}, {_num(-d.low, digits)}]")
    return (f"indistinguishable from {against} ({_num(d.improvement, digits)} "
            f"[{_num(d.low, digits)}, {_num(d.high, digits)}]{u})")
