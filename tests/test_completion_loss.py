"""The LM head at label positions only (lessdb.models.completion_loss) against the full-logits computation: losses,
training gradients, per-example gradients and features, eval losses — with padding, per-example completion
masks of different sizes and an example without any completion token (tiny model, real peft)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lessdb.models.completion_loss import completion_token_losses, next_token_mask
from lessdb.evaluate import metrics
from lessdb.featurize.adam import GradTransform
from lessdb.featurize.engine import FeatureEngine
from lessdb.featurize.per_example_grads import capture, forward_backward, lora_params, per_example_losses
from lessdb.featurize.sketch import CountSketch
from lessdb.models.tokenization import collate
from lessdb.runs.trainer import token_ce_sum
from test_featurize_math import encoded, lora_model  # noqa: F401  (fixtures: tiny LoRA model, 5 conversations)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def batch(encoded):
    b = collate(encoded, 0)
    b["labels"][3, :] = -100   # one example left with no completion token (featurize excludes such rows)
    assert (b["attention_mask"] == 0).any()   # right padding present
    return b


def full_logits(model, b):
    return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits


def test_mask_marks_positions_before_labels(batch):
    keep = next_token_mask(batch["labels"])
    assert not keep[:, -1].any()
    assert torch.equal(keep[:, :-1], batch["labels"][:, 1:] != -100)
    assert not keep[3].any()


def test_head_runs_only_at_label_positions(lora_model, batch):
    seen = []
    head = lora_model.get_output_embeddings()
    h = head.register_forward_hook(lambda _m, inputs, _o: seen.append(tuple(inputs[0].shape)))
    try:
        with torch.no_grad():
            tl = completion_token_losses(lora_model, **batch)
    finally:
        h.remove()
    n = int((batch["labels"][:, 1:] != -100).sum())
    assert tl.n_tokens == n and seen == [(n, head.in_features)]
    assert n < batch["labels"].numel() // 2   # the point: far fewer rows than B × T


def test_losses_match_full_logits(lora_model, batch):
    with torch.no_grad():
        logits = full_logits(lora_model, batch)
        tl = completion_token_losses(lora_model, **batch)
    ref = per_example_losses(logits, batch["labels"])
    got = tl.per_example_mean()
    assert got[3].item() == 0.0 and ref[3].item() == 0.0
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    ref_sum, ref_n = token_ce_sum(logits, batch["labels"])
    assert tl.n_tokens == ref_n
    torch.testing.assert_close(tl.total(), ref_sum, rtol=1e-5, atol=1e-5)
    # eval: float64 means, compared on the rows that have completion tokens (metrics gives NaN otherwise)
    ev = metrics.completion_losses(logits, batch["labels"])
    rows = [0, 1, 2, 4]
    torch.testing.assert_close(tl.per_example_mean(torch.float64)[rows], ev[rows], rtol=1e-5, atol=1e-6)


def test_training_gradients_match_full_logits(lora_model, batch):
    named = [(n, p) for n, p in lora_model.named_parameters() if p.requires_grad]
    weights = [p for _, p in named]
    ref_sum, n = token_ce_sum(full_logits(lora_model, batch), batch["labels"])
    ref = torch.autograd.grad(ref_sum / n, weights)
    got = torch.autograd.grad(completion_token_losses(lora_model, **batch).total() / n, weights)
    for (name, _), a, b in zip(named, got, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def _captured(model, params, b, full: bool):
    grads = {}
    with capture(model, params, lambda i, g: grads.__setitem__(i, g.clone())) as box:
        if full:   # the previous path: full logits, then the per-example means
            box.clear()
            with torch.enable_grad():
                losses = per_example_losses(full_logits(model, b), b["labels"])
                torch.autograd.grad(losses.sum(), box[0])
        else:
            forward_backward(model, b, box)
    return grads


def test_per_example_gradients_and_features_match_full_logits(lora_model, batch):
    params = lora_params(lora_model)
    got, ref = _captured(lora_model, params, batch, False), _captured(lora_model, params, batch, True)
    assert sorted(got) == sorted(ref) == list(range(len(params)))
    for i in ref:
        assert ref[i].abs().sum() > 0
        torch.testing.assert_close(got[i], ref[i], rtol=1e-4, atol=1e-7)
        assert got[i][3].abs().max().item() == 0.0   # the row without completion tokens has no gradient
    sketch = CountSketch([p.numel for p in params], 256, seed=3, device="cpu")
    feats = FeatureEngine(lora_model, params, GradTransform("sgd", params), sketch).features(batch)
    assert feats.ok.tolist() == [True, True, True, False, True]
    # the same sketch applied to the full-logits gradients, then L2-normalised
    out = sketch.new_output(batch["labels"].shape[0])
    for i, g in ref.items():
        sketch.add(out, i, g.reshape(g.shape[0], -1))
    want = out / out.norm(dim=1, keepdim=True)
    torch.testing.assert_close(feats.vectors[[0, 1, 2, 4]], want[[0, 1, 2, 4]], rtol=1e-4, atol=1e-6)


def test_models_that_ignore_the_mask_still_work(lora_model, batch):
    class FullLogitsOnly(torch.nn.Module):   # a forward without logits_to_keep support: full [B, T, V]
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, logits_to_keep=None, **kwargs):
            return self.inner(**kwargs)

    with torch.no_grad():
        got = completion_token_losses(FullLogitsOnly(lora_model), **batch).per_example_mean()
        ref = per_example_losses(full_logits(lora_model, batch), batch["labels"])
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_hidden_state_embeddings_skip_the_head_and_match_a_full_forward(lora_model, encoded):
    from lessdb.featurize.embeddings import hidden_state_embeddings

    head = lora_model.get_output_embeddings()
    seen = []
    h = head.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].shape[1]))
    try:
        got = hidden_state_embeddings(lora_model, encoded, 0, "mean", batch_size=2)
    finally:
        h.remove()
    assert seen and all(t == 1 for t in seen)   # the head saw one position per row, not the whole sequence
    with torch.no_grad():
        for row, e in zip(got, encoded):
            b = collate([e], 0)
            hs = lora_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                            output_hidden_states=True).hidden_states[-1][0]
            np.testing.assert_allclose(row, hs.mean(dim=0).numpy(), rtol=1e-5, atol=1e-6)


def test_batches_by_length_respect_count_and_token_budget():
    from lessdb.models.batching import batches_by_length, token_budget

    lengths = [10, 20, 200, 250, 256, 256, 256, 256, 256, 900]
    items = list(range(len(lengths)))
    got = batches_by_length(items, lengths, 8, 1024)
    assert [i for b in got for i in b] == items                       # every item once, order kept
    for b in got:
        assert len(b) <= 8 and (len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 1024)
    assert got[-1] == [9]                                             # longer than the budget: alone
    assert batches_by_length(items, lengths, 4, None) == [items[0:4], items[4:8], items[8:10]]
    assert token_budget("cpu") == 512 and token_budget("cuda:0") is None
