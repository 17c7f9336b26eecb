"""Every filtered pool candidate's score for a recorded gradient selection, recomputed from the stored features at
the recorded table versions and split per checkpoint (`diagnose` and the report's pictures read them).

Why recompute: a selection stores only its members' scores (plus a 20-bin histogram of all scores). The pool's
score distribution with the cut-off, the bottom of the ranking and the per-checkpoint split need every score.
They are cheap to recompute exactly (one pass over the pinned feature table, the same folded queries as
`scoring.py`), and `tests/test_report.py` checks they reproduce the recorded members and scores.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import LessdbError
from ..storage.candidates import select_candidate_ids
from ..storage.features import get_feature_set, iter_feature_batches
from ..storage.lance_tables import CANDIDATES
from .scoring import build_queries, normalize_rows


RECOMPUTABLE = ("less", "sgd", "sign", "unnormalized")   # gradient methods: scores recomputable from features


@dataclass
class PoolScores:
    """Scores of every filtered pool candidate for one gradient selection.

    per_checkpoint[n, i] is checkpoint i's term η̄ᵢ·cos(...) for the candidate's best subtask, so a row sums to
    its score."""
    ids: list[str]
    score: np.ndarray              # [N] max over subtasks (NaN: not scorable)
    best_subtask: list[str | None]
    per_subtask: np.ndarray        # [N, m]
    per_checkpoint: np.ndarray     # [N, n_checkpoints]
    subtasks: tuple[str, ...]
    epochs: tuple[int, ...]
    weights: tuple[float, ...]
    valid: np.ndarray              # [N] bool

    def as_dict(self) -> dict[str, float]:
        return {cid: float(s) for cid, s, ok in zip(self.ids, self.score, self.valid) if ok}


def recompute_pool_scores(ws, sel: dict) -> PoolScores:
    """Every filtered pool candidate's score for a recorded gradient selection, split per checkpoint, read at
    the recorded candidates and feature-table versions with the recorded validation examples and η̄ weights."""
    params = sel["params"] or {}
    aggregation = params.get("aggregation", "paper")
    if aggregation not in ("paper", "reference", "dot"):
        raise LessdbError(f"cannot recompute {aggregation!r} scores")
    raw = aggregation == "dot"   # the unnormalized ablation scores raw sketches (unit vector × stored norm)
    fs = get_feature_set(ws, sel["feature_set_id"])
    versions = sel["table_versions"] or {}
    fversion = versions.get(fs.lance_table)
    epochs = tuple(sel["checkpoints"] or ())
    weights = tuple(float(w) for w in (sel["weights"] or ()))
    wanted_val: dict[str, list[str]] = params.get("validation_examples") or {}
    if not epochs or not wanted_val:
        raise LessdbError(f"selection {sel['selection_id']} records no checkpoints or validation examples")
    all_val = sorted({e for ids in wanted_val.values() for e in ids})

    validation: dict[int, dict[str, np.ndarray]] = {}
    for epoch in epochs:
        got: dict[str, np.ndarray] = {}
        for ids, vecs in iter_feature_batches(ws, fs.feature_set_id, epoch, "validation", fversion, ids=all_val,
                                              raw=raw):
            for eid, v in zip(ids, vecs):
                got.setdefault(eid, v)
        validation[epoch] = {s: np.stack([got[e] for e in eids]) for s, eids in wanted_val.items()}
    queries = build_queries(validation, dict(zip(epochs, weights)), aggregation)

    ids = select_candidate_ids(ws, params.get("pool"), sel.get("sql_filter"), versions.get(CANDIDATES))
    row_of = {cid: i for i, cid in enumerate(ids)}
    n, m = len(ids), len(queries.subtasks)
    contrib = np.zeros((len(epochs), n, m))
    seen = np.zeros((n, len(epochs)), dtype=bool)
    zero = np.zeros(n, dtype=bool)
    for c, epoch in enumerate(epochs):
        q = queries.matrices[epoch].astype(np.float64)
        for batch_ids, vecs in iter_feature_batches(ws, fs.feature_set_id, epoch, "candidate", fversion, raw=raw):
            rows = np.array([row_of.get(i, -1) for i in batch_ids], dtype=np.int64)
            keep = (rows >= 0) & ~seen[np.maximum(rows, 0), c]
            rows, vecs = rows[keep], vecs[keep]
            _, first = np.unique(rows, return_index=True)   # a duplicated stored row counts once
            rows, vecs = rows[first], vecs[first]
            zero[rows[np.linalg.norm(vecs, axis=1) == 0]] = True
            contrib[c, rows] = (vecs.astype(np.float64) if raw else normalize_rows(vecs)) @ q
            seen[rows, c] = True
    valid = seen.all(axis=1) & ~zero
    per_subtask = contrib.sum(axis=0)
    best_j = per_subtask.argmax(axis=1) if m else np.zeros(n, dtype=np.int64)
    score = per_subtask[np.arange(n), best_j].copy()
    score[~valid] = np.nan
    per_checkpoint = contrib[:, np.arange(n), best_j].T
    best = [queries.subtasks[j] if ok else None for j, ok in zip(best_j, valid)]
    return PoolScores(ids, score, best, per_subtask, per_checkpoint, queries.subtasks, epochs, weights, valid)
