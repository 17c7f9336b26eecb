"""MinHash text signatures for `--dedup-text` (datasketch's MinHash, affine32 scheme, 128 permutations, seed 1,
over the word 3-grams of the whole conversation, lowercased), stored in LanceDB (`text_minhash`). Computed lazily:
a `--dedup-text` selection computes (and keeps) those of the candidates it examines, in ranking order, which
for a top-5% selection is a small part of the pool; `lessdb ingest --minhash` computes them all at ingest
instead. At ingest they cost about 3.5x the ingest's own CPU time (bench/RESULTS.md), the reason they are lazy.

The estimated Jaccard similarity of two signatures is the fraction of equal slots (datasketch's `jaccard`);
select's `--dedup-text` check that reads them is selection/dedup.py.
"""
from __future__ import annotations

import hashlib
import json
import zlib

import numpy as np

from ..conversation import conversation_text, words
from ..storage import minhash_store

NUM_PERM = 128
SEED = 1
NGRAM = 3
SCHEME_DS = "affine32"   # datasketch 2's default: 32-bit hash values and permutations
PARAMS = {"library": "datasketch", "scheme": SCHEME_DS, "num_perm": NUM_PERM, "seed": SEED,
          "shingles": f"word {NGRAM}-grams hashed as crc32 polynomials", "tokenizer": "lowercase \\w+ words",
          "text": "all turns"}
SIGNATURE_ID = "mh-" + hashlib.sha256(json.dumps(PARAMS, sort_keys=True).encode()).hexdigest()[:12]


_WORD_HASH: dict[str, int] = {}


def _word_hash(w: str) -> int:
    h = _WORD_HASH.get(w)
    if h is None:
        h = zlib.crc32(w.encode("utf-8"))
        if len(_WORD_HASH) < 2_000_000:
            _WORD_HASH[w] = h
    return h


def shingle_hashes(text: str) -> np.ndarray:
    """The distinct 32-bit hashes of the text's word 3-grams (a text shorter than 3 words: one shingle of all
    of it). A 3-gram's hash is a polynomial of its words' crc32s mod 2³², computed in numpy: hashing every
    shingle string with sha1 (datasketch's default) took 3x longer than the rest of ingest."""
    toks = words(text)
    if not toks:
        return np.zeros(0, dtype=np.uint32)
    h = np.fromiter((_word_hash(w) for w in toks), dtype=np.uint64, count=len(toks))
    if len(h) >= NGRAM:
        h = (h[:-2] * np.uint64(0x9E3779B1) + h[1:-1] * np.uint64(0x85EBCA77) + h[2:]) & np.uint64(0xFFFFFFFF)
    else:
        h = np.array([int(sum(int(x) * 31 ** i for i, x in enumerate(h)) & 0xFFFFFFFF)], dtype=np.uint64)
    return np.unique(h).astype(np.uint32)


_PROTOTYPE = None


def _identity(x):
    return x


def signatures(texts: list[str]) -> np.ndarray:
    """[n, NUM_PERM] uint32 MinHash signatures: datasketch's MinHash over each text's shingle hashes (given as
    the items, with an identity hash function)."""
    global _PROTOTYPE
    from datasketch import MinHash

    if _PROTOTYPE is None:   # the permutations are the costly part: generate them once
        _PROTOTYPE = MinHash(num_perm=NUM_PERM, seed=SEED, scheme=SCHEME_DS)
    out = np.empty((len(texts), NUM_PERM), dtype=np.uint32)
    for i, text in enumerate(texts):
        m = MinHash(num_perm=NUM_PERM, seed=SEED, permutations=_PROTOTYPE.permutations, scheme=SCHEME_DS,
                    hashfunc=_identity)
        sh = shingle_hashes(text)
        if len(sh):
            m.update_batch(sh)
        out[i] = m.hashvalues.astype(np.uint32)
    return out


def jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard of signature `a` [P] with each row of `b` [n, P]."""
    return (np.asarray(b) == np.asarray(a)[None, :]).mean(axis=1)


def ensure_signatures(ws, pool: str, version: int | None, ids: list[str]) -> dict[str, np.ndarray]:
    """Signatures of `ids`, computing and storing the missing ones (from the candidates at `version`)."""
    from ..storage.candidates import iter_candidate_batches

    have = minhash_store.read_signatures(ws, SIGNATURE_ID, ids, NUM_PERM)
    todo = [i for i in ids if i not in have]
    for table in iter_candidate_batches(ws, todo, pool=pool, version=version, batch_size=1024):
        cids = table.column("id").to_pylist()
        sigs = signatures([conversation_text(m) for m in table.column("messages").to_pylist()])
        minhash_store.write_signatures(ws, SIGNATURE_ID, cids, sigs)
        have.update(zip(cids, sigs))
    return have


def record_at_ingest(ws, version: int | None, ingest_ids: list[int]) -> None:
    """`ingest --minhash`, after the ingest is recorded: signatures of the rows it wrote (a crash before this
    only means they are computed at their first --dedup-text selection)."""
    from ..storage.candidates import read_ingest_rows

    if version is None:
        return
    for batch in read_ingest_rows(ws, version, ingest_ids, ["id", "messages"]):
        cids = batch.column("id").to_pylist()
        sigs = signatures([conversation_text(m) for m in batch.column("messages").to_pylist()])
        minhash_store.write_signatures(ws, SIGNATURE_ID, cids, sigs)
