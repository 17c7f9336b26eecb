"""Featurization math against independent computations: per-example LoRA gradients vs a naive
one-example-at-a-time autograd loop, Adam's Γ vs the paper's formula written out in numpy, sketches vs
explicit matrices and Johnson–Lindenstrauss error bounds (tiny model, real peft)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model

from lessdb.featurize.adam import AdamSlice, AdamState, GradTransform, adam_direction
from lessdb.featurize.engine import FeatureEngine
from lessdb.featurize.per_example_grads import capture, forward_backward, lora_params, per_example_losses
from lessdb.featurize.sketch import (CountSketch, DenseRademacher, IdentitySketch, rademacher_block, splitmix64,
                                     splitmix64_int)
from lessdb.models.tiny import tiny_llama, tiny_tokenizer
from lessdb.models.tokenization import collate, encode_conversation

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TEXTS = [("hi there", "hello you"), ("what is two plus two? " * 3, "four"), ("tell me a story", "once upon a time " * 4),
         ("x", "y z"), ("a longer prompt about lance and duckdb " * 2, "ok")]


@pytest.fixture(scope="module")
def lora_model():
    torch.manual_seed(0)
    model = get_peft_model(tiny_llama(0), LoraConfig(r=4, lora_alpha=16, lora_dropout=0.1,
                                                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero; make every gradient path non-trivial
            torch.nn.init.normal_(p, std=0.1)
    model.eval()
    return model


@pytest.fixture(scope="module")
def encoded():
    tok = tiny_tokenizer()
    enc = [encode_conversation(tok, [{"role": "user", "content": u}, {"role": "assistant", "content": a}], 128)
           for u, a in TEXTS]
    assert all(e.completion_tokens > 0 for e in enc)
    return enc


def naive_grads(model, params, enc) -> list[list[torch.Tensor]]:
    """One example at a time, ordinary autograd on the LoRA weights, mean CE over its completion tokens."""
    named = dict(model.named_parameters())
    weights = [named[p.name] for p in params]
    out = []
    for e in enc:
        batch = collate([e], 0)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        shift = logits[0, :-1]
        labels = batch["labels"][0, 1:]
        keep = labels != -100
        loss = torch.nn.functional.cross_entropy(shift[keep], labels[keep])  # independent of per_example_losses
        out.append([g.detach() for g in torch.autograd.grad(loss, weights)])
    return out


def batched_grads(model, params, enc) -> dict[int, torch.Tensor]:
    got = {}
    with capture(model, params, lambda i, g: got.__setitem__(i, g.clone())) as box:
        forward_backward(model, collate(enc, 0), box)
    return got


def test_per_example_grads_equal_naive_loop(lora_model, encoded):
    params = lora_params(lora_model)
    assert len(params) == 16 and params[0].name.endswith("q_proj.lora_A.default.weight")
    got = batched_grads(lora_model, params, encoded)
    want = naive_grads(lora_model, params, encoded)
    for b in range(len(encoded)):
        for p in params:
            torch.testing.assert_close(got[p.index][b], want[b][p.index], rtol=1e-4, atol=1e-6)
    # LoRA weights are trainable again afterwards (capture froze them only during the pass)
    assert all(w.requires_grad for n, w in lora_model.named_parameters() if "lora_" in n)


def test_batch_composition_and_padding_change_nothing(lora_model, encoded):
    params = lora_params(lora_model)
    full = batched_grads(lora_model, params, encoded)
    pair = batched_grads(lora_model, params, [encoded[3], encoded[1]])   # different padding and neighbours
    for p in params:
        torch.testing.assert_close(pair[p.index][0], full[p.index][3], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(pair[p.index][1], full[p.index][1], rtol=1e-4, atol=1e-6)


def test_per_example_loss_is_mean_over_completion_tokens():
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, 3, 4, -100, -100], [-100, -100, -100, -100, 6]])
    losses = per_example_losses(logits, labels)
    ce = lambda t, y: -torch.log_softmax(logits[t[0], t[1]], -1)[y]
    assert torch.allclose(losses[0], (ce((0, 0), 3) + ce((0, 1), 4)) / 2)
    assert torch.allclose(losses[1], ce((1, 3), 6))


def test_training_mode_is_refused(lora_model):
    lora_model.train()
    try:
        with pytest.raises(Exception, match="eval mode"):
            with capture(lora_model, lora_params(lora_model), lambda i, g: None):
                pass
    finally:
        lora_model.eval()


def numpy_adam(g, m, v, t, b1, b2, eps, bias_correction):
    g, m, v = (np.asarray(x, dtype=np.float64) for x in (g, m, v))
    m1 = b1 * m + (1 - b1) * g
    v1 = b2 * v + (1 - b2) * g ** 2
    if bias_correction:
        m1, v1 = m1 / (1 - b1 ** t), v1 / (1 - b2 ** t)
    return m1 / np.sqrt(v1 + eps)


@pytest.mark.parametrize("bias_correction", [True, False])
def test_adam_direction_matches_paper_formula(bias_correction):
    rng = np.random.default_rng(0)
    g, m = rng.normal(size=(3, 50)) * 1e-3, rng.normal(size=50) * 1e-4
    v = rng.random(50) * 1e-7
    want = numpy_adam(g, m, v, 7, 0.9, 0.999, 1e-8, bias_correction)
    direct = adam_direction(torch.tensor(g), torch.tensor(m), torch.tensor(v), 7, 0.9, 0.999, 1e-8, bias_correction)
    np.testing.assert_allclose(direct.numpy(), want, rtol=1e-10)
    folded = AdamSlice.build(torch.tensor(m), torch.tensor(v), 7, 0.9, 0.999, 1e-8, bias_correction, "cpu")
    np.testing.assert_allclose(folded.apply(torch.tensor(g, dtype=torch.float32)).numpy(), want, rtol=2e-5)
    if bias_correction:  # bias correction matters at small t: the variants really differ
        other = numpy_adam(g, m, v, 7, 0.9, 0.999, 1e-8, False)
        assert np.abs(other - want).max() > 1e-3 * np.abs(want).max()


def test_engine_gamma_equals_naive_adam_loop(lora_model, encoded):
    """Through the real engine (hooks → fused Adam → identity sketch → normalisation) vs naive grads + numpy."""
    params = lora_params(lora_model)
    rng = np.random.default_rng(1)
    m = {p.name: torch.tensor(rng.normal(size=p.shape) * 1e-3, dtype=torch.float32) for p in params}
    v = {p.name: torch.tensor(rng.random(p.shape) * 1e-6, dtype=torch.float32) for p in params}
    state = AdamState(m, v, step=5, beta1=0.9, beta2=0.999, eps=1e-8)
    want_g = naive_grads(lora_model, params, encoded)
    for kind in ("adam", "sgd", "sign"):
        transform = GradTransform(kind, params, state, bias_correction=True)
        engine = FeatureEngine(lora_model, params, transform, IdentitySketch([p.numel for p in params]))
        feats = engine.features(collate(encoded, 0))
        assert feats.ok.all()
        for b, grads in enumerate(want_g):
            flat = []
            for p, g in zip(params, grads):
                g = g.numpy().astype(np.float64)
                if kind == "adam":
                    flat.append(numpy_adam(g, m[p.name].numpy(), v[p.name].numpy(), 5, 0.9, 0.999, 1e-8, True).ravel())
                elif kind == "sgd":
                    flat.append(g.ravel())
                else:
                    flat.append(np.sign(g).ravel())
            flat = np.concatenate(flat)
            flat /= np.linalg.norm(flat)
            np.testing.assert_allclose(feats.vectors[b].numpy(), flat, atol=2e-5 if kind != "sign" else 1e-6)


def test_example_without_completion_is_flagged_not_nan(lora_model, encoded):
    params = lora_params(lora_model)
    tok = tiny_tokenizer()
    cut = encode_conversation(tok, [{"role": "user", "content": "p" * 200}, {"role": "assistant", "content": "a"}], 32)
    assert cut.completion_tokens == 0
    engine = FeatureEngine(lora_model, params, GradTransform("sgd", params), CountSketch([p.numel for p in params], 64, 0))
    feats = engine.features(collate([encoded[0], cut], 0))
    assert feats.ok.tolist() == [True, False]
    assert torch.isfinite(feats.vectors).all() and float(feats.vectors[1].abs().sum()) == 0.0


# -- sketches ------------------------------------------------------------------------------------------------
def test_splitmix_tensor_matches_python_ints():
    xs = [0, 1, 2, 12345, -7, 2 ** 62, -(2 ** 63)]
    got = splitmix64(torch.tensor(xs, dtype=torch.int64)).tolist()
    for x, y in zip(xs, got):
        assert y % (1 << 64) == splitmix64_int(x % (1 << 64))


def test_dense_rademacher_blocks_are_deterministic_and_consistent():
    full = rademacher_block(3, 1, 0, 100, 256)
    assert set(np.unique(full.numpy() * 16).tolist()) == {-1.0, 1.0}        # ±1/√256
    torch.testing.assert_close(rademacher_block(3, 1, 40, 25, 256), full[40:65], rtol=0, atol=0)
    torch.testing.assert_close(rademacher_block(3, 1, 0, 100, 64) / 2, full[:, :64], rtol=0, atol=0)  # nested d
    assert not torch.equal(rademacher_block(4, 1, 0, 100, 256), full)       # seed matters
    assert not torch.equal(rademacher_block(3, 2, 0, 100, 256), full)       # slice matters
    assert abs(float(full.mean())) < 0.01                                   # balanced signs


def test_slicewise_sketch_equals_explicit_matrix():
    sizes, d = [37, 100, 5], 64
    x = torch.randn(3, sum(sizes))
    for sk in (DenseRademacher(sizes, d, seed=9, block_bytes=4 * d * 16), CountSketch(sizes, d, 9),
               CountSketch(sizes, d, 9, nnz=4)):
        # explicit Π from the same definition, built independently of `add`
        rows = []
        for k, n in enumerate(sizes):
            if isinstance(sk, DenseRademacher):
                rows.append(rademacher_block(9, k, 0, n, d))
            else:
                buckets, signs = sk.slice_hash(k)
                block = torch.zeros(n, d)
                for j in range(sk.nnz):
                    block[torch.arange(n), torch.from_numpy(buckets[j])] += torch.from_numpy(signs[j]).float()
                rows.append(block / math.sqrt(sk.nnz))
        pi = torch.cat(rows)
        out, start = sk.new_output(3), 0
        for k, n in enumerate(sizes):
            sk.add(out, k, x[:, start:start + n].clone())
            start += n
        torch.testing.assert_close(out, x @ pi, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [lambda P, d: DenseRademacher([P], d, 1), lambda P, d: CountSketch([P], d, 1),
                                  lambda P, d: CountSketch([P], d, 1, nnz=4)])
def test_jl_inner_products_random_vectors(make):
    """Unit vectors with true cosines spread over [-1, 1]: sketched cosines within the JL error."""
    P, d = 4096, 1024
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, P, generator=g)
    x = torch.randn(40, P, generator=g) + torch.linspace(-2, 2, 40)[:, None] * base
    x = x / x.norm(dim=1, keepdim=True)
    sk = make(P, d)
    out = sk.new_output(40)
    sk.add(out, 0, x.clone())
    exact = x @ x.T
    est = out @ out.T
    err = (est - exact).abs()
    sigma = math.sqrt(2.0 / d)          # std of a sketched inner product of unit vectors (≤ this)
    assert float(err.max()) < 5 * sigma
    assert float(err.mean()) < 1.2 * sigma
    assert float(exact.min()) < -0.5 and float(exact.max()) > 0.99   # the test really spans the range


def test_jl_on_real_tiny_model_gradients(lora_model, encoded):
    params = lora_params(lora_model)
    sizes = [p.numel for p in params]
    exact = FeatureEngine(lora_model, params, GradTransform("sgd", params), IdentitySketch(sizes)).features(
        collate(encoded, 0)).vectors
    cos_exact = exact @ exact.T
    for sk in (DenseRademacher(sizes, 2048, 5), CountSketch(sizes, 2048, 5), CountSketch(sizes, 2048, 5, nnz=4)):
        feats = FeatureEngine(lora_model, params, GradTransform("sgd", params), sk).features(collate(encoded, 0))
        cos = feats.vectors @ feats.vectors.T
        assert float((cos - cos_exact).abs().max()) < 5 * math.sqrt(2.0 / 2048), sk.kind
