"""Benchmark: warmup (LESS step 1) on the real SmolLM2-135M with the `cpu-small` preset.

Ingests the first --pool-size conversations of the bundled ShareGPT pool into a workspace, then times the
pieces of `run_warmup`: model load (GGUF conversion on a fresh workspace, cached copy after), token counts of
the whole pool, and training (tokens/s and examples/s over the epochs, checkpoint writes excluded).
Prints one JSON object.

Run: python -m bench.warmup [--pool-size 1000] [--max-examples 64] [--epochs 2] [--workspace DIR]
(a --workspace that already holds the converted model skips the ~25 s conversion).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from bench.common import loadavg, machine, peak_rss_gb


def run(args) -> dict:
    import torch

    from lessdb import Workspace
    from lessdb.runs.config import build_warmup_config
    from lessdb.ingest import ingest_builtin
    from lessdb.models.loading import load_base_model
    from lessdb.storage import meta_runs
    from lessdb.models.token_counts import record_token_counts
    from lessdb.runs.warmup import run_warmup

    ws = Workspace.init(args.workspace)
    pool = f"bench-sharegpt-{args.pool_size}"
    if not meta_runs.list_runs(ws, pool=pool) and not _pool_exists(ws, pool):
        ingest_builtin(ws, "sharegpt", pool=pool, limit=args.pool_size, progress=False)
    over = {k: v for k, v in {"max_examples": args.max_examples, "epochs": args.epochs}.items() if v is not None}
    config = build_warmup_config(pool, preset="cpu-small", device=args.device, **over)

    t0 = time.perf_counter()
    loaded = load_base_model(ws, config.model, device="cpu")
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    record_token_counts(ws, loaded.tokenizer, pool, config.training.max_seq_length, progress=False)
    counts = meta_runs.token_counts(ws, meta_runs_tokenizer_id(loaded.tokenizer), config.training.max_seq_length)
    count_s = time.perf_counter() - t0
    del loaded

    t0 = time.perf_counter()
    summary = run_warmup(ws, config, progress=True)
    wall_s = time.perf_counter() - t0
    run = meta_runs.get_run(ws, summary.run_id)
    epochs = []
    for c in summary.checkpoints:
        meta = json.loads(open(os.path.join(c["path"], "checkpoint.json")).read())
        epochs.append({"epoch": c["epoch"], "seconds": round(meta["seconds"], 1), "tokens": meta["tokens"],
                       "tokens_per_s": round(meta["tokens"] / meta["seconds"], 1),
                       "examples_per_s": round(summary.n_examples / meta["seconds"], 2),
                       "train_loss": round(c["train_loss"], 4), "mean_lr": c["mean_lr"]})
    return {
        "machine": {**machine(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
        "load_average": loadavg(),
        "preset": "cpu-small", "config": run["config"]["warmup"], "pool_size": len(counts),
        "pool_excluded_at_max_seq_length": sum(1 for c in counts.values() if c["completion_tokens"] == 0),
        "pool_truncated": sum(1 for c in counts.values() if c["truncated"]),
        "model_load_seconds": round(load_s, 1), "token_count_seconds": round(count_s, 1),
        "token_counts_per_s": round(len(counts) / count_s, 1) if count_s > 0 else None,
        "warmup_wall_seconds": round(wall_s, 1), "n_examples": summary.n_examples, "n_excluded": summary.n_excluded,
        "optimizer_steps": summary.total_steps, "train_tokens_per_s": round(summary.tokens_per_second or 0, 1),
        "epochs": epochs, "peak_rss_mb": round(peak_rss_gb() * 1024, 1),
    }


def meta_runs_tokenizer_id(tokenizer) -> str:
    from lessdb.models.tokenization import tokenizer_id

    return tokenizer_id(tokenizer)


def _pool_exists(ws, pool: str) -> bool:
    from lessdb.storage.candidates import select_candidate_ids

    return bool(select_candidate_ids(ws, pool))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool-size", type=int, default=1000)
    parser.add_argument("--max-examples", type=int, default=None, help="Override the preset's 64.")
    parser.add_argument("--epochs", type=int, default=None, help="Override the preset's 2.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workspace", default=None, help="Reuse a workspace (default: a fresh temp one).")
    args = parser.parse_args()
    if args.workspace is None:
        with tempfile.TemporaryDirectory() as tmp:
            args.workspace = os.path.join(tmp, "ws")
            result = run(args)
    else:
        result = run(args)
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
