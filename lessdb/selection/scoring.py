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
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch

from ..choices import FEATURE_BATCH_ROWS

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


# Rows of every BLAS product. MKL's result for a row can depend on how many rows share its product; with a
# fixed count (a short tail zero-padded) it does not depend on the other rows or their positions (checked
# here for d = 1,024-8,192), so scores do not depend on batching. 1,024 was as fast as one 4,096-row product.
TILE_ROWS = 1024


class ScoreAccumulator:
    """Streams candidate feature batches into an N×m float64 subtask-score array with bounded memory.

    Rows of each batch are converted into a preallocated float32 buffer (fp16 -> fp32 through torch, the
    fastest conversion measured here) and multiplied with the checkpoint's Qᵢ by BLAS in products of exactly
    `TILE_ROWS` rows (a short tail is zero-padded): MKL's result for a row can depend on how many rows share
    its product, so fixed tiles make every score independent of how the rows arrived (Lance batch boundaries,
    SelectConfig.batch_rows, duplicates dropped). Each (row, checkpoint) counts once: a duplicate row in the store is
    ignored, so a row's score never depends on duplicates.

    `add` does one batch synchronously; `add_stream` pulls batches from an iterator in a background thread
    (the caller's Lance scan and id lookup run there, and the fp16 -> fp32 conversion and row norms) so that
    they overlap the GEMM. Both give bit-identical scores.
    """

    def __init__(self, n_rows: int, queries: QuerySet, row_scale: str = "inverse_norm",
                 batch_rows: int = FEATURE_BATCH_ROWS):
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
        self._scratch: torch.Tensor | None = None
        self._tail = torch.zeros((TILE_ROWS, queries.dim), dtype=torch.float32)
        self._dups_in_batch = 0    # counted by the reading thread
        self._dups_seen = 0        # counted by the multiplying thread

    @property
    def _buf(self) -> torch.Tensor:
        """The float32 batch buffer of `add` (and of a compacted batch in `add_stream`), made on first use."""
        if self._scratch is None:
            self._scratch = torch.empty((self.batch_rows, self.queries.dim), dtype=torch.float32)
        return self._scratch

    @property
    def n_duplicates(self) -> int:
        """Rows ignored because the same (row, checkpoint) was already added."""
        return self._dups_in_batch + self._dups_seen

    def add(self, epoch: int, rows: np.ndarray, vectors: np.ndarray, scale: np.ndarray | None = None) -> None:
        """Add one batch: `rows` (int, index into the N rows) and their vectors [n, d] (float16/float32) at
        checkpoint `epoch`. `scale` is the per-row factor for row_scale="given" (e.g. raw gradient norms)."""
        for col, rows, vectors, scale in self._chunks(epoch, rows, vectors, scale):
            rows, idx, scale = self._unseen(col, rows, scale)
            n = len(rows)
            if idx is not None:
                vectors = vectors[idx]
            _convert(self._buf[:n], vectors)
            self._multiply(col, rows, self._buf[:n], scale, self._norms(self._buf[:n]))

    def add_stream(self, batches: Iterable[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]],
                   on_batch: Callable[[int], None] | None = None, depth: int = 2) -> None:
        """`add` every (epoch, rows, vectors, scale) of `batches`, read and converted `depth` batches ahead by
        a background thread. `on_batch(n)` is called after each input batch with its row count."""
        bufs: queue.Queue = queue.Queue()
        for _ in range(depth + 1):
            bufs.put(torch.empty((self.batch_rows, self.queries.dim), dtype=torch.float32))
        ready: queue.Queue = queue.Queue()
        stop = threading.Event()

        def produce() -> None:
            try:
                for epoch, rows, vectors, scale in batches:
                    for col, r, v, s in self._chunks(epoch, rows, vectors, scale):
                        buf = _take(bufs, stop)
                        if buf is None:
                            return
                        _convert(buf[:len(r)], v)
                        ready.put(("chunk", col, r, buf, s, self._norms(buf[:len(r)])))
                    ready.put(("batch", len(rows)))
                ready.put(("done",))
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
                ready.put(("error", exc))

        worker = threading.Thread(target=produce, name="lessdb-score-reader", daemon=True)
        worker.start()
        try:
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
                _, col, rows, buf, scale, norms = item
                n = len(rows)
                rows, idx, scale = self._unseen(col, rows, scale)
                vecs = buf[:n]
                if idx is not None:   # rows already added at this checkpoint: compact the rest, as `add` does
                    vecs = torch.index_select(buf[:n], 0, torch.from_numpy(idx), out=self._buf[:len(rows)])
                    norms = None if norms is None else norms[idx]
                self._multiply(col, rows, vecs, scale, norms)
                bufs.put(buf)
        finally:
            stop.set()
            while worker.is_alive():   # unblock a producer waiting for a buffer, then let it finish
                bufs.put(None)
                worker.join(timeout=0.1)

    def add_scored(self, epoch: int, rows: np.ndarray, products: np.ndarray, zero: np.ndarray) -> None:
        """Add per-row products already computed elsewhere by an accumulator of the same queries and row_scale
        (lessdb.scale's fragment tasks): `products` [n, m] (scaled), `zero` [n] (zero-norm rows). The same
        first-occurrence rule for duplicate rows and the same float64 sums as `add`, so scores are identical."""
        col = self._epoch_col[epoch]
        rows, products, zero = self._first_occurrences(rows, products, zero)
        rows, idx, _ = self._unseen(col, rows, None)
        if idx is not None:
            products, zero = products[idx], zero[idx]
        if not len(rows):
            return
        self.zero_norm[rows[zero]] = True
        self.scores[rows] += products
        self.seen[rows, col] = True

    def _first_occurrences(self, rows, *columns):
        """`rows` (as int64) and each column (None stays None) cut to each row's first occurrence in the batch,
        in batch order; the dropped repeats are counted."""
        rows = np.asarray(rows, dtype=np.int64)
        _, first = np.unique(rows, return_index=True)
        if len(first) == len(rows):
            return (rows, *columns)
        first.sort()
        self._dups_in_batch += len(rows) - len(first)
        return (rows[first], *(None if c is None else np.asarray(c)[first] for c in columns))

    def _chunks(self, epoch, rows, vectors, scale):
        """(checkpoint column, rows, vectors, scale) pieces of at most `batch_rows` rows, each row's first
        occurrence in the batch only."""
        col = self._epoch_col[epoch]
        rows, vectors, scale = self._first_occurrences(rows, vectors, scale)
        for start in range(0, len(rows), self.batch_rows):
            stop = start + self.batch_rows
            yield col, rows[start:stop], vectors[start:stop], None if scale is None else scale[start:stop]

    def _unseen(self, col, rows, scale):
        """Drop rows already added at this checkpoint: (rows, kept positions or None if all kept, scale)."""
        fresh = ~self.seen[rows, col]
        if fresh.all():
            return rows, None, scale
        self._dups_seen += int((~fresh).sum())
        idx = np.flatnonzero(fresh)
        return rows[idx], idx, None if scale is None else np.asarray(scale)[idx]

    def _norms(self, buf: torch.Tensor) -> np.ndarray | None:
        """Row norms of the float32 rows exactly as they are multiplied (only the cosine needs them; a row's
        norm does not depend on the other rows of the call, checked like the GEMM's)."""
        if self.row_scale != "inverse_norm":
            return None
        return torch.linalg.vector_norm(buf, dim=1).numpy().astype(np.float64)

    def _product(self, q: torch.Tensor, buf: torch.Tensor) -> np.ndarray:
        """buf · q in products of exactly `TILE_ROWS` rows: full tiles are views of `buf`, the tail is copied
        into a zero-padded tile."""
        n, t = len(buf), TILE_ROWS
        out = np.empty((n, self._m), dtype=np.float64)
        full = n - n % t
        for start in range(0, full, t):
            out[start:start + t] = torch.mm(buf[start:start + t], q).numpy()[:, :self._m]
        if full < n:
            self._tail[:n - full].copy_(buf[full:])
            self._tail[n - full:].zero_()
            out[full:] = torch.mm(self._tail, q).numpy()[:n - full, :self._m]
        return out

    def _multiply(self, col: int, rows: np.ndarray, buf: torch.Tensor, scale, norms) -> None:
        if not len(rows):
            return
        prod = self._product(self._q[self.queries.epochs[col]], buf)
        if self.row_scale == "inverse_norm":
            zero = norms == 0
            self.zero_norm[rows[zero]] = True
            prod *= np.divide(1.0, norms, out=np.zeros_like(norms), where=~zero)[:, None]
        elif self.row_scale == "given":
            prod *= np.asarray(scale, dtype=np.float64)[:, None]
        self.scores[rows] += prod
        self.seen[rows, col] = True

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


def _take(bufs: queue.Queue, stop: threading.Event):
    """A free buffer, or None once the consumer has stopped."""
    while not stop.is_set():
        try:
            return bufs.get(timeout=0.1)
        except queue.Empty:
            continue
    return None


def spearman(a, b) -> float:
    """Spearman's rank correlation: Pearson's of the ranks, tied values sharing their average rank (as
    scipy.stats.spearmanr); NaN when either side is constant or not finite. numpy only: the GPU check
    (bench/gpu_check.py) runs where scipy may be missing."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def _average_ranks(x: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts
    return (first + (counts - 1) / 2.0)[inverse]


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


from .choose import k_from_percentage  # noqa: E402,F401  (re-exported: it lives where light imports reach it)
