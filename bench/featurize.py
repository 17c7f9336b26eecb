"""Featurization benchmark (issue 4): speed of (a) forward+backward only, (b) lessdb's default path, (c) the
reference approach, and the fidelity of each sketch, on the real SmolLM2-135M with LoRA r=128 on q/k/v/o
(P = 14,745,600), d = 8192, real ShareGPT conversations truncated to 256 tokens.

    python bench/featurize.py [--workspace /tmp/lessdb-bench-ws] [--n-speed 32] [--n-fidelity 64] [--quick]

(a) floor: batched forward + ordinary backward of the per-example completion-mean losses (the LoRA weight
    gradients summed over the batch, as training computes them) — nothing per example.
(b) lessdb: `FeatureEngine` (per-example gradients from hooks, fused Adam Γ, CountSketch d=8192, L2 norm) +
    the LanceDB insert of the vectors, same batches.
(c) reference (LESS + TRAK on CPU): one example at a time (forward, backward, flatten, Adam Γ on the flat
    vector), then TRAK's CPU `BasicProjector`, which regenerates its Gaussian matrix block by block (128
    columns per block) on every project() call, per batch of ≤ 16 gradients. Regenerating the whole
    14.7M × 8192 matrix takes tens of minutes here, so that part is EXTRAPOLATED: one sub-block of R rows × 128
    columns is generated + multiplied with 16 gradients, timed, and scaled by (P/R)·(8192/128) per batch of 16.
    The batch-1 forward/backward/Adam part is measured on real examples.
Fidelity: exact (unsketched) Adam Γ of N candidates and plain gradients of the 3 examples of the BBH subtask
`boolean_expressions` (max 1024 tokens: its 2-shot prompts exceed 256); exact score = cos(mean of the
normalised validation gradients, Γ); sketched score the same in sketch space. Spearman(exact, sketched) per
sketch and d ∈ {1024, 2048, 4096, 8192} (dense-rademacher: one seed, d' < 8192 are the first d' columns of the
same matrix; sparse sketches: mean over 3 seeds).

Timings depend on the machine's load (2 shared vCPUs): the load average is printed at start and end.
"""
from __future__ import annotations

import sys
from pathlib import Path

# bench/ holds a select.py that would shadow the standard library's `select` module: run from the repo root
REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)

import argparse  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lessdb import Workspace  # noqa: E402
from lessdb.featurize.adam import AdamState, GradTransform, adam_direction  # noqa: E402
from lessdb.featurize.engine import FeatureEngine  # noqa: E402
from lessdb.featurize.per_example_grads import lora_params, per_example_losses  # noqa: E402
from lessdb.featurize.sketch import CountSketch, DenseRademacher, IdentitySketch  # noqa: E402
from lessdb.storage import features as fstore  # noqa: E402
from lessdb.tokenization import collate, encode_conversation, pad_token_id  # noqa: E402

D = 8192


def log(*a):
    print(*a, flush=True)


def load(ws_path: Path):
    from lessdb.models import load_base_model

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


def bench_floor(model, examples, pad, bs):
    for n, p in model.named_parameters():
        p.requires_grad_(".lora_" in n)
    bl = batches(examples, bs)
    run = lambda b: per_example_losses(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                                       b["labels"]).sum().backward()
    run(collate([e for _, e in bl[0]], pad))  # warm-up
    model.zero_grad(set_to_none=True)
    t = time.perf_counter()
    for chunk in bl:
        run(collate([e for _, e in chunk], pad))
        model.zero_grad(set_to_none=True)
    return len(examples) / (time.perf_counter() - t)


