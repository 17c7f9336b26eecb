"""Scale-out benchmark (issue 14): one run, side by side.

    python -m bench.scale [--n 96] [--scan-rows 20000] [--scan-dim 2048] [--pf-rows 50000] [--json OUT]

1. Featurize the same pool with the same tiny model (lessdb.models.tiny, 1 checkpoint, d = 1024): local engine (one
   process, 1 thread) vs `--engine ray` with 2 CPU workers (1 thread each) on a private local cluster.
   Features/s of each, and the Ray driver's overheads (planning incl. the identity model load, Ray start, fragment
   writes on workers, commits) as a share of worker compute.
2. Select-scan throughput: the `vector` column of an N × d float16 feature table read with pylance from local
   disk and from the S3 emulator (moto[server] on 127.0.0.1), in GB/s.
3. Two-stage selection (`lessdb.selection.two_stage`): recall of the exact top k and bytes read, on synthetic
   CountSketch features with low-rank structure (rank 32 signal + isotropic noise in a P = 2^20 gradient space,
   sketched to d = 8192 and folded to 1024). Synthetic: real recall depends on how clustered real gradients are.
4. Paper arithmetic: wall time and cost of 5.8M candidates × 4 checkpoints at d = 8192 on 8, 64 and 256 GPUs.

The whole run executes in a private network namespace with only `lo` (it re-executes itself under `unshare -n`),
so Ray and the S3 emulator stay on loopback. Timings depend on the machine's load (printed).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import REPO, confine_to_loopback, loadavg, write_json

# LESS Table 4: 48 A100-80GB hours for 270,679 candidates x 4 checkpoints (7B, dense projection at d = 8192)
PAPER_GRADIENTS = 270_679 * 4
PAPER_GPU_HOURS = 48.0
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda".split()


def _records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"messages": [{"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(3, 12)))},
                          {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=rng.randint(2, 8)))}]}
            for _ in range(n)]


def bench_featurize(n: int, tmp: Path) -> dict:
    import torch

    from lessdb import Workspace
    from lessdb.runs.config import build_warmup_config
    from lessdb.featurize import FeaturizeConfig, featurize_run
    from lessdb.ingest.pipeline import ingest_files
    from lessdb.featurize.ray_engine import featurize_ray
    from lessdb.scale import RayOptions
    from lessdb.runs.warmup import run_warmup

    pool = tmp / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in _records(n)))
    ws = Workspace.init(tmp / "ws-local")
    ingest_files(ws, [pool], pool="p", progress=False)
    cfg = build_warmup_config("p", model="tiny", percentage=0.25, lora_r=8, lora_alpha=32, max_seq_length=128,
                              epochs=1, batch_size=8, micro_batch_size=8, device="cpu")
    run_id = run_warmup(ws, cfg, progress=False, count_tokens=False).run_id
    shutil.copytree(tmp / "ws-local", tmp / "ws-ray")
    fcfg = FeaturizeConfig(run_id=run_id, dim=1024, batch_size=8, progress=False)
    torch.set_num_threads(1)
    local = featurize_run(ws, fcfg)
    ray_summary = featurize_ray(Workspace.open(tmp / "ws-ray"), fcfg, RayOptions(address="local", workers=2))
    t = ray_summary.timing
    compute = t["worker_seconds"] - t["fragment_write_seconds"] - t["model_load_seconds"]
    return {"examples": local.examples,
            "local": {"seconds": round(local.seconds, 2), "examples_per_s": round(local.examples_per_s, 2)},
            "ray_2_workers": {"seconds": round(ray_summary.seconds, 2),
                              "examples_per_s": round(ray_summary.examples_per_s, 2),
                              "examples_per_s_after_start": round(
                                  ray_summary.examples / max(ray_summary.seconds - t["plan_seconds"]
                                                             - t["ray_connect_seconds"], 1e-9), 2),
                              "timing_s": {k: round(v, 3) for k, v in t.items()},
                              "overhead_share_of_compute": {
                                  "plan": round(t["plan_seconds"] / compute, 3),
                                  "ray_start": round(t["ray_connect_seconds"] / compute, 3),
                                  "actor_model_loads": round(t["model_load_seconds"] / compute, 3),
                                  "fragment_writes": round(t["fragment_write_seconds"] / compute, 3),
                                  "commits": round(t["commit_seconds"] / compute, 3)}}}


def _start_moto() -> tuple[object, str]:
    import boto3
    from moto.server import ThreadedMotoServer

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)   # one log line per S3 request otherwise
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
                      AWS_ENDPOINT=endpoint, AWS_ALLOW_HTTP="true")
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
    return srv, endpoint


def bench_scan(rows: int, dim: int, tmp: Path) -> dict:
    import lance
    import pyarrow as pa

    rng = np.random.default_rng(0)
    vec = rng.standard_normal((rows, dim), dtype=np.float32).astype(np.float16)
    table = pa.table({"example_id": [f"{i:08d}" for i in range(rows)],
                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(vec.reshape(-1)), dim)})
    out = {"rows": rows, "dim": dim, "bytes": int(vec.nbytes)}
    for where, uri in (("local_disk", str(tmp / "scan.lance")), ("s3_emulator", "s3://bench/scan.lance")):
        lance.write_dataset(table, uri, max_rows_per_file=max(1, rows // 8))
        best = None
        for _ in range(3):
            t0 = time.perf_counter()
            n = sum(b.num_rows for b in lance.dataset(uri).to_batches(columns=["vector"], batch_size=4096))
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
        assert n == rows
        out[where] = {"seconds": round(best, 3), "GB_per_s": round(vec.nbytes / best / 1e9, 3)}
    return out


def bench_prefilter(rows: int, k: int, tmp: Path, d: int = 8192, low: int = 1024, factor: int = 20,
                    rank: int = 32, big_p: int = 1 << 20, noise: float = 3.0) -> dict:
    from lessdb.featurize.folding import fold
    from lessdb.selection.two_stage import cosine_scores, two_stage_top_k

    rng = np.random.default_rng(1)
    bucket = rng.integers(0, d, big_p)
    sign = rng.choice(np.array([-1.0, 1.0], np.float32), big_p)
    counts = np.bincount(bucket, minlength=d).astype(np.float32)
    basis = rng.standard_normal((big_p, rank), dtype=np.float32) / np.sqrt(big_p)
    sketched_basis = np.zeros((d, rank), np.float32)      # S U: CountSketch of the signal basis
    np.add.at(sketched_basis, bucket, basis * sign[:, None])
    # candidates: S(U z + eps) = (S U) z + S eps, and S eps is Gaussian with variance noise^2 * counts / P
    z = rng.standard_normal((rows, rank), dtype=np.float32)
    x = z @ sketched_basis.T + rng.standard_normal((rows, d), dtype=np.float32) * (noise * np.sqrt(counts / big_p))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)        # stored: unit, fp16
    queries = (sketched_basis @ rng.standard_normal((rank, 3), dtype=np.float32)).astype(np.float32)
    exact = cosine_scores(x, queries)
    exact_top = np.lexsort((np.arange(rows), -exact))[:k]
    low_x = fold(x.astype(np.float32), low).astype(np.float16)                      # stored beside: fp16
    res = two_stage_top_k(low_x, queries, k, factor, lambda idx: x[idx])
    recall = len(set(res["top"].tolist()) & set(exact_top.tolist())) / k
    full_bytes = rows * d * 2
    two_stage = rows * low * 2 + len(res["shortlist"]) * d * 2
    return {"rows": rows, "d": d, "low_dim": low, "factor": factor, "k": k, "noise": noise,
            "recall_of_exact_top_k": recall,
            "same_top_score": bool(np.isclose(res["scores"][0], exact[exact_top[0]])),
            "bytes_full_scan": full_bytes, "bytes_two_stage": two_stage,
            "bytes_ratio": round(two_stage / full_bytes, 4),
            # the paper's store at k = 1% (at its 5%, factor 20 shortlists the whole pool: no saving)
            "paper_shape_bytes_k1pct": {"full": 270_679 * 4 * 8192 * 2,
                                        "two_stage": 270_679 * 4 * low * 2 + factor * int(0.01 * 270_679) * 4 * 8192 * 2}}


def projection(ray_overhead_share: float, price_per_gpu_hour: float = 2.0) -> dict:
    rate = PAPER_GRADIENTS / (PAPER_GPU_HOURS * 3600)      # example-gradients per second per A100
    grads = 5_800_000 * 4
    gpu_hours = grads / rate / 3600 * (1 + ray_overhead_share)
    return {"assumed_rate_per_gpu": round(rate, 2), "rate_source": "LESS Table 4: 48 A100-80GB hours for 270,679 x 4 "
            "gradients (7B LoRA, d = 8192)", "overhead_share_added": round(ray_overhead_share, 3),
            "gradients": grads, "gpu_hours": round(gpu_hours),
            "assumed_price_per_gpu_hour_usd": price_per_gpu_hour, "cost_usd": round(gpu_hours * price_per_gpu_hour),
            "wall_hours": {g: round(gpu_hours / g, 1) for g in (8, 64, 256)},
            "stored_fp16_GB": round(grads * 8192 * 2 / 1e9, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=192, help="candidates featurized by each engine")
    ap.add_argument("--scan-rows", type=int, default=20000)
    ap.add_argument("--scan-dim", type=int, default=2048)
    ap.add_argument("--pf-rows", type=int, default=50000)
    ap.add_argument("--pf-k", type=int, default=500)
    ap.add_argument("--pf-noise", default="3,10,30", help="noise levels of the synthetic prefilter data")
    ap.add_argument("--parts", default="featurize,scan,prefilter", help="which parts to run")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    confine_to_loopback("scale")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("LESSDB_PROGRESS", "0")
    out = {"load_at_start": loadavg()}
    srv, _ = _start_moto()
    try:
        with tempfile.TemporaryDirectory(prefix="lessdb-bench-scale-") as tmp:
            tmp = Path(tmp)
            parts = set(args.parts.split(","))
            if "featurize" in parts:
                out["featurize"] = bench_featurize(args.n, tmp)
                print(json.dumps(out["featurize"], indent=2), flush=True)
            if "scan" in parts:
                out["scan"] = bench_scan(args.scan_rows, args.scan_dim, tmp)
                print(json.dumps(out["scan"], indent=2), flush=True)
            if "prefilter" in parts:
                out["prefilter"] = [bench_prefilter(args.pf_rows, args.pf_k, tmp, noise=float(x))
                                    for x in args.pf_noise.split(",")]
                print(json.dumps(out["prefilter"], indent=2), flush=True)
    finally:
        srv.stop()
    share = sum(out["featurize"]["ray_2_workers"]["overhead_share_of_compute"][k]
                for k in ("fragment_writes", "commits")) if "featurize" in out else 0.0
    out["projection"] = projection(share)
    out["load_at_end"] = loadavg()
    print(json.dumps({k: out[k] for k in ("projection", "load_at_start", "load_at_end")}, indent=2))
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
