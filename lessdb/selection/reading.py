"""Streams for the scorers: row numbers of ids, which candidates a text or hidden-state method may score, their
texts or messages from one pinned scan of the pool, their stored feature vectors, and the validation vectors of a
feature table at the version a selection pins."""
from __future__ import annotations

import numpy as np

from .plan import CANDIDATES


class IdIndex:
    """Row number of each id in a fixed id list, for whole Arrow columns at once (-1: not in the list).

    A sorted numpy array + searchsorted: ~2 ms per 4,096 ids against 270K (pyarrow's index_in rebuilds its
    hash table on every call: 250 ms per batch)."""

    def __init__(self, ids: list[str]):
        keys = np.array(ids, dtype=str) if ids else np.array([], dtype="<U1")
        self._order = np.argsort(keys, kind="stable")
        self._sorted = keys[self._order]

    def __call__(self, column) -> np.ndarray:
        values = np.array(column.to_pylist(), dtype=str) if len(column) else np.array([], dtype="<U1")
        if len(self._sorted) == 0 or len(values) == 0:
            return np.full(len(values), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._sorted, values), len(self._sorted) - 1)
        hit = self._sorted[pos] == values
        return np.where(hit, self._order[pos], -1).astype(np.int64)


def scorable_mask(ws, plan, ids: list[str]) -> tuple[np.ndarray, dict[str, int]]:
    """Candidates a text or hidden-state method may score: some assistant text, and not excluded by the run's
    feature set (no completion token left after truncation with the selection model's tokenizer)."""
    from ..storage import meta_selections as meta

    bad = meta.candidate_ids_without_completion(ws, plan.pool, plan.where, plan.versions[CANDIDATES])
    excluded = plan.candidate_exclusions or set()
    mask = np.array([cid not in bad and cid not in excluded for cid in ids], dtype=bool)
    n_bad = sum(1 for cid in ids if cid in bad)
    return mask, {"no_completion_text": n_bad, "no_completion_tokens": int((~mask).sum()) - n_bad}


def iter_texts(ws, plan, ids: list[str], mask: np.ndarray, batch_rows: int = 1024):
    """(row index, text) of every scorable filtered candidate, one pinned scan of the pool (a candidate stored
    twice comes twice: callers keep the first)."""
    from ..storage import meta_selections as meta

    from ..conversation import conversation_text

    id_index = IdIndex(ids)
    for batch in meta.scan_candidates(ws, plan.versions[CANDIDATES], plan.pool, ["messages"], batch_rows):
        rows = id_index(batch.column("id"))
        msgs = batch.column("messages").to_pylist()
        for r, m in zip(rows, msgs):
            if r >= 0 and mask[r]:
                yield int(r), conversation_text(m)


def iter_messages(ws, plan, ids: list[str], mask: np.ndarray, batch_rows: int = 256):
    """(row index, messages) of every scorable filtered candidate, once each, one pinned scan of the pool."""
    from ..storage import meta_selections as meta

    id_index = IdIndex(ids)
    done = np.zeros(len(ids), dtype=bool)
    for batch in meta.scan_candidates(ws, plan.versions[CANDIDATES], plan.pool, ["messages"], batch_rows):
        rows = id_index(batch.column("id"))
        for r, m in zip(rows, batch.column("messages").to_pylist()):
            if r >= 0 and mask[r] and not done[r]:
                done[r] = True
                yield int(r), m


def candidate_batches(ws, table: str, version: int, epochs: list[int], cols: tuple, id_index: IdIndex, dim: int,
                      batch_rows: int, check_norms=None):
    """(epoch, rows, vectors, raw norms or None) of the filtered candidates' feature rows, one pinned scan per
    checkpoint, for `ScoreAccumulator.add_stream` (rows outside the id list dropped; `check_norms` sees the
    norms of the rows used, when `cols` has them)."""
    from ..storage import meta_selections as meta
    from ..storage.features import vector_view

    for epoch in epochs:
        for batch in meta.scan_features(ws, table, version, "candidate", epoch, cols, batch_rows):
            rows = id_index(batch.column("example_id"))
            keep = rows >= 0
            vecs = vector_view(batch.column("vector"), dim)
            scale = batch.column("norm").to_numpy(zero_copy_only=False) if "norm" in cols else None
            if not keep.all():
                rows, vecs = rows[keep], vecs[keep]
                scale = None if scale is None else scale[keep]
            if scale is not None and check_norms is not None:
                check_norms(scale)
            yield epoch, rows, vecs, scale


def read_validation(ws, table: str, version: int, epochs: list[int], dim: int, with_norm: bool,
                    batch_rows: int) -> tuple[dict[int, dict[str, np.ndarray]], dict[int, dict[str, float]]]:
    """Validation vectors (float32) and raw norms by checkpoint and example id from a feature table (or its
    folded copy) at `version`: the first stored row of each (checkpoint, example), in table order."""
    from ..storage import meta_selections as meta
    from ..storage.features import vector_view

    cols = ("example_id", "epoch", "vector") + (("norm",) if with_norm else ())
    vecs_of: dict[int, dict[str, np.ndarray]] = {e: {} for e in epochs}
    norms_of: dict[int, dict[str, float]] = {e: {} for e in epochs}
    # one scan for every checkpoint (each scan evaluates the filter over the whole table)
    for batch in meta.scan_features(ws, table, version, "validation", epochs, cols, batch_rows):
        vecs = vector_view(batch.column("vector"), dim)
        scale = batch.column("norm").to_numpy(zero_copy_only=False) if with_norm else None
        for r, (eid, epoch) in enumerate(zip(batch.column("example_id").to_pylist(),
                                             batch.column("epoch").to_pylist())):
            got = vecs_of[epoch]
            if eid not in got:
                got[eid] = vecs[r].astype(np.float32)
                if scale is not None:
                    norms_of[epoch][eid] = float(scale[r])
    return vecs_of, norms_of
