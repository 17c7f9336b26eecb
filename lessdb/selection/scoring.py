"""The pure math of LESS step 3 (SPEC §1): query folding, streamed scoring, max over subtasks, top-k.

Notation: checkpoints i (with weight η̄ᵢ), subtasks j, validation examples z' ∈ Dʲ, candidates z.
Stored features are L2-normalised sketches: ûᵢ(z') for validation (plain gradients), x̂ᵢ(z) for candidates.

    paper      Inf(z, Dʲ) = Σᵢ η̄ᵢ · cos(ḡᵢⱼ, x̂ᵢ(z)),        ḡᵢⱼ = mean_{z'∈Dʲ} ûᵢ(z')
    reference  Inf(z, Dʲ) = Σᵢ η̄ᵢ · mean_{z'∈Dʲ} cos(ûᵢ(z'), x̂ᵢ(z))
    dot        Inf(z, Dʲ) = Σᵢ η̄ᵢ · ⟨mean_{z'} uᵢ(z'), xᵢ(z)⟩   (raw, unnormalised: the paper's Table 12 ablation)
    score(z) = maxⱼ Inf(z, Dʲ)

What folds. For unit ûᵢ(z'), mean_{z'} cos(û, x̂) = ⟨ḡᵢⱼ, x̂⟩/‖x̂‖ = ‖ḡᵢⱼ‖ · cos(ḡᵢⱼ, x̂): both variants are a
dot product of the candidate's unit vector with ONE query vector per (checkpoint, subtask):
    qᵢⱼ = η̄ᵢ · ḡᵢⱼ / ‖ḡᵢⱼ‖   (paper)       qᵢⱼ = η̄ᵢ · ḡᵢⱼ   (reference)       qᵢⱼ = η̄ᵢ · mean uᵢ(z')   (dot)
so a subtask's validation examples and the η̄ weight fold into a d×m matrix Qᵢ per checkpoint, and
    S = Σᵢ diag(sᵢ) · Xᵢ · Qᵢ        (sᵢ(z) = 1/‖xᵢ(z)‖ for cosine, the raw norm for dot)
is one GEMM per checkpoint and candidate batch (n×d · d×m): the cost is reading Xᵢ once. The per-row scale sᵢ
cannot fold into Qᵢ (it belongs to the candidate), so checkpoints stay separate products, summed in float64.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

AGGREGATIONS = ("paper", "reference", "dot")


@dataclass(frozen=True)
class QuerySet:
    """Folded queries: for each checkpoint epoch, a (d, m) float32 matrix whose column j is qᵢⱼ."""

    subtasks: tuple[str, ...]
    epochs: tuple[int, ...]
    matrices: dict[int, np.ndarray]
    aggregation: str

    @property
    def dim(self) -> int:
        return next(iter(self.matrices.values())).shape[0]


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float64); a zero row stays zero."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def subtask_query(vectors: np.ndarray, aggregation: str, norms: np.ndarray | None = None) -> np.ndarray:
    """The one query vector ḡ of a subtask (before the η̄ weight) from its validation features [n, d].

    `vectors` are the stored (unit) features; for "dot", `norms` are their raw norms (None: the vectors are raw).
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, not {aggregation!r}")
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ValueError("a subtask needs at least one validation vector")
    if aggregation == "dot":
        raw = vectors if norms is None else vectors * np.asarray(norms, dtype=np.float64)[:, None]
        return raw.mean(axis=0)
    mean = normalize_rows(vectors).mean(axis=0)   # renormalise: stored fp16 vectors are unit only to ~1e-3
    if aggregation == "reference":
        return mean
    norm = np.linalg.norm(mean)
    if norm == 0:
        raise ValueError("validation gradients of a subtask cancel out exactly (zero mean)")
    return mean / norm


def build_queries(validation: dict[int, dict[str, np.ndarray]], weights: dict[int, float], aggregation: str,
                  norms: dict[int, dict[str, np.ndarray]] | None = None) -> QuerySet:
    """Fold per-checkpoint, per-subtask validation features [n_j, d] and the η̄ weights into a QuerySet.

    Every checkpoint must have the same subtasks (the caller drops a subtask missing anywhere)."""
    epochs = tuple(sorted(validation))
    if not epochs:
        raise ValueError("no checkpoints")
    subtasks = tuple(sorted(validation[epochs[0]]))
    matrices = {}
    for epoch in epochs:
        if tuple(sorted(validation[epoch])) != subtasks:
            raise ValueError(f"checkpoint {epoch} has different subtasks")
        cols = [weights[epoch] * subtask_query(validation[epoch][s], aggregation,
                                                None if norms is None else norms[epoch][s]) for s in subtasks]
        matrices[epoch] = np.ascontiguousarray(np.stack(cols, axis=1), dtype=np.float32)
    return QuerySet(subtasks, epochs, matrices, aggregation)


