"""Baseline scorers (SPEC §1 "Baselines and ablations"), each producing per-query or per-subtask scores that
go through the same aggregation (mean within a subtask, max over subtasks), top-k and record path as LESS.

- random: a seeded hash of (seed, candidate id), so a candidate's draw does not depend on which others pass
  the filter and a replay redraws the same numbers.
- BM25: Okapi BM25 exactly as rank-bm25's BM25Okapi scores it (its own idf with the epsilon floor), streamed
  over the pool so memory holds only the query words' postings, not a dict per document.
- DSIR (Xie et al. 2023): hashed unigram+bigram features; log importance weight of a candidate =
  Σ_f count_f · (log p_target(f) − log p_pool(f)), one target distribution per subtask; deterministic top-k
  (no Gumbel resampling).
"""
from __future__ import annotations

import hashlib
import zlib
from collections import Counter
from typing import Iterable

import numpy as np

from ..conversation import words


# -- random ---------------------------------------------------------------------------------------------------
def random_scores(ids: list[str], seed: int) -> np.ndarray:
    """Uniform [0, 1) per id from sha256(seed:id): independent of the other ids and of their order."""
    out = np.empty(len(ids), dtype=np.float64)
    for i, cid in enumerate(ids):
        digest = hashlib.sha256(f"{seed}:{cid}".encode()).digest()
        out[i] = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    return out


# -- aggregation shared by the text baselines -------------------------------------------------------------------
def mean_within_subtasks(per_query: np.ndarray, query_subtask: list[int], n_subtasks: int) -> np.ndarray:
    """[Q, N] per-validation-example scores -> [N, m] mean over each subtask's examples."""
    per_query = np.asarray(per_query, dtype=np.float64)
    out = np.zeros((per_query.shape[1], n_subtasks), dtype=np.float64)
    counts = np.bincount(np.asarray(query_subtask), minlength=n_subtasks)
    for q, j in enumerate(query_subtask):
        out[:, j] += per_query[q]
    return out / counts[None, :]


# -- BM25 -----------------------------------------------------------------------------------------------------
class StreamingBM25:
    """BM25Okapi scores of every query against a corpus fed one document at a time.

    Equal to `rank_bm25.BM25Okapi(corpus).get_scores(query)` (a test checks it); the idf and its epsilon floor
    are computed by rank-bm25's own `_calc_idf`."""

    def __init__(self, queries: list[list[str]], k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25):
        self.k1, self.b, self.epsilon = k1, b, epsilon
        self.vocab: dict[str, int] = {}
        for q in queries:
            for w in q:
                self.vocab.setdefault(w, len(self.vocab))
        # query term counts (rank-bm25 loops over query tokens with repeats)
        self.query_counts = np.zeros((len(queries), len(self.vocab)), dtype=np.float64)
        for qi, q in enumerate(queries):
            for w in q:
                self.query_counts[qi, self.vocab[w]] += 1
        self.doc_freq: Counter = Counter()
        self.doc_len: list[int] = []
        self._post_doc: list[np.ndarray] = []
        self._post_word: list[np.ndarray] = []
        self._post_tf: list[np.ndarray] = []

    def add(self, tokens: list[str]) -> None:
        doc = len(self.doc_len)
        self.doc_len.append(len(tokens))
        freqs = Counter(tokens)
        self.doc_freq.update(freqs.keys())
        hits = [(self.vocab[w], tf) for w, tf in freqs.items() if w in self.vocab]
        if hits:
            arr = np.asarray(hits, dtype=np.int64)
            self._post_doc.append(np.full(len(arr), doc, dtype=np.int64))
            self._post_word.append(arr[:, 0])
            self._post_tf.append(arr[:, 1].astype(np.float64))

    def idf(self) -> np.ndarray:
        from rank_bm25 import BM25Okapi

        okapi = BM25Okapi.__new__(BM25Okapi)   # reuse the library's idf (with epsilon floor), not its corpus
        okapi.k1, okapi.b, okapi.epsilon = self.k1, self.b, self.epsilon
        okapi.corpus_size, okapi.idf = len(self.doc_len), {}
        okapi._calc_idf(dict(self.doc_freq))
        return np.array([okapi.idf.get(w) or 0.0 for w in self.vocab], dtype=np.float64)

    def scores(self) -> np.ndarray:
        """[Q, N] BM25 scores."""
        n = len(self.doc_len)
        if n == 0:
            return np.zeros((len(self.query_counts), 0))
        doc_len = np.asarray(self.doc_len, dtype=np.float64)
        avgdl = doc_len.sum() / n
        out = np.zeros((len(self.query_counts), n), dtype=np.float64)
        if not self._post_doc:
            return out
        docs = np.concatenate(self._post_doc)
        wids = np.concatenate(self._post_word)
        tf = np.concatenate(self._post_tf)
        idf = self.idf()
        term = idf[wids] * (tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * doc_len[docs] / avgdl)))
        for qi in range(len(self.query_counts)):
            weight = self.query_counts[qi, wids]
            nz = weight != 0
            out[qi] = np.bincount(docs[nz], weights=weight[nz] * term[nz], minlength=n)
        return out


# -- DSIR -----------------------------------------------------------------------------------------------------
class HashedNgrams:
    """Unigram + bigram counts hashed into `buckets` (DSIR's default 10,000) with a stable hash (crc32), so
    features are the same in every process (Python's hash() is salted)."""

    def __init__(self, buckets: int = 10_000):
        self.buckets = buckets
        self._word_hash: dict[str, int] = {}

    def _hash(self, w: str) -> int:
        h = self._word_hash.get(w)
        if h is None:
            h = zlib.crc32(w.encode("utf-8"))
            if len(self._word_hash) < 2_000_000:
                self._word_hash[w] = h
        return h

    def counts(self, text: str) -> np.ndarray:
        toks = words(text)
        if not toks:
            return np.zeros(self.buckets, dtype=np.float64)
        h = np.fromiter((self._hash(w) for w in toks), dtype=np.uint64, count=len(toks))
        uni = h % self.buckets
        bi = ((h[:-1] * np.uint64(1_000_003)) ^ h[1:]) % np.uint64(self.buckets)
        return np.bincount(np.concatenate([uni, bi]).astype(np.int64), minlength=self.buckets).astype(np.float64)


def dsir_log_ratio(target_counts: np.ndarray, pool_counts: np.ndarray, floor: float = 1e-8) -> np.ndarray:
    """log p_target(f) − log p_pool(f) per hashed feature (DSIR's importance weight, in logs)."""
    pt = target_counts / max(target_counts.sum(), 1.0)
    pp = pool_counts / max(pool_counts.sum(), 1.0)
    return np.log(pt + floor) - np.log(pp + floor)


def iter_chunks(items: Iterable, size: int):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def finite_or_raise(x: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: non-finite scores")
    return x


__all__ = ["random_scores", "mean_within_subtasks", "StreamingBM25", "HashedNgrams", "dsir_log_ratio"]
