"""The scoring math of LESS step 3 against an independent, loop-by-loop numpy computation."""
from __future__ import annotations

import numpy as np
import pytest

from lessdb.selection.scoring import (ScoreAccumulator, build_queries, k_from_percentage, subtask_query, top_k)


def _cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _naive(cands, val, weights, aggregation, cand_norms=None, val_norms=None):
    """cands[epoch]: [N, d] unit; val[epoch][subtask]: [n_j, d] unit. Returns [N, m] in sorted subtask order."""
    epochs = sorted(cands)
    subtasks = sorted(val[epochs[0]])
    n = len(cands[epochs[0]])
    out = np.zeros((n, len(subtasks)))
    for z in range(n):
        for j, s in enumerate(subtasks):
            total = 0.0
            for e in epochs:
                x = cands[e][z].astype(np.float64)
                vs = val[e][s].astype(np.float64)
                if aggregation == "paper":
                    g = np.mean([v / np.linalg.norm(v) for v in vs], axis=0)
                    total += weights[e] * _cos(g, x)
                elif aggregation == "reference":
                    total += weights[e] * np.mean([_cos(v, x) for v in vs])
                else:  # dot on raw vectors
                    raw_x = x * cand_norms[e][z]
                    raw_v = vs * val_norms[e][s][:, None]
                    total += weights[e] * float(np.dot(raw_v.mean(axis=0), raw_x))
            out[z, j] = total
    return out


def _data(rng, n=37, d=24, epochs=(1, 2, 3), subtasks=None, dtype=np.float32):
    subtasks = subtasks or {"a": 3, "b": 1, "c": 2}
    cands = {e: _unit(rng.standard_normal((n, d))).astype(dtype) for e in epochs}
    val = {e: {s: _unit(rng.standard_normal((k, d))).astype(dtype) for s, k in subtasks.items()} for e in epochs}
    weights = {e: float(w) for e, w in zip(epochs, rng.uniform(1e-6, 2e-5, len(epochs)))}
    return cands, val, weights


def _stream(cands, queries, order_rng=None, batch=5, row_scale="inverse_norm", scales=None):
    n = len(next(iter(cands.values())))
    acc = ScoreAccumulator(n, queries, row_scale=row_scale, batch_rows=4)
    for e, x in cands.items():
        perm = np.arange(n) if order_rng is None else order_rng.permutation(n)
        for start in range(0, n, batch):
            rows = perm[start:start + batch]
            acc.add(e, rows, x[rows], None if scales is None else scales[e][rows])
    return acc.result()


@pytest.mark.parametrize("aggregation", ["paper", "reference"])
def test_streamed_scores_equal_naive_cosines(aggregation):
    rng = np.random.default_rng(0)
    cands, val, weights = _data(rng)
    expected = _naive(cands, val, weights, aggregation)
    scores = _stream(cands, build_queries(val, weights, aggregation), order_rng=rng)
    assert scores.valid.all()
    np.testing.assert_allclose(scores.per_subtask, expected, rtol=1e-5, atol=1e-11)
    np.testing.assert_allclose(scores.score, expected.max(axis=1), rtol=1e-5, atol=1e-11)
    assert (scores.best_subtask == expected.argmax(axis=1)).all()


def test_aggregations_differ_exactly_by_the_subtask_mean_norm():
    """reference = paper · ‖mean of unit validation vectors‖ per checkpoint and subtask (the fold)."""
    rng = np.random.default_rng(1)
    val = _unit(rng.standard_normal((4, 16)))
    paper, ref = subtask_query(val, "paper"), subtask_query(val, "reference")
    np.testing.assert_allclose(ref, paper * np.linalg.norm(val.mean(axis=0)), rtol=1e-12)
    assert abs(np.linalg.norm(paper) - 1) < 1e-12


def test_aggregations_can_rank_differently():
    """With two checkpoints, the norm factor reweights checkpoints, so the two variants are not equivalent."""
    rng = np.random.default_rng(2)
    differ = False
    for _ in range(20):
        cands, val, weights = _data(rng, n=30, subtasks={"a": 3, "b": 3})
        p = _naive(cands, val, weights, "paper").max(axis=1)
        r = _naive(cands, val, weights, "reference").max(axis=1)
        differ |= not np.array_equal(np.argsort(-p), np.argsort(-r))
    assert differ


