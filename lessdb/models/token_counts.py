"""Token counts of a pool's candidates for one tokenizer and window (`token_counts`): prompt, completion, total and
whether truncated. `lessdb warmup` fills them for its pool (so SQL filters can use them), and a select token budget
counts the candidates no run has counted yet, with the run's own tokenizer, so every replay reads the same numbers.
"""
from __future__ import annotations

import sys
import time

import pyarrow as pa

from ..storage import meta_runs
from ..storage.candidates import iter_candidate_batches, select_candidate_ids
from .tokenization import encode_rows, tokenizer_id


def record_token_counts(ws, tokenizer, pool: str, max_seq_length: int, version: int | None = None,
                        ids: list[str] | None = None, progress: bool = True) -> str:
    """Store token counts of the pool's candidates (those not yet counted) for this tokenizer; returns its id."""
    tid = tokenizer_id(tokenizer)
    ids = ids if ids is not None else select_candidate_ids(ws, pool, version=version)
    done = meta_runs.counted_candidate_ids(ws, tid, max_seq_length)
    todo = [i for i in ids if i not in done]
    t0, counted = time.monotonic(), 0
    for table in iter_candidate_batches(ws, todo, pool=pool, version=version, batch_size=512):
        rows = encode_rows(tokenizer, table, max_seq_length)
        meta_runs.insert_token_counts(ws, pa.Table.from_pylist([
            {"tokenizer_id": tid, "max_seq_length": max_seq_length, "candidate_id": cid,
             "prompt_tokens": e.prompt_tokens, "completion_tokens": e.completion_tokens,
             "total_tokens": e.total_tokens, "truncated": e.truncated} for cid, e in rows],
            schema=meta_runs.TOKEN_COUNT_SCHEMA))
        counted += len(rows)
        if progress and len(todo) > 512:
            rate = counted / max(time.monotonic() - t0, 1e-9)
            print(f"warmup: token counts {counted}/{len(todo)} candidates, {rate:.0f}/s, "
                  f"ETA {(len(todo) - counted) / max(rate, 1e-9):.0f}s", file=sys.stderr, flush=True)
    return tid
