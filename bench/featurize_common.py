"""Shared by bench/featurize_speed.py and bench/featurize_fidelity.py: the real SmolLM2-135M with LoRA r=128 on
q/k/v/o (P = 14,745,600), real ShareGPT conversations truncated to 256 tokens, a warmed Adam state, exact
(unsketched) gradient vectors and the sketch/score helpers. Not a script."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from lessdb import Workspace
from lessdb.featurize.adam import AdamState, GradTransform
from lessdb.featurize.engine import FeatureEngine
from lessdb.featurize.sketch import IdentitySketch
from lessdb.featurize.per_example_grads import lora_params, per_example_losses
from lessdb.models.tokenization import collate, encode_conversation, pad_token_id

REPO = Path(__file__).resolve().parents[1]

D = 8192


def log(*a):
    print(*a, flush=True)


def load(ws_path: Path):
    from lessdb.models.loading import load_base_model

    ws = Workspace.init(ws_path) if not (ws_path / "lessdb.duckdb").exists() else Workspace.open(ws_path)
    loaded = load_base_model(ws, "smollm2-135m", device="cpu")
    return ws, loaded


def sharegpt_examples(ws, tokenizer, n: int, max_len: int = 256):
    from lessdb.ingest import ingest_builtin
    from lessdb.storage.candidates import read_candidates, select_candidate_ids

    if not select_candidate_ids(ws, "bench"):
        ingest_builtin(ws, "sharegpt", pool="bench", limit=max(400, 2 * n), progress=False)
    ids = select_candidate_ids(ws, "bench")
    table = read_candidates(ws, ids, pool="bench", columns=["id", "messages"])
    out = []
    for cid, msgs in zip(table.column("id").to_pylist(), table.column("messages").to_pylist()):
        enc = encode_conversation(tokenizer, msgs, max_len)
        if sum(1 for x in enc.labels[1:] if x != -100) >= 8:
            out.append((cid, enc))
        if len(out) >= n:
            break
    return out


def lora_model(base_model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(base_model, LoraConfig(r=128, lora_alpha=512, lora_dropout=0.1,
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))


def warm_adam_state(model, examples, pad, steps: int = 2, batch: int = 4) -> AdamState:
    """A few real AdamW steps so B ≠ 0 and m, v are real moments (as after a warmup epoch)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW([p for _, p in params], lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    model.train()
    for s in range(steps):
        b = collate([e for _, e in examples[s * batch:(s + 1) * batch]], pad)
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        per_example_losses(logits, b["labels"]).mean().backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    st = opt.state
    return AdamState({n: st[p]["exp_avg"].clone() for n, p in params}, {n: st[p]["exp_avg_sq"].clone() for n, p in params},
                     steps, 0.9, 0.999, 1e-8)


def batches(examples, bs):
    ex = sorted(examples, key=lambda p: (len(p[1].input_ids), p[0]))
    return [ex[i:i + bs] for i in range(0, len(ex), bs)]


def exact_batches(model, params, items, pad, kind, state=None, bs=4):
    """(chunk of (id, encoded), [len(chunk), P] exact L2-normalised vectors) per batch, in batches() order."""
    engine = FeatureEngine(model, params, GradTransform(kind, params, state, True), IdentitySketch([p.numel for p in params]))
    for chunk in batches(items, bs):
        f = engine.features(collate([e for _, e in chunk], pad))
        assert bool(f.ok.all())
        yield chunk, f.vectors


def exact_vectors(model, params, items, pad, kind, state=None, bs=4):
    out = list(exact_batches(model, params, items, pad, kind, state, bs))
    ids = [i for chunk, _ in out for i, _ in chunk]
    vecs = torch.cat([v for _, v in out])
    order = {i: k for k, i in enumerate(ids)}
    return ids, vecs, order


def sketch_all(sk, X, sizes):
    out = sk.new_output(X.shape[0])
    start = 0
    for k, n in enumerate(sizes):
        sk.add(out, k, X[:, start:start + n].clone())
        start += n
    return out


def spearman(a, b):
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def scores(vecs, n_val):
    vecs = vecs / vecs.norm(dim=1, keepdim=True)
    gbar = vecs[:n_val].mean(0)
    return (vecs[n_val:] @ gbar / gbar.norm()).numpy()


def add_common_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--workspace", type=Path, default=Path("/tmp/lessdb-bench-ws"))
    ap.add_argument("--threads", type=int, default=None,
                    help="default: torch's (the fidelity replicates: 2, as they share the machine; not timed)")
    ap.add_argument("--quick", action="store_true", help="fewer examples (fidelity: no dense sketch, few seeds)")


def setup(args, n_examples: int):
    """The workspace, the model with LoRA, `n_examples` + 8 ShareGPT examples and a warmed Adam state."""
    t0 = time.perf_counter()
    ws, loaded = load(args.workspace)
    tok, pad = loaded.tokenizer, pad_token_id(loaded.tokenizer)
    model = lora_model(loaded.model)
    examples = sharegpt_examples(ws, tok, n_examples + 8)
    state = warm_adam_state(model, examples[-8:], pad)
    params = lora_params(model)
    P = sum(p.numel for p in params)
    lens = [len(e.input_ids) for _, e in examples]
    log(f"model {loaded.name} sha {loaded.sha256[:12]}; LoRA matrices {len(params)}, P = {P:,}; "
        f"{len(examples)} ShareGPT examples, tokens mean {np.mean(lens):.0f} max {max(lens)}; setup {time.perf_counter() - t0:.0f}s")
    return ws, loaded, model, examples, state, params
