"""Two-stage scoring for huge stores: score everything on a folded low-d copy, rescore the best few at full d.

A CountSketch at d folds exactly into a CountSketch at d' = d/m: bucket b of the d-dim sketch goes to bucket
b mod d' (the same hash, reduced), and the signs stay. So `fold(S x) = S' x` with S' a CountSketch at d' —
the folded copy is itself a valid (smaller) sketch of the same gradients, and cosine scores on it estimate the
full-d scores with ~sqrt(m) times the variance. Stage one ranks all N candidates at d'; stage two reads only
the best `factor·k` candidates' full vectors and takes the exact top k among them. The final scores are exact
(full d); only membership can differ from the exhaustive top k, when an exact top-k candidate falls outside
the prefilter's shortlist (measured as recall in bench/scale.py).
"""
from __future__ import annotations

import numpy as np


def fold(vectors: np.ndarray, low_dim: int) -> np.ndarray:
    """[n, d] -> [n, low_dim]: sum of the buckets b with b mod low_dim equal (exact CountSketch fold)."""
    n, d = vectors.shape
    if d % low_dim:
        raise ValueError(f"{low_dim} does not divide {d}")
    return vectors.reshape(n, d // low_dim, low_dim).sum(axis=1, dtype=np.float32)


def cosine_scores(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """max over query columns of cos(row, column): [n, d] x [d, m] -> [n] (float64)."""
    v = np.asarray(vectors, dtype=np.float32)
    q = np.asarray(queries, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1)
    qn = q / np.maximum(np.linalg.norm(q, axis=0, keepdims=True), 1e-30)
    s = (v @ qn).astype(np.float64) / np.maximum(norms, 1e-30)[:, None]
    return s.max(axis=1)


def two_stage_top_k(low_vectors: np.ndarray, queries: np.ndarray, k: int, factor: int, full_rows) -> dict:
    """Stage one on `low_vectors` [N, d'] with the folded queries; stage two calls `full_rows(indices)` ->
    [len, d] full vectors of the shortlist and ranks them exactly. Returns {top (indices), shortlist, scores}."""
    low_q = fold(np.ascontiguousarray(queries.T), low_vectors.shape[1]).T
    coarse = cosine_scores(low_vectors, low_q)
    n_short = min(len(coarse), factor * k)
    shortlist = np.argpartition(-coarse, n_short - 1)[:n_short] if n_short < len(coarse) else np.arange(len(coarse))
    shortlist = np.sort(shortlist)
    exact = cosine_scores(full_rows(shortlist), queries)
    order = np.lexsort((shortlist, -exact))[:k]
    return {"top": shortlist[order], "scores": exact[order], "shortlist": shortlist}
