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
is one GEMM per checkpoint and tile of candidate rows (t×d · d×m): the cost is reading Xᵢ once. The per-row scale sᵢ
cannot fold into Qᵢ (it belongs to the candidate), so checkpoints stay separate products, summed in float64.
"""
from __future__ import annotations

import queue
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable

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


def tile_rows_for(dim: int) -> int:
    """Rows per BLAS product: ~4 MB of float32, so the converted tile, its norms and the GEMM stay in cache
    (2x the throughput of 4,096-row products at d = 8192 here, which stream 134 MB through memory three times).
    A multiple of 64 between 64 and 4,096."""
    return max(64, min(4096, (1 << 20) // max(int(dim), 1)) // 64 * 64)


class ScoreAccumulator:
    """Streams candidate feature batches into an N×m float64 subtask-score array with bounded memory.

    Every product has exactly `tile_rows` rows (a short tail is zero-padded): MKL's result for a row can depend
    on how many rows share its GEMM, so fixed tiles make every score independent of how the rows arrived (Lance
    batch boundaries, --batch-rows, duplicates dropped). Each tile is converted (fp16 -> fp32 through torch, the
    fastest conversion measured here), normed and multiplied with the checkpoint's Qᵢ while it is in cache.
    Each (row, checkpoint) counts once: a duplicate row in the store is ignored, so a row's score never depends
    on duplicates.

    `add` does one batch synchronously; `add_stream` pulls batches from an iterator in a background thread
    (the caller's Lance scan and id lookup run there) so that they overlap the arithmetic. Both give
    bit-identical scores.
    """

    def __init__(self, n_rows: int, queries: QuerySet, row_scale: str = "inverse_norm", batch_rows: int = 4096):
        if row_scale not in ("inverse_norm", "none", "given"):
            raise ValueError(row_scale)
        self.queries = queries
        self.row_scale = row_scale
        self.batch_rows = batch_rows   # rows per input chunk (bounds the reader's memory), not per product
        self.tile_rows = tile_rows_for(queries.dim)
        m = len(queries.subtasks)
        self.scores = np.zeros((n_rows, m), dtype=np.float64)
        self.seen = np.zeros((n_rows, len(queries.epochs)), dtype=bool)
        self.zero_norm = np.zeros(n_rows, dtype=bool)
        self._epoch_col = {e: c for c, e in enumerate(queries.epochs)}
        # MKL's sgemm is ~1.5x faster with the column count padded to a multiple of 32 (27 -> 32 measured here)
        self._m = m
        m_pad = -(-m // 32) * 32
        self._q = {e: torch.from_numpy(np.pad(q, ((0, 0), (0, m_pad - m)))) for e, q in queries.matrices.items()}
        self._tile = torch.empty((self.tile_rows, queries.dim), dtype=torch.float32)
        self._dups_in_batch = 0    # counted by the reading thread
        self._dups_seen = 0        # counted by the multiplying thread

    @property
    def n_duplicates(self) -> int:
        """Rows ignored because the same (row, checkpoint) was already added."""
        return self._dups_in_batch + self._dups_seen

    def add(self, epoch: int, rows: np.ndarray, vectors: np.ndarray, scale: np.ndarray | None = None) -> None:
        """Add one batch: `rows` (int, index into the N rows) and their vectors [n, d] (float16/float32) at
        checkpoint `epoch`. `scale` is the per-row factor for row_scale="given" (e.g. raw gradient norms)."""
        for chunk in self._chunks(epoch, rows, vectors, scale):
            self._score_chunk(*chunk)

    def add_stream(self, batches: Iterable[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]],
                   on_batch: Callable[[int], None] | None = None, depth: int = 2) -> None:
        """`add` every (epoch, rows, vectors, scale) of `batches`, read `depth` chunks ahead by a background
        thread. `on_batch(n)` is called after each input batch with its row count."""
        ready: queue.Queue = queue.Queue(maxsize=depth)
        stop = threading.Event()

        def produce() -> None:
            try:
                for epoch, rows, vectors, scale in batches:
                    for chunk in self._chunks(epoch, rows, vectors, scale):
                        if not _put(ready, ("chunk", chunk), stop):
                            return
                    if not _put(ready, ("batch", len(rows)), stop):
                        return
                _put(ready, ("done",), stop)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
                _put(ready, ("error", exc), stop)

        worker = threading.Thread(target=produce, name="lessdb-score-reader", daemon=True)
        worker.start()
        try:
            with _blas_threads(max(1, torch.get_num_threads() - 1)):
                self._consume(ready, on_batch)
        finally:
            stop.set()
            while worker.is_alive():   # unblock a producer waiting for room in the queue, then let it finish
                try:
                    ready.get_nowait()
                except queue.Empty:
                    pass
                worker.join(timeout=0.1)

    def _consume(self, ready: queue.Queue, on_batch) -> None:
        """Score the reader's chunks as they arrive, until it is done (or raise what it raised)."""
        while True:
            item = ready.get()
            if item[0] == "done":
                break
            if item[0] == "error":
                raise item[1]
            if item[0] == "batch":
                if on_batch is not None:
                    on_batch(item[1])
                continue
            self._score_chunk(*item[1])

    def _chunks(self, epoch, rows, vectors, scale):
        """(checkpoint column, rows, vectors, scale) pieces of at most `batch_rows` rows, each row's first
        occurrence in the batch only."""
        col = self._epoch_col[epoch]
        rows = np.asarray(rows, dtype=np.int64)
        _, first = np.unique(rows, return_index=True)
        if len(first) != len(rows):
            first.sort()
            self._dups_in_batch += len(rows) - len(first)
            rows, vectors = rows[first], vectors[first]
            scale = None if scale is None else np.asarray(scale)[first]
        for start in range(0, len(rows), self.batch_rows):
            stop = start + self.batch_rows
            yield col, rows[start:stop], vectors[start:stop], None if scale is None else scale[start:stop]

    def _score_chunk(self, col: int, rows: np.ndarray, vectors: np.ndarray, scale) -> None:
        """Drop rows already added at this checkpoint, then score the rest tile by tile."""
        fresh = ~self.seen[rows, col]
        if not fresh.all():
            self._dups_seen += int((~fresh).sum())
            idx = np.flatnonzero(fresh)
            rows, vectors = rows[idx], vectors[idx]
            scale = None if scale is None else np.asarray(scale)[idx]
        q = self._q[self.queries.epochs[col]]
        t = self.tile_rows
        for start in range(0, len(rows), t):
            r = rows[start:start + t]
            n = len(r)
            _convert(self._tile[:n], vectors[start:start + t])
            if n < t:
                self._tile[n:].zero_()
            prod = torch.mm(self._tile, q).numpy()[:n, :self._m].astype(np.float64)
            if self.row_scale == "inverse_norm":
                norms = torch.linalg.vector_norm(self._tile, dim=1).numpy()[:n].astype(np.float64)
                zero = norms == 0
                self.zero_norm[r[zero]] = True
                prod *= np.divide(1.0, norms, out=np.zeros_like(norms), where=~zero)[:, None]
            elif self.row_scale == "given":
                prod *= np.asarray(scale[start:start + t], dtype=np.float64)[:, None]
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


def _convert(out: torch.Tensor, vectors: np.ndarray) -> None:
    with warnings.catch_warnings():   # Arrow's zero-copy arrays are read-only; torch only reads them here
        warnings.simplefilter("ignore", UserWarning)
        out.copy_(torch.from_numpy(np.ascontiguousarray(vectors)))


@contextmanager
def _blas_threads(n: int):
    """torch's intra-op threads set to `n` for the block. While the reader streams from Lance (~1.7 of this
    VM's 2 cores in kernel reads), BLAS with every core only spins against it: one fewer thread measured
    the same wall time here with 20-30% less CPU, and 6% less wall at d = 8192."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put `item` once there is room; False (not put) once the consumer has stopped."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


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
