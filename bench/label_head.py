"""LM head only at label positions (issue 14 item 0 / issue 17): before/after, side by side in one run, on the real
SmolLM2-135M (vocabulary 49,152 × 576) with the quickstart's LoRA (cpu-small: r=8 on q/k/v/o).

    nice -n 15 python -m bench.label_head [--workspace /tmp/lessdb-bench-ws] [--n 8] [--reps 2] [--json out.json]

Three kinds of examples, `--n` of each, batches of `--batch-size`:
  short: BBH items cut BIG-bench-like: the question's last ~250 characters, the final answer sentence as the
         completion (~50 tokens, a few labelled);
  bbh-256: BBH items in the quickstart's validation window (last 256 tokens): long prompt, few completion tokens;
  sharegpt-256: ShareGPT conversations (the quickstart's pool) truncated to 256 tokens: many completion tokens.
Three computations, each timed with the full-logits path ("before": logits at every position, then the loss's
mask) and the label-position path ("after": lessdb.models.completion_loss), alternating, best of `--reps`, as wall
time and as this process's CPU time (steadier on a shared machine):
  featurize: FeatureEngine (per-example gradients, SGD transform, CountSketch d=8192) — also the validation
             gradients of `select`;
  train: one forward+backward of the summed token CE (what warmup/train run per micro-batch);
  eval: the no-grad completion loss (eval's target loss).
The features of both paths are compared (max |difference| of the L2-normalised vectors), and the peak RSS of each
timed run is recorded (whole process: the model's ~0.55 GB is in every figure).
Timings depend on the machine's load (2 shared vCPUs): the load average is printed at start and end.
"""
from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from pathlib import Path

import torch

import lessdb.featurize.per_example_grads as peg
from bench.common import loadavg, timed
from lessdb import Workspace
from lessdb.models.completion_loss import TokenLosses, completion_token_losses, next_token_mask


def full_logits_token_losses(model, input_ids, attention_mask, labels, **kw) -> TokenLosses:
    """The path before: logits at every position (B × T × V), then the labelled ones."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kw).logits
    keep = next_token_mask(labels)
    targets = labels[:, 1:][keep[:, :-1]]
    ce = torch.nn.functional.cross_entropy(logits[keep].float(), targets, reduction="none")
    return TokenLosses(ce, keep.nonzero()[:, 0], int(labels.shape[0]))


@contextmanager
def path(kind: str):
    """Make featurize's forward_backward use the given loss path."""
    saved = peg.completion_token_losses
    peg.completion_token_losses = full_logits_token_losses if kind == "before" else completion_token_losses
    try:
        yield peg.completion_token_losses
    finally:
        peg.completion_token_losses = saved