def bench_lessdb(ws, model, params, state, examples, pad, bs):
    transform = GradTransform("adam", params, state, True)
    sketch = CountSketch([p.numel for p in params], D, 0)
    engine = FeatureEngine(model, params, transform, sketch)
    info = fstore.FeatureSetInfo("bench", "bench", "adam", True, "countsketch", 0, 1, D, "float32", "float32",
                                 sketch.n_params, "features_bench_speed", 256, "", [], "", {})
    if ws.lance.has_table(info.lance_table):
        ws.lance.db.drop_table(info.lance_table)
    fstore.ensure_feature_table(ws, info)
    bl = batches(examples, bs)
    engine.features(collate([e for _, e in bl[0]], pad))  # warm-up (also builds the sketch hashes)
    t = time.perf_counter()
    t_store = 0.0
    for chunk in bl:
        out = engine.features(collate([e for _, e in chunk], pad))
        t0 = time.perf_counter()
        fstore.write_features(ws, info, 1, "candidate", [i for i, _ in chunk], out.vectors.numpy())
        t_store += time.perf_counter() - t0
    dt = time.perf_counter() - t
    return len(examples) / dt, t_store / dt


def bench_reference(model, params, state, examples, pad, n_examples: int, sub_rows: int):
    """Batch-1 forward/backward + flatten + Adam (measured), + TRAK CPU BasicProjector (extrapolated)."""
    named = dict(model.named_parameters())
    weights = [named[p.name] for p in params]
    for w in weights:
        w.requires_grad_(True)
    m = torch.cat([state.exp_avg[p.name].reshape(-1) for p in params])
    v = torch.cat([state.exp_avg_sq[p.name].reshape(-1) for p in params])
    grads = []
    t = time.perf_counter()
    for _, e in examples[:n_examples]:
        b = collate([e], pad)
        loss = per_example_losses(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                                  b["labels"])[0]
        g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(loss, weights)])
        grads.append(adam_direction(g, m, v, state.step, 0.9, 0.999, 1e-8, False))
    per_example_fb = (time.perf_counter() - t) / n_examples
    P = m.numel()
    # TRAK BasicProjector on CPU: Gaussian blocks of P × 128 regenerated on each project() call
    x = torch.stack([g[:sub_rows] for g in (grads * 16)[:16]])
    gen = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    block = torch.empty(sub_rows, 128)
    block.normal_(generator=gen)
    t_rng = time.perf_counter() - t
    t = time.perf_counter()
    x @ block
    t_gemm = time.perf_counter() - t
    scale = (P / sub_rows) * (D / 128)
    per_batch16 = (t_rng + t_gemm) * scale
    per_example = per_example_fb + per_batch16 / 16
    return 1.0 / per_example, per_example_fb, t_rng * scale, t_gemm * scale


