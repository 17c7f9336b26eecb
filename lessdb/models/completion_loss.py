"""The completion loss with the vocabulary projection only where a label exists — the one place every loss in
lessdb (warmup/train, featurize, validation gradients, eval loss) is computed.

The loss of an example is the mean next-token cross-entropy over its completion (assistant) tokens. A causal LM
computes logits at every position, but position t only matters when token t+1 is labelled. The LM head is
large for small models (SmolLM2-135M: 49,152 × 576, ~21% of the forward FLOPs per token, plus a softmax over
49,152 classes and its backward), and on short few-shot examples (BBH: ~250 tokens, 1-5 completion tokens)
almost every one of those positions is wasted. Passing a boolean `logits_to_keep` mask to the model's own
forward (transformers >= 5: hidden states are gathered at the True positions, flattened to [N, hidden],
before `lm_head`) projects only the N labelled positions, and keeps everything the model's forward does after
the head (e.g. Gemma's final logit soft-capping). The per-token cross-entropies are the same numbers as with
full logits (the head is a per-position map); only the order of float sums may differ.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


def next_token_mask(labels: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: the positions whose next token is labelled (the last position never is)."""
    keep = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


@dataclass
class TokenLosses:
    """Cross-entropy of every labelled token of a batch, flattened row by row."""
    ce: torch.Tensor      # [N] float32, attached to the graph when computed with grad
    rows: torch.Tensor    # [N] the batch row of each token
    batch_size: int

    @property
    def n_tokens(self) -> int:
        return int(self.ce.shape[0])

    def counts(self) -> torch.Tensor:
        """[B] labelled tokens per example."""
        return torch.bincount(self.rows, minlength=self.batch_size)

    def total(self) -> torch.Tensor:
        """Sum over every labelled token of the batch (the trainer divides by the effective batch's count)."""
        return self.ce.sum()

    def per_example_mean(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """[B] mean CE over each example's own labelled tokens; 0 for an example without any."""
        sums = torch.zeros(self.batch_size, dtype=dtype, device=self.ce.device)
        sums = sums.index_add(0, self.rows, self.ce.to(dtype))
        return sums / self.counts().clamp(min=1).to(dtype)


def completion_token_losses(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                            labels: torch.Tensor, **forward_kwargs) -> TokenLosses:
    """Run `model` (a causal LM, peft-wrapped or not) on the batch, projecting to the vocabulary only at the
    positions that predict a labelled token, and return those tokens' cross-entropies."""
    keep = next_token_mask(labels)
    out = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep, use_cache=False,
                **forward_kwargs)
    logits = out.logits
    if logits.ndim == 3:  # a model whose forward ignores a boolean logits_to_keep: full logits, gathered here
        logits = logits[keep]
    targets = labels[:, 1:][keep[:, :-1]]
    ce = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    rows = keep.nonzero()[:, 0]
    return TokenLosses(ce, rows, int(labels.shape[0]))