class ScoreAccumulator:
    """Streams candidate feature batches into an N×m float64 subtask-score array with bounded memory.

    Rows of each batch are converted into one preallocated float32 buffer (fp16 -> fp32 through torch, the
    fastest conversion measured here) and multiplied with the checkpoint's Qᵢ by BLAS. Each (row, checkpoint)
    counts once: a duplicate row in the store is ignored, so a row's score never depends on duplicates.
    """

    def __init__(self, n_rows: int, queries: QuerySet, row_scale: str = "inverse_norm", batch_rows: int = 4096):
        if row_scale not in ("inverse_norm", "none", "given"):
            raise ValueError(row_scale)
        self.queries = queries
        self.row_scale = row_scale
        self.batch_rows = batch_rows
        m = len(queries.subtasks)
        self.scores = np.zeros((n_rows, m), dtype=np.float64)
        self.seen = np.zeros((n_rows, len(queries.epochs)), dtype=bool)
        self.zero_norm = np.zeros(n_rows, dtype=bool)
        self._epoch_col = {e: c for c, e in enumerate(queries.epochs)}
        # MKL's sgemm is ~1.5x faster with the column count padded to a multiple of 32 (27 -> 32 measured here)
        self._m = m
        m_pad = -(-m // 32) * 32
        self._q = {e: torch.from_numpy(np.pad(q, ((0, 0), (0, m_pad - m)))) for e, q in queries.matrices.items()}
        self._buf = torch.empty((batch_rows, queries.dim), dtype=torch.float32)
        self.n_duplicates = 0

    def add(self, epoch: int, rows: np.ndarray, vectors: np.ndarray, scale: np.ndarray | None = None) -> None:
        """Add one batch: `rows` (int, index into the N rows) and their vectors [n, d] (float16/float32) at
        checkpoint `epoch`. `scale` is the per-row factor for row_scale="given" (e.g. raw gradient norms)."""
        col = self._epoch_col[epoch]
        rows = np.asarray(rows, dtype=np.int64)
        # keep each row's first occurrence in this batch, and only rows not yet added at this checkpoint
        _, first = np.unique(rows, return_index=True)
        first.sort()
        keep = first[~self.seen[rows[first], col]]
        if len(keep) != len(rows):
            self.n_duplicates += len(rows) - len(keep)
            rows, vectors = rows[keep], vectors[keep]
            scale = None if scale is None else np.asarray(scale)[keep]
        q = self._q[epoch]
        for start in range(0, len(rows), self.batch_rows):
            stop = min(start + self.batch_rows, len(rows))
            n = stop - start
            buf = self._buf[:n]
            with warnings.catch_warnings():   # Arrow's zero-copy arrays are read-only; torch only reads them here
                warnings.simplefilter("ignore", UserWarning)
                buf.copy_(torch.from_numpy(np.ascontiguousarray(vectors[start:stop])))
            prod = torch.mm(buf, q).numpy()[:, :self._m].astype(np.float64)
            r = rows[start:stop]
            if self.row_scale == "inverse_norm":
                norms = torch.linalg.vector_norm(buf, dim=1).numpy().astype(np.float64)
                zero = norms == 0
                self.zero_norm[r[zero]] = True
                prod *= np.divide(1.0, norms, out=np.zeros_like(norms), where=~zero)[:, None]
            elif self.row_scale == "given":
                prod *= np.asarray(scale[start:stop], dtype=np.float64)[:, None]
            self.scores[r] += prod
            self.seen[r, col] = True

    def result(self) -> "SubtaskScores":
        """Rows seen at every checkpoint with a nonzero vector are scored; the rest are not."""
        valid = self.seen.all(axis=1) & ~self.zero_norm
        return SubtaskScores(self.scores, valid, self.queries.subtasks)


@dataclass
class SubtaskScores:
    per_subtask: np.ndarray    # [N, m] Inf(z, Dʲ)
    valid: np.ndarray          # [N] bool: has a score
    subtasks: tuple[str, ...]

    @property
    def score(self) -> np.ndarray:
        """maxⱼ Inf(z, Dʲ) (NaN where not valid, never selected)."""
        out = self.per_subtask.max(axis=1)
        out[~self.valid] = np.nan
        return out

    @property
    def best_subtask(self) -> np.ndarray:
        """Index of the argmax subtask (first in sorted subtask order on ties)."""
        return self.per_subtask.argmax(axis=1)


def max_over_subtasks(per_subtask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return per_subtask.max(axis=1), per_subtask.argmax(axis=1)


def top_k(scores: np.ndarray, ids, k: int, valid: np.ndarray | None = None) -> np.ndarray:
    """Indices of the k best rows, ordered by score descending, ties broken by id ascending; rows that are
    not valid (or NaN) are never chosen. Deterministic for any input order."""
    scores = np.asarray(scores, dtype=np.float64)
    ok = ~np.isnan(scores) if valid is None else (np.asarray(valid, dtype=bool) & ~np.isnan(scores))
    cand = np.flatnonzero(ok)
    if k > len(cand):
        raise ValueError(f"k={k} exceeds the {len(cand)} scored candidates")
    ids_arr = np.asarray(ids, dtype=object)[cand].astype(str)
    order = np.lexsort((ids_arr, -scores[cand]))   # last key is primary: score desc, then id asc
    return cand[order[:k]]


def k_from_percentage(percentage: float, n: int) -> int:
    """k = ⌊p·N⌋, computed without float surprises (0.05·100 = 5.000000000000001)."""
    return int(np.floor(round(percentage * n, 9)))