def exact_vectors(model, params, items, pad, kind, state=None, bs=4):
    engine = FeatureEngine(model, params, GradTransform(kind, params, state, True), IdentitySketch([p.numel for p in params]))
    out = []
    for chunk in batches(items, bs):
        f = engine.features(collate([e for _, e in chunk], pad))
        assert bool(f.ok.all())
        out.append((chunk, f.vectors))
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", type=Path, default=Path("/tmp/lessdb-bench-ws"))
    ap.add_argument("--n-speed", type=int, default=32)
    ap.add_argument("--n-reference", type=int, default=4)
    ap.add_argument("--n-fidelity", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--quick", action="store_true", help="fewer examples, no dense fidelity")
    ap.add_argument("--skip-fidelity", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.n_speed, args.n_fidelity = 16, 24
    log(f"load average at start: {os.getloadavg()}; torch threads {torch.get_num_threads()}")
    t0 = time.perf_counter()
    ws, loaded = load(args.workspace)
    tok, pad = loaded.tokenizer, pad_token_id(loaded.tokenizer)
    model = lora_model(loaded.model)
    examples = sharegpt_examples(ws, tok, max(args.n_speed, args.n_fidelity) + 8)
    state = warm_adam_state(model, examples[-8:], pad)
    params = lora_params(model)
    P = sum(p.numel for p in params)
    lens = [len(e.input_ids) for _, e in examples]
    log(f"model {loaded.name} sha {loaded.sha256[:12]}; LoRA matrices {len(params)}, P = {P:,}; "
        f"{len(examples)} ShareGPT examples, tokens mean {np.mean(lens):.0f} max {max(lens)}; setup {time.perf_counter() - t0:.0f}s")

    speed = examples[:args.n_speed]
    a = bench_floor(model, speed, pad, args.batch_size)
    log(f"(a) forward+backward only, batch {args.batch_size}: {a:.3f} examples/s")
    b, store_frac = bench_lessdb(ws, model, params, state, speed, pad, args.batch_size)
    log(f"(b) lessdb default (hooks + fused Adam + countsketch d={D} + LanceDB write): {b:.3f} examples/s "
        f"(storage {store_frac:.1%} of its time)")
    c, fb, rng_s, gemm_s = bench_reference(model, params, state, speed, pad, args.n_reference, sub_rows=1 << 20)
    log(f"(c) reference: batch-1 fwd+bwd+Adam {fb:.2f} s/example (measured on {args.n_reference}); TRAK CPU projector "
        f"per batch of 16 EXTRAPOLATED from a 2^20-row × 128-column block: RNG {rng_s:.0f} s + GEMM {gemm_s:.0f} s "
        f"→ {c:.5f} examples/s")
    log(f"(b)/(a) = {b / a:.1%}   (b)/(c) = {b / c:.0f}x")

    if not args.skip_fidelity:
        from lessdb.tasks import load_task

        val = load_task(ws, "bbh").subtasks["boolean_expressions"]
        val_items = [(ex.example_id, encode_conversation(tok, ex.messages, 1024)) for ex in val]
        t = time.perf_counter()
        cands = examples[:args.n_fidelity]
        _, V, _ = exact_vectors(model, params, val_items, pad, "sgd")
        _, C, _ = exact_vectors(model, params, cands, pad, "adam", state)
        X = torch.cat([V, C])
        del V, C
        exact = scores(X, len(val_items))
        log(f"exact vectors for {len(val_items)} validation + {len(cands)} candidates: {time.perf_counter() - t:.0f}s; "
            f"exact score range {exact.min():.4f}..{exact.max():.4f}")
        sizes = [p.numel for p in params]
        dims = [1024, 2048, 4096, 8192]
        results = {}
        # replicates per d: the 8192 dense columns split into 8192/d disjoint blocks, each an independent
        # d-column Rademacher sketch; the sparse sketches get the same number of seeds (at least 3)
        reps = {d: max(dims) // d for d in dims}
        for kind, nnz in (("countsketch", 1), ("sparse-sign", 4)):
            for d in dims:
                rs = [spearman(exact, scores(sketch_all(CountSketch(sizes, d, seed, nnz=nnz), X, sizes), len(val_items)))
                      for seed in range(max(3, reps[d]))]
                results[(kind, d)] = (float(np.mean(rs)), float(np.std(rs)), len(rs))
        if not args.quick:
            t = time.perf_counter()
            full = sketch_all(DenseRademacher(sizes, max(dims), 0, cache_bytes=0), X, sizes)
            for d in dims:
                rs = [spearman(exact, scores(full[:, j * d:(j + 1) * d].clone(), len(val_items))) for j in range(reps[d])]
                results[("dense-rademacher", d)] = (float(np.mean(rs)), float(np.std(rs)), len(rs))
            log(f"dense-rademacher sketch of {X.shape[0]} vectors at d={max(dims)}: {time.perf_counter() - t:.0f}s")
        log("fidelity: Spearman(exact, sketched scores), BBH boolean_expressions, "
            f"{len(cands)} ShareGPT candidates")
        log("mean ± std over replicates (n)")
        log("sketch            " + "".join(f"d={d:<20}" for d in dims))
        for kind in ("dense-rademacher", "countsketch", "sparse-sign"):
            if (kind, dims[0]) in results:
                log(f"{kind:<18}" + "".join(f"{results[(kind, d)][0]:.3f} ± {results[(kind, d)][1]:.3f} ({results[(kind, d)][2]})    "
                                            for d in dims))
    log(f"load average at end: {os.getloadavg()}; total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
