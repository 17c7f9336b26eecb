"""Batches of length-sorted examples, bounded by a count and, on a CPU, by padded tokens.

Memory of a featurize batch is dominated by the activations the backward pass keeps: ~54 KB per token per layer
for SmolLM2-135M in float32, i.e. ~3.3 GB for 8 × 256 tokens — most of `lessdb quickstart`'s peak. On a CPU the
GEMMs are as efficient at 1,024 rows as at 2,048, so capping a batch at 1,024 padded tokens halves that memory at
no measurable cost in speed; on a GPU the count alone decides (bigger batches are faster there). Per-example
gradients do not depend on the grouping (up to float rounding: tests/test_featurize_jobs.py).
"""
from __future__ import annotations

CPU_BATCH_TOKENS = 1024


def token_budget(device) -> int | None:
    """Padded tokens per batch: CPU_BATCH_TOKENS on a CPU, no cap on an accelerator."""
    return None if str(device).startswith("cuda") else CPU_BATCH_TOKENS


def batches_by_length(items: list, lengths: list[int], batch_size: int, max_tokens: int | None) -> list[list]:
    """Consecutive groups of `items` (sorted by length, ascending) of at most `batch_size` items whose padded size
    (longest length × count) is at most `max_tokens`; an item longer than the budget forms a batch of its own."""
    out, cur, longest = [], [], 0
    for item, n in zip(items, lengths):
        grown = max(longest, n)
        if cur and (len(cur) >= batch_size or (max_tokens is not None and grown * (len(cur) + 1) > max_tokens)):
            out.append(cur)
            cur, grown = [], n
        cur.append(item)
        longest = grown
    if cur:
        out.append(cur)
    return out
