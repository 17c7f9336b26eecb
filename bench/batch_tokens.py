"""Benchmark (issue 17): what the padded-token cap of a gradient batch costs in time and saves in memory, on the
real SmolLM2-135M (LoRA r=8 on q/k/v/o, the `cpu-small` warmup's adapter) and real ShareGPT conversations
truncated to 256 tokens (the quickstart's shapes).

For each cap (default 1024, 512, 256 padded tokens) a fresh process runs
  (a) training micro-batches (train mode, LoRA dropout 0.1, loss backward: the warmup's inner loop), and
  (b) featurize batches (eval mode, per-example gradients → CountSketch d=8192: featurize and validation),
over the same examples grouped by `lessdb.models.batching.batches_by_length`, and reports the peak RSS above
the loaded model (VmHWM reset before the batches) and the time per example. The caps run one after another in
one invocation, so their ratios are side by side; on a loaded machine read the CPU-seconds column.

Run: python -m bench.batch_tokens [--workspace DIR] [--examples 32] [--caps 1024,512,256] [--threads 2]
(DIR keeps the converted model between runs; a fresh one converts the bundled GGUF once, ~15 s.)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from bench.common import loadavg, run_worker


def _examples(ws, n: int):
    from lessdb.ingest import ingest_builtin
    from lessdb.storage.candidates import read_candidates
    from lessdb.storage.meta_pools import list_pools

    if not any(p["pool"] == "bench-batch-tokens" for p in list_pools(ws)):
        ingest_builtin(ws, "sharegpt", pool="bench-batch-tokens", limit=n, progress=False)
    return read_candidates(ws, pool="bench-batch-tokens", columns=["messages"]).column("messages").to_pylist()[:n]


def measure(workspace: str, cap: int, n: int, threads: int) -> dict:
    """One cap, in this process: (a) training micro-batches, (b) featurize batches."""
    import torch

    from lessdb import Workspace
    from lessdb.models.completion_loss import completion_token_losses
    from lessdb.runs.config import LoraSettings
    from lessdb.featurize.adam import GradTransform
    from lessdb.models.batching import batches_by_length
    from lessdb.featurize.engine import FeatureEngine
    from lessdb.featurize.per_example_grads import lora_params
    from lessdb.featurize.sketch import make_sketch
    from lessdb.models.loading import load_base_model, prepare_model
    from lessdb.phase_meter import PhaseMeter, release_freed_memory
    from lessdb.models.tokenization import collate, encode_window, pad_token_id
    from lessdb.runs.trainer import build_lora_model

    torch.set_num_threads(threads)
    ws = Workspace.init(workspace)
    prepare_model(ws, "smollm2-135m")
    messages = _examples(ws, n)
    base = load_base_model(ws, "smollm2-135m", device="cpu", record=False)
    model = build_lora_model(base.model, LoraSettings(r=8, alpha=32), seed=0)
    pad = pad_token_id(base.tokenizer)
    encoded = sorted((encode_window(base.tokenizer, m, 256) for m in messages), key=lambda e: len(e.input_ids))
    groups = batches_by_length(encoded, [len(e.input_ids) for e in encoded], 64, cap)
    out = {"cap_tokens": cap, "examples": len(encoded), "batches": len(groups),
           "padded_tokens": sum(len(g) * max(len(e.input_ids) for e in g) for g in groups)}

    meter = PhaseMeter()   # VmHWM reset per phase: each measurement's own peak, and the RSS it started from

    def timed(name: str, run_one) -> dict:
        release_freed_memory()
        cpu0 = time.process_time()
        with meter.phase(name):
            for g in groups:
                run_one(collate(g, pad))
        cpu, p = time.process_time() - cpu0, meter.phases[name]
        return {"peak_rss_gb": round(p["peak_rss_bytes"] / 1e9, 3),
                "above_model_gb": round((p["peak_rss_bytes"] - p["start_rss_bytes"]) / 1e9, 3),
                "wall_s": p["seconds"], "cpu_s": round(cpu, 2), "ms_per_example_cpu": round(1000 * cpu / len(encoded), 1)}

    def train_step(batch):
        model.train()
        completion_token_losses(model, **batch).total().backward()
        model.zero_grad(set_to_none=True)

    params = lora_params(model)
    sketch = make_sketch("countsketch", [p.numel for p in params], 8192, 0, "cpu", None)
    engine = FeatureEngine(model, params, GradTransform("sgd", params), sketch)

    def feature_step(batch):
        model.eval()
        engine.features(batch)

    train_step(collate(encoded[:1], pad))   # one-off allocations (oneDNN, autograd) outside the measurement
    feature_step(collate(encoded[:1], pad))
    out["train"] = timed("train", train_step)
    out["featurize"] = timed("featurize", feature_step)
    meter.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", default=None)
    ap.add_argument("--examples", type=int, default=32)
    ap.add_argument("--caps", default="1024,512,256")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)   # internal: one cap, this process
    args = ap.parse_args()
    workspace = args.workspace or os.path.join(tempfile.gettempdir(), "lessdb-bench-batch-tokens")
    if args.one is not None:
        print(json.dumps(measure(workspace, args.one, args.examples, args.threads)))
        return
    results = []
    for cap in [int(c) for c in args.caps.split(",")]:
        try:
            results.append(run_worker("batch_tokens", "--workspace", workspace, "--one", cap,
                                      "--examples", args.examples, "--threads", args.threads))
        except RuntimeError as exc:
            sys.exit(f"cap {cap} failed: {exc}")
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"load_average": loadavg(), "threads": args.threads, "results": results}, indent=2))


if __name__ == "__main__":
    main()
