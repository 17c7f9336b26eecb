"""`ScoreAccumulator.add_stream` (scan and conversion in a background thread, GEMM in the caller) against the
synchronous `add`: bit-identical scores, duplicates counted once, errors on either side end the thread."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from lessdb.selection.scoring import ScoreAccumulator, build_queries

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
