"""`ScoreAccumulator.add_stream` (scan in a background thread, arithmetic in the caller) against the synchronous
`add`: bit-identical scores, duplicates counted once, errors on either side end the thread; and scores that do
not depend on how the rows were batched (fixed, zero-padded GEMM tiles)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from lessdb.selection.scoring import TILE_ROWS, ScoreAccumulator, build_queries

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _setup(row_scale, dtype, seed=0, n=300, d=40, epochs=(1, 2, 3)):
    rng = np.random.default_rng(seed)
    val = {e: {s: rng.standard_normal((k, d)).astype(np.float32) for s, k in (("a", 2), ("b", 3), ("c", 1))}
           for e in epochs}
    aggregation = "dot" if row_scale == "given" else "paper"
    queries = build_queries(val, {e: 1e-3 * e for e in epochs}, aggregation)
    batches = []
    for e in epochs:
        order = rng.permutation(n)
        order = np.concatenate([order, order[:17], order[5:9]])   # duplicates across and within batches
        x = rng.standard_normal((len(order), d)).astype(dtype)
        x[np.flatnonzero(order == 0)[0]] = 0                       # row 0's vector is zero: never scored
        scale = rng.uniform(0.5, 3.0, len(order))
        sizes = rng.integers(1, 80, 20)
        start = 0
        for size in sizes:
            stop = min(start + int(size), len(order))
            batches.append((e, order[start:stop], x[start:stop], scale[start:stop] if row_scale == "given" else None))
            start = stop
        if start < len(order):
            batches.append((e, order[start:], x[start:], scale[start:] if row_scale == "given" else None))
    return n, queries, batches


@pytest.mark.parametrize("row_scale,dtype", [("inverse_norm", np.float16), ("inverse_norm", np.float32),
                                             ("given", np.float16)])
def test_stream_equals_add_bit_for_bit(row_scale, dtype):
    n, queries, batches = _setup(row_scale, dtype)
    sync = ScoreAccumulator(n, queries, row_scale=row_scale, batch_rows=32)
    for b in batches:
        sync.add(*b)
    seen = []
    stream = ScoreAccumulator(n, queries, row_scale=row_scale, batch_rows=32)
    stream.add_stream(iter(batches), on_batch=seen.append, depth=2)
    assert np.array_equal(stream.scores, sync.scores)
    assert np.array_equal(stream.seen, sync.seen) and np.array_equal(stream.zero_norm, sync.zero_norm)
    assert stream.n_duplicates == sync.n_duplicates == 3 * (17 + 4)
    assert seen == [len(b[1]) for b in batches]
    assert stream.result().valid.sum() == n - (1 if row_scale == "inverse_norm" else 0)
    # and the synchronous scores are the plain float64 formula (the stream is not just equal to itself)
    if row_scale == "inverse_norm":
        first = {}
        for e, rows, x, _ in batches:
            for r, v in zip(rows, x):
                first.setdefault((e, int(r)), v.astype(np.float64))
        r = 7
        want = sum(first[(e, r)] / np.linalg.norm(first[(e, r)]) @ queries.matrices[e].astype(np.float64)
                   for e in queries.epochs)
        np.testing.assert_allclose(sync.scores[r], want, rtol=1e-5)


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name == "lessdb-score-reader"}


def test_error_in_the_scan_is_raised_and_the_thread_ends():
    n, queries, batches = _setup("inverse_norm", np.float16)

    def failing():
        yield from batches[:5]
        raise ValueError("scan broke")

    acc = ScoreAccumulator(n, queries, batch_rows=32)
    with pytest.raises(ValueError, match="scan broke"):
        acc.add_stream(failing())
    assert not _threads()


def test_error_in_the_caller_stops_the_reader():
    n, queries, batches = _setup("inverse_norm", np.float16)
    pulled = []

    def endless():
        while True:                     # would never end if the reader were not stopped
            for b in batches:
                pulled.append(1)
                yield b

    def boom(_n):
        if len(pulled) > 10:
            raise RuntimeError("caller stops")

    acc = ScoreAccumulator(n, queries, batch_rows=32)
    with pytest.raises(RuntimeError, match="caller stops"):
        acc.add_stream(endless(), on_batch=boom, depth=1)
    assert not _threads()


@pytest.mark.parametrize("row_scale", ["inverse_norm", "given"])
def test_scores_do_not_depend_on_batching(row_scale):
    """The same rows in different batches (input batch sizes, --batch-rows) give bit-identical scores: every
    GEMM is one fixed-size tile, so rows straddle tiles differently in each run."""
    n, queries, batches = _setup(row_scale, np.float16, seed=3, n=2 * TILE_ROWS + 300, d=64, epochs=(1, 2))
    results = []
    for batch_rows, merge in ((4096, False), (700, False), (4096, True), (1500, True)):
        acc = ScoreAccumulator(n, queries, row_scale=row_scale, batch_rows=batch_rows)
        if merge:   # one input batch per checkpoint instead of 20-odd small ones
            for e in queries.epochs:
                part = [b for b in batches if b[0] == e]
                acc.add(e, np.concatenate([b[1] for b in part]), np.concatenate([b[2] for b in part]),
                        None if part[0][3] is None else np.concatenate([b[3] for b in part]))
        else:
            acc.add_stream(iter(batches))
        results.append(acc)
    for other in results[1:]:
        assert np.array_equal(other.scores, results[0].scores)
        assert np.array_equal(other.result().valid, results[0].result().valid)