def examples(ws, tokenizer, n: int):
    from lessdb.ingest import ingest_builtin
    from lessdb.storage.candidates import read_candidates, select_candidate_ids
    from lessdb.tasks.catalog import builtin_task
    from lessdb.models.tokenization import encode_window

    bbh = [ex.messages for sub in builtin_task("bbh").subtasks.values() for ex in sub]
    step = max(1, len(bbh) // n)
    bbh = bbh[::step][:n]
    if not select_candidate_ids(ws, "bench-head"):
        ingest_builtin(ws, "sharegpt", pool="bench-head", limit=max(100, 4 * n), progress=False)
    ids = select_candidate_ids(ws, "bench-head")
    table = read_candidates(ws, ids, pool="bench-head", columns=["id", "messages"])
    share = []
    for msgs in table.column("messages").to_pylist():
        enc = encode_window(tokenizer, msgs, 256)
        if enc.completion_tokens >= 8 and len(enc.input_ids) == 256:
            share.append(enc)
        if len(share) >= n:
            break
    return {"short": [encode_window(tokenizer, _short(m), 256) for m in bbh],
            "bbh-256": [encode_window(tokenizer, m, 256, "left") for m in bbh],
            "sharegpt-256": share}


def _short(messages: list[dict]) -> list[dict]:
    """A BBH item cut to a BIG-bench-like short example: the question's last ~250 characters, and only the final
    answer sentence as the completion (~50 tokens, a few of them labelled)."""
    question, answer = messages[0]["content"], messages[-1]["content"]
    final = answer[answer.rfind("So the answer is"):] if "So the answer is" in answer else answer[-40:]
    return [{"role": "user", "content": question[-250:]}, {"role": "assistant", "content": final}]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", type=Path, default=Path("/tmp/lessdb-bench-ws"))
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from lessdb.featurize.adam import GradTransform
    from lessdb.featurize.engine import FeatureEngine
    from lessdb.featurize.per_example_grads import lora_params
    from lessdb.featurize.sketch import CountSketch
    from lessdb.models.loading import load_base_model
    from lessdb.phase_meter import PhaseMeter
    from lessdb.runs.config import LoraSettings
    from lessdb.models.tokenization import collate, pad_token_id
    from lessdb.runs.trainer import build_lora_model

    print(f"load average at start: {loadavg()}; torch threads {torch.get_num_threads()}", flush=True)
    ws = Workspace.init(args.workspace)
    base = load_base_model(ws, "smollm2-135m", device="cpu")
    model = build_lora_model(base.model, LoraSettings(r=8, alpha=32), seed=0)
    for name, p in model.named_parameters():
        if "lora_B" in name:   # as after a warmup: B != 0, so every LoRA matrix has a gradient
            torch.nn.init.normal_(p, std=0.02)
    model.eval()
    params = lora_params(model)
    engine = FeatureEngine(model, params, GradTransform("sgd", params),
                           CountSketch([p.numel for p in params], 8192, seed=0, device="cpu"))
    pad = pad_token_id(base.tokenizer)
    sets = examples(ws, base.tokenizer, args.n)
    meter = PhaseMeter()   # peak RSS of each timed run (kernel high-water mark, reset per run)
    rows = []
    for kind, encs in sets.items():
        batches = [collate(encs[i:i + args.batch_size], pad) for i in range(0, len(encs), args.batch_size)]
        tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        labelled = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
        feats = {}
        for comp in ("featurize", "train", "eval"):
            times, cpus, peaks = {}, {}, {}
            for which in ("before", "after") * max(1, args.reps):
                with path(which) as losses_fn:
                    if comp == "featurize":
                        def run():
                            feats[which] = torch.cat([engine.features(b).vectors for b in batches])
                    elif comp == "train":
                        def run():
                            for b in batches:
                                losses_fn(model, **b).total().backward()
                            model.zero_grad(set_to_none=True)
                    else:
                        def run():
                            with torch.no_grad():
                                for b in batches:
                                    losses_fn(model, **b).per_example_mean(torch.float64)
                    with meter.phase(which):
                        wall, cpu = timed(run)
                times[which] = min(times.get(which, float("inf")), wall)
                cpus[which] = min(cpus.get(which, float("inf")), cpu)
                peaks[which] = max(peaks.get(which, 0), meter.phases[which]["peak_rss_bytes"])
            row = {"examples": kind, "computation": comp, "n": len(encs), "tokens": tokens,
                   "labelled_tokens": labelled, "before_s": round(times["before"], 3),
                   "after_s": round(times["after"], 3), "speedup": round(times["before"] / times["after"], 3),
                   "before_cpu_s": round(cpus["before"], 3), "after_cpu_s": round(cpus["after"], 3),
                   "cpu_speedup": round(cpus["before"] / cpus["after"], 3),
                   "before_peak_rss_gib": round(peaks["before"] / 2**30, 2),
                   "after_peak_rss_gib": round(peaks["after"] / 2**30, 2)}
            if comp == "featurize":
                row["max_abs_feature_diff"] = float((feats["before"] - feats["after"]).abs().max())
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\nload average at end: {loadavg()}")
    print(f"{'examples':<14}{'computation':<12}{'tokens':>8}{'labelled':>9}{'wall before/after':>19}{'speedup':>9}"
          f"{'CPU s before/after':>20}{'speedup':>9}{'peak GB before/after':>22}")
    for r in rows:
        print(f"{r['examples']:<14}{r['computation']:<12}{r['tokens']:>8}{r['labelled_tokens']:>9}"
              f"{r['before_s']:>11.2f}/{r['after_s']:<7.2f}{r['speedup']:>8.2f}x"
              f"{r['before_cpu_s']:>12.2f}/{r['after_cpu_s']:<7.2f}{r['cpu_speedup']:>8.2f}x"
              f"{r['before_peak_rss_gib']:>14.2f}/{r['after_peak_rss_gib']:<7.2f}"
              + (f"  max|Δfeature| {r['max_abs_feature_diff']:.1e}" if "max_abs_feature_diff" in r else ""))
    if args.json:
        args.json.write_text(json.dumps({"load_start_end": loadavg(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
