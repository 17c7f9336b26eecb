"""Text baselines (SPEC §1 "Baselines and ablations"): random, BM25 and DSIR over each conversation's text.
The math is in `selection/baselines.py`; here each is planned, streamed over the filtered pool and registered.

A run's feature set, when there is one, only says which candidates have no completion token left after
truncation (they are excluded, as for LESS, so every method chooses from the same candidates).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...conversation import conversation_text, words
from ..reading import iter_texts, scorable_mask
from . import Scores, register_method

_TEXT = dict(feature_kind="adam", feature_required=False)   # exclusions from the run's Adam feature set


@dataclass(frozen=True)
class Bm25Params:
    k1: float = 1.5        # term-frequency saturation (rank-bm25's default)
    b: float = 0.75        # length normalisation
    epsilon: float = 0.25  # rank-bm25's floor for negative idf (a fraction of the mean idf)

    def problems(self) -> list[str]:   # beyond these the scores overflow or stop meaning BM25
        out = []
        if not 0 <= self.k1 <= 1e6:
            out.append(f"k1={self.k1}: must be in [0, 1e6]")
        if not 0 <= self.b <= 1:
            out.append(f"b={self.b}: must be in [0, 1]")
        if not 0 <= self.epsilon <= 1e6:
            out.append(f"epsilon={self.epsilon}: must be in [0, 1e6]")
        return out


@dataclass(frozen=True)
class DsirParams:
    buckets: int = 10_000  # hashed unigram+bigram features (DSIR's default)
    floor: float = 1e-8    # added to both probabilities before the log ratio

    def problems(self) -> list[str]:   # each candidate holds a float64 vector of `buckets`
        out = []
        if not 1 <= self.buckets <= 10_000_000:
            out.append(f"buckets={self.buckets}: must be in [1, 10,000,000]")
        if not 0 < self.floor <= 1:
            out.append(f"floor={self.floor}: must be in (0, 1]")
        return out


def _start(ws, plan, ids):
    mask, unscorable = scorable_mask(ws, plan, ids)
    if plan.fs is not None:
        plan.params["exclusions_from"] = plan.fs.feature_set_id
    return mask, unscorable


def _progress(plan, total: int):
    from ...progress import Progress

    return Progress(f"scoring {plan.method}", total=total, unit="candidates",
                    enabled=None if plan.options.progress else False)


def _queries(plan) -> tuple[tuple[str, ...], list[str], list[int]]:
    """Subtask names, every validation example's text and its subtask's index."""
    names = tuple(plan.subtasks)
    queries, query_subtask = [], []
    for j, s in enumerate(names):
        for _, msgs in plan.subtasks[s]:
            queries.append(conversation_text(msgs))
            query_subtask.append(j)
    return names, queries, query_subtask


@register_method("random", help="uniform draws from a seeded hash of each id (--seed)", **_TEXT)
def random_scores(ws, plan, ids: list[str]) -> Scores:
    from ..baselines import random_scores as draw

    mask, unscorable = _start(ws, plan, ids)
    return Scores(draw(ids, plan.seed)[:, None], mask, ("*",), unscorable)


@register_method("bm25", params=Bm25Params, help="Okapi BM25 of each candidate against the validation examples",
                 **_TEXT)
def bm25_scores(ws, plan, ids: list[str]) -> Scores:
    from .. import baselines

    mask, unscorable = _start(ws, plan, ids)
    p = plan.method_params
    plan.params["bm25"]["tokenizer"] = "lowercase \\w+ words"
    names, queries, query_subtask = _queries(plan)
    n = len(ids)
    seen = np.zeros(n, dtype=bool)
    progress = _progress(plan, int(mask.sum()))
    bm25 = baselines.StreamingBM25([words(q) for q in queries], p.k1, p.b, p.epsilon)
    order = []
    for r, text in iter_texts(ws, plan, ids, mask):
        if seen[r]:
            continue
        seen[r] = True
        order.append(r)
        bm25.add(words(text))
        progress.update()
    per_query = np.zeros((len(queries), n))
    per_query[:, order] = bm25.scores()
    progress.close()
    per_subtask = baselines.mean_within_subtasks(per_query, query_subtask, len(names))
    return Scores(per_subtask, mask & seen, names, unscorable)


@register_method("dsir", params=DsirParams, help="DSIR: hashed n-gram importance weights, target vs pool", **_TEXT)
def dsir_scores(ws, plan, ids: list[str]) -> Scores:
    from .. import baselines

    mask, unscorable = _start(ws, plan, ids)
    p = plan.method_params
    plan.params["dsir"].update(ngrams="unigram+bigram", hash="crc32")
    names = tuple(plan.subtasks)
    n = len(ids)
    seen = np.zeros(n, dtype=bool)
    progress = _progress(plan, int(mask.sum()))
    ngrams = baselines.HashedNgrams(p.buckets)
    pool_counts = np.zeros(p.buckets)
    for r, text in iter_texts(ws, plan, ids, mask):
        if not seen[r]:
            seen[r] = True
            pool_counts += ngrams.counts(text)
    log_ratio = np.stack([baselines.dsir_log_ratio(
        sum(ngrams.counts(conversation_text(m)) for _, m in plan.subtasks[s]), pool_counts,
        p.floor) for s in names], axis=1)                     # [buckets, m]
    per_subtask = np.zeros((n, len(names)))
    done = np.zeros(n, dtype=bool)
    for r, text in iter_texts(ws, plan, ids, mask):
        if not done[r]:
            done[r] = True
            per_subtask[r] = ngrams.counts(text) @ log_ratio
            progress.update()
    progress.close()
    return Scores(per_subtask, mask & seen, names, unscorable)
