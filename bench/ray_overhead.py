"""Ray's overhead where it amortises (issue 25): `featurize --engine ray` against the local engine at equal cores.

    python -m bench.ray_overhead                  # real SmolLM2-135M, 400 candidates × 2 checkpoints (TIMING run)
    python -m bench.ray_overhead --smoke          # tiny model, 24 candidates: the plumbing, in a few minutes

One warmup (preset cpu-small: 256 tokens, LoRA r 8, 2 epochs → 2 checkpoints) on a pool of the first N builtin
ShareGPT conversations, copied into two identical workspaces; then, each as the real CLI in a fresh process:
- local: `lessdb featurize --run R` — one process, 2 torch threads;
- ray:   `lessdb featurize --run R --engine ray --workers 2` — a private local cluster, 2 actors × 1 thread.
Wall time of each process (imports, Ray start, model loads, compute, commits: everything a user waits for), and
overhead = ray wall ÷ local wall − 1 (goal ≤ 10 %). The Ray summary's timing breakdown says where the rest went,
and the two feature tables are compared key by key (the engines store bit-identical vectors).
The run confines itself to a network namespace with only `lo` (as bench.scale does). Timings depend on the
machine's load: the load average is printed at start and end; report figures from an idle machine only.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from bench.common import LESSDB, confine_to_loopback, loadavg, write_json

RUN_ID = "overhead-warmup"


def prepare(base: Path, n: int, model: str, percentage: float) -> dict:
    """The shared workspace: N builtin ShareGPT conversations and one cpu-small warmup (kept with --keep)."""
    from lessdb import Workspace

    if (base / "lessdb.duckdb").exists():
        ws = Workspace.open(base)
        if any(r["run_id"] == RUN_ID and r["status"] == "complete" for r in ws.runs()):
            return {"reused": True}
        shutil.rmtree(base)
    t = time.monotonic()
    ws = Workspace.init(base)
    ws.ingest(builtin="sharegpt", pool="p", limit=n, progress=False)
    ws.warmup("p", model=model, preset="cpu-small", percentage=percentage, run_id=RUN_ID, device="cpu",
              progress=False)
    return {"reused": False, "seconds": round(time.monotonic() - t, 1)}


def featurize(ws: Path, *extra: str, threads: int) -> dict:
    """One `lessdb featurize` process: its wall time and its --json summary."""
    env = dict(os.environ, LESSDB_WORKSPACE=str(ws), LESSDB_PROGRESS="0", OMP_NUM_THREADS=str(threads),
               RAY_USAGE_STATS_ENABLED="0")
    cmd = [*LESSDB, "featurize", "--run", RUN_ID, "--device", "cpu", "--json", *extra]
    t = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.monotonic() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[3:])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"wall_s": round(wall, 2), "summary": json.loads(proc.stdout)}


def compare_tables(a: Path, b: Path, feature_set_id: str) -> dict:
    """Keys and vectors of the two engines' feature tables."""
    import numpy as np

    from lessdb import Workspace
    from lessdb.storage.features import get_feature_set

    rows = []
    for root in (a, b):
        ws = Workspace.open(root)
        t = ws.lance.dataset(get_feature_set(ws, feature_set_id).lance_table).to_table(columns=["key", "vector"])
        keys = t.column("key").to_pylist()
        vecs = t.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(len(keys), -1)
        rows.append(dict(zip(keys, vecs)))
    same_keys = rows[0].keys() == rows[1].keys()
    equal = same_keys and all(np.array_equal(rows[0][k], rows[1][k]) for k in rows[0])
    return {"rows": len(rows[0]), "same_keys": same_keys, "bit_identical": bool(equal)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=None, help="candidates (default 400; --smoke 24)")
    ap.add_argument("--smoke", action="store_true", help="tiny model, 24 candidates")
    ap.add_argument("--workdir", default="/tmp/lessdb-ray-overhead")
    ap.add_argument("--keep", action="store_true", help="keep (and reuse) the warmed workspace")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    confine_to_loopback("ray_overhead")
    n = args.n or (24 if args.smoke else 400)
    model = "tiny" if args.smoke else "smollm2-135m"
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    report = {"n": n, "model": model, "checkpoints": 2, "cores": os.cpu_count(), "loadavg_start": loadavg()}
    print(f"load average at start: {report['loadavg_start']}", flush=True)
    report["prepare"] = prepare(work / "base", n, model, percentage=0.05 if n >= 400 else 0.5)
    for name in ("local", "ray"):
        shutil.rmtree(work / f"ws-{name}", ignore_errors=True)
        shutil.copytree(work / "base", work / f"ws-{name}")
    local = featurize(work / "ws-local", threads=2)
    print(f"local: {local['wall_s']} s ({local['summary']['examples']} vectors)", flush=True)
    ray = featurize(work / "ws-ray", "--engine", "ray", "--workers", "2", threads=1)
    print(f"ray:   {ray['wall_s']} s ({ray['summary']['examples']} vectors)", flush=True)
    timing = ray["summary"].get("timing", {})
    report.update({
        "local": {"wall_s": local["wall_s"], "featurize_s": local["summary"]["seconds"],
                  "examples": local["summary"]["examples"]},
        "ray": {"wall_s": ray["wall_s"], "featurize_s": ray["summary"]["seconds"], "examples": ray["summary"]["examples"],
                "timing_s": {k: round(v, 2) for k, v in timing.items()}},
        "overhead": round(ray["wall_s"] / local["wall_s"] - 1, 4),
        "goal": 0.10,
        "tables": compare_tables(work / "ws-local", work / "ws-ray", local["summary"]["feature_set_id"]),
        "loadavg_end": loadavg()})
    print(f"overhead = ray wall / local wall - 1 = {report['overhead']:+.1%} (goal <= +10%); vectors "
          f"{'bit-identical' if report['tables']['bit_identical'] else 'DIFFER'} ({report['tables']['rows']} rows); "
          f"load average at end: {report['loadavg_end']}")
    print(json.dumps(report, indent=1))
    if args.json:
        write_json(Path(args.json), report)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
