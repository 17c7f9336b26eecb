"""Batches of length-ordered examples, bounded by a count and, on a CPU, by padded tokens: the forward+backward
passes of featurize, validation gradients and training micro-batches (warmup, train).

Memory of such a pass is dominated by the activations the backward pass keeps (SmolLM2-135M in float32, measured
by bench/batch_tokens.py: ~2.3 GB above the model for a 1,024-token featurize batch, ~2.8 GB for a training
micro-batch, whose LoRA dropout keeps more) — most of `lessdb quickstart`'s peak. On a CPU the GEMMs are as
efficient at 512 rows as at 1,024 (same run, side by side: 4-5% less CPU time at 512, 9-19% more at 256), so a
cap of 512 padded tokens roughly halves that memory for free; on a GPU the count alone decides (bigger batches
are faster there). Results do not depend on the grouping, up to float rounding: per-example gradients are per
example (tests/test_featurize_jobs.py), and a training step sums its micro-batches' token losses before dividing
by the step's token count (tests/test_micro_batches.py).
"""
from __future__ import annotations

CPU_BATCH_TOKENS = 512


def token_budget(device) -> int | None:
    """Padded tokens per batch: CPU_BATCH_TOKENS on a CPU, no cap on an accelerator."""
    return None if str(device).startswith("cuda") else CPU_BATCH_TOKENS


def batches_by_length(items: list, lengths: list[int], batch_size: int, max_tokens: int | None) -> list[list]:
    """Consecutive groups of `items` (sorted by length, either way) of at most `batch_size` items whose padded size
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
