"""The two-stage prefilter's math (issue 14 item 6; `select --prefilter` end to end is test_select_prefilter.py):
folding a CountSketch at d into d/m is the CountSketch at d/m with buckets reduced mod d/m, checked against sketches built
independently here; and with a shortlist covering the whole pool the two stages give the exact top k."""
import numpy as np

from lessdb.featurize.folding import fold
from lessdb.selection.two_stage import two_stage_top_k


def _countsketch(x: np.ndarray, buckets: np.ndarray, signs: np.ndarray, d: int) -> np.ndarray:
    out = np.zeros((x.shape[0], d))
    for j in range(x.shape[1]):   # column by column: an independent, obviously-correct construction
        out[:, buckets[j]] += signs[j] * x[:, j]
    return out


def test_fold_of_a_countsketch_is_the_countsketch_with_reduced_buckets():
    rng = np.random.default_rng(0)
    p, d, low = 500, 64, 16
    x = rng.standard_normal((5, p))
    buckets, signs = rng.integers(0, d, p), rng.choice([-1.0, 1.0], p)
    full = _countsketch(x, buckets, signs, d)
    direct_low = _countsketch(x, buckets % low, signs, low)
    np.testing.assert_allclose(fold(full, low), direct_low, rtol=1e-5, atol=1e-5)


def test_shortlist_covering_the_pool_gives_the_exact_top_k():
    rng = np.random.default_rng(1)
    full = rng.standard_normal((200, 64)).astype(np.float32)
    queries = rng.standard_normal((64, 3)).astype(np.float32)
    k = 7
    result = two_stage_top_k(fold(full, 16), queries, k, factor=200, full_rows=lambda idx: full[idx])
    exact = ((full / np.linalg.norm(full, axis=1, keepdims=True)) @
             (queries / np.linalg.norm(queries, axis=0, keepdims=True))).max(axis=1)
    want = np.lexsort((np.arange(len(exact)), -exact))[:k]
    assert list(result["top"]) == list(want)
    np.testing.assert_allclose(result["scores"], exact[want], rtol=1e-5)