def test_float16_features_match_float64_truth():
    rng = np.random.default_rng(3)
    cands, val, weights = _data(rng, d=64, dtype=np.float16)
    expected = _naive(cands, val, weights, "paper")
    scores = _stream(cands, build_queries(val, weights, "paper"))
    np.testing.assert_allclose(scores.per_subtask, expected, rtol=1e-4, atol=1e-9)


def test_unnormalised_dot_uses_raw_norms():
    rng = np.random.default_rng(4)
    cands, val, weights = _data(rng)
    cand_norms = {e: rng.uniform(0.1, 10, len(x)) for e, x in cands.items()}
    val_norms = {e: {s: rng.uniform(0.1, 10, len(v)) for s, v in sv.items()} for e, sv in val.items()}
    expected = _naive(cands, val, weights, "dot", cand_norms, val_norms)
    queries = build_queries(val, weights, "dot", norms=val_norms)
    scores = _stream(cands, queries, row_scale="given", scales=cand_norms)
    np.testing.assert_allclose(scores.per_subtask, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    # and it is a different ranking from cosine: norms matter
    cos = _naive(cands, val, weights, "paper").max(axis=1)
    assert not np.array_equal(np.argsort(-cos), np.argsort(-expected.max(axis=1)))


def test_max_over_subtasks_picks_the_matching_subtask():
    d = 8
    e = np.eye(d)
    val = {1: {"x": e[[0]], "y": e[[1]], "z": e[[2, 3]]}}
    cands = {1: np.stack([e[1], e[0], (e[2] + e[3]) / np.sqrt(2), e[5]]).astype(np.float32)}
    scores = _stream(cands, build_queries(val, {1: 1.0}, "paper"))
    assert list(scores.best_subtask[:3]) == [1, 0, 2]
    np.testing.assert_allclose(scores.score, [1, 1, 1, 0], atol=1e-6)


def test_rows_missing_a_checkpoint_or_duplicated_are_handled():
    rng = np.random.default_rng(5)
    cands, val, weights = _data(rng, n=10, epochs=(1, 2))
    queries = build_queries(val, weights, "paper")
    acc = ScoreAccumulator(10, queries, batch_rows=3)
    acc.add(1, np.arange(10), cands[1])
    acc.add(2, np.arange(9), cands[2][:9])            # row 9 lacks checkpoint 2
    acc.add(2, np.array([0, 0]), cands[2][[0, 0]])     # duplicates count once
    res = acc.result()
    expected = _naive({e: c[:9] for e, c in cands.items()}, val, weights, "paper")
    assert list(res.valid) == [True] * 9 + [False]
    assert np.isnan(res.score[9])
    np.testing.assert_allclose(res.per_subtask[:9], expected, rtol=1e-5)
    assert acc.n_duplicates == 2


def test_zero_vector_is_not_scored_and_not_nan_selected():
    val = {1: {"a": np.eye(4)[[0]]}}
    acc = ScoreAccumulator(2, build_queries(val, {1: 1.0}, "paper"))
    acc.add(1, np.array([0, 1]), np.array([[0, 0, 0, 0], [1, 0, 0, 0]], dtype=np.float32))
    res = acc.result()
    assert list(res.valid) == [False, True]
    assert list(top_k(res.score, ["a", "b"], 1, res.valid)) == [1]


def test_top_k_ties_broken_by_id_whatever_the_input_order():
    ids = ["e", "b", "d", "a", "c", "f"]
    scores = np.array([0.5, 0.9, 0.5, 0.5, 0.9, np.nan])
    idx = top_k(scores, ids, 4)
    assert [ids[i] for i in idx] == ["b", "c", "a", "d"]
    perm = [5, 3, 1, 0, 4, 2]
    idx2 = top_k(scores[perm], [ids[i] for i in perm], 4)
    assert [ids[perm[i]] for i in idx2] == ["b", "c", "a", "d"]
    with pytest.raises(ValueError):
        top_k(scores, ids, 6)   # only 5 have a score


def test_k_from_percentage():
    assert k_from_percentage(0.05, 100) == 5
    assert k_from_percentage(0.05, 270_679) == 13_533
    assert k_from_percentage(0.07, 100) == 7
    assert k_from_percentage(0.05, 19) == 0
