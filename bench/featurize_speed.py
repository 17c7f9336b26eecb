"""Featurization speed (issue 4): (a) forward+backward only, (b) lessdb's default path, (c) the reference
approach, on the real SmolLM2-135M with LoRA r=128 on q/k/v/o (P = 14,745,600), d = 8192, real ShareGPT
conversations truncated to 256 tokens. The fidelity of the sketches: bench/featurize_fidelity.py (and
`python -m bench.featurize` runs both, as it always did).

    python -m bench.featurize_speed [--workspace /tmp/lessdb-bench-ws] [--n-speed 32] [--n-reference 4] [--quick]

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

Timings depend on the machine's load (2 shared vCPUs): the load average is printed at start and end.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from bench.featurize_common import D, add_common_arguments, batches, log, setup
from lessdb.featurize.adam import GradTransform, adam_direction
from lessdb.featurize.engine import FeatureEngine
from lessdb.featurize.per_example_grads import per_example_losses
from lessdb.featurize.sketch import CountSketch
from lessdb.storage import features as fstore
from lessdb.models.tokenization import collate, pad_token_id


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


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--n-speed", type=int, default=32)
    ap.add_argument("--n-reference", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)


def run_speed(args, ws, model, examples, state, params, pad) -> None:
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(ap)
    add_arguments(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads or torch.get_num_threads())
    if args.quick:
        args.n_speed = 16
    log(f"load average at start: {os.getloadavg()}; torch threads {torch.get_num_threads()}")
    t0 = time.perf_counter()
    ws, loaded, model, examples, state, params = setup(args, args.n_speed)
    run_speed(args, ws, model, examples, state, params, pad_token_id(loaded.tokenizer))
    log(f"load average at end: {os.getloadavg()}; total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
