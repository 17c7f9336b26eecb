"""Benchmark `lessdb select` (LESS step 3) on a synthetic feature store of the paper's shape.

For each shape N×C×d (candidates × checkpoints × dim, float16 unit vectors, 27 subtasks × 3 validation
examples like BBH) it builds a real workspace (Lance candidates + feature table, DuckDB run/checkpoints/feature
set/task), then, each in a fresh process with the page cache warm:
  raw     one Lance scan of the feature table's candidate rows (example_id + vector), batches just consumed;
  select  the full `select(ws, SelectConfig(task=..., method="less"))` (or --method unnormalized; the store
          holds random raw norms for it): pool filter, validation vectors,
          streamed scoring, top 5%, recording members and provenance.
It reports seconds, GB/s of vector bytes, select/raw, and peak RSS of each process.

The paper's shape is 270,679 × 4 × 8192 (17.7 GB of float16); pass --shapes 270679x4x8192 --no-compact to run
it (it needs ~18 GB of disk; the build took 19 min here with other jobs sharing the 2 cores). --keep keeps a
store and a later run reuses it. Validation features are written directly (the featurizer is benchmarked in
`python -m bench.featurize`), so `select` finds them cached.

    python -m bench.select_speed --shapes 20000x4x1024,20000x4x8192 --workdir /tmp/lessdb-bench-select
    python -m bench.select_speed --shapes 270679x4x8192 --no-compact --keep --repeats 3
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from bench import synthetic_store
from bench.common import loadavg, peak_rss_gb, run_worker as run_bench_worker

TASK = "bench-bbh"
RUN = "bench-run"
FSID = "benchfeatureset0"
BUILT = "bench-built.json"   # written last: a store without it is an interrupted build


def is_built(root: Path, n: int, checkpoints: int, dim: int) -> bool:
    try:
        shape = json.loads((root / BUILT).read_text())
    except (OSError, ValueError):
        return False
    return (shape["n"], shape["checkpoints"], shape["dim"]) == (n, checkpoints, dim)


def build(root: Path, n: int, checkpoints: int, dim: int, seed: int = 0, chunk: int = 10_000,
          compact: bool = True) -> None:
    from lessdb import Workspace
    from lessdb.storage import features as fstore

    if root.exists():
        shutil.rmtree(root)
    ws = Workspace.init(root)
    rng = np.random.default_rng(seed)
    ids = [f"{i:024x}" for i in range(n)]
    t0 = time.monotonic()
    synthetic_store.add_candidates(ws, ids, rng, datasets=("flan", "cot", "dolly", "oasst"))
    task = synthetic_store.add_task(ws, root, TASK)
    synthetic_store.add_warmup_run(ws, RUN, checkpoints)
    info = synthetic_store.add_feature_set(ws, FSID, RUN, dim, "float16")
    schema = fstore.feature_schema(dim, "float16")

    def rows(role, epoch, part, vecs):
        return pa.table({"key": [f"{role}/{epoch}/{c}" for c in part], "example_id": part,
                         "epoch": pa.array([epoch] * len(part), pa.int32()), "role": [role] * len(part),
                         "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), dim),
                         "norm": pa.array(rng.uniform(0.5, 5.0, len(part)), pa.float32())},   # raw norms
                        schema=schema)

    def unit(k):
        x = rng.standard_normal((k, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(np.float16)

    val_ids = [eid for eid, _ in task.examples()]
    # candidate vectors: rows drawn from a pool of `chunk` random unit vectors (a fresh permutation per append):
    # the bytes read and multiplied are what they would be, and the 17.7 GB shape builds in minutes, not hours
    pool = unit(min(n, chunk))
    for e in range(1, checkpoints + 1):
        ws.lance.append(info.lance_table, rows("validation", e, val_ids, unit(len(val_ids))), schema)
        for start in range(0, n, chunk):   # plain appends (one featurize job's worth each), like a fresh store
            part = ids[start:start + chunk]
            vecs = pool[rng.permutation(len(pool))[:len(part)]]
            ws.lance.append(info.lance_table, rows("candidate", e, part, vecs), schema)
        print(f"  built checkpoint {e}/{checkpoints} ({time.monotonic() - t0:.0f}s)", file=sys.stderr)
    if compact:
        ws.lance.open(info.lance_table).optimize()   # compact the appends, as maintenance would
    (root / BUILT).write_text(json.dumps({"n": n, "checkpoints": checkpoints, "dim": dim, "compact": compact}))


def worker(kind: str, root: Path, batch_rows: int, method: str = "less") -> dict:
    from lessdb import Workspace
    from lessdb.storage import features as fstore

    import importlib

    sel = importlib.import_module("lessdb.selection.select")
    gradient = importlib.import_module("lessdb.selection.methods.gradient")
    for heavy in ("lessdb.selection.scoring", "lessdb.featurize.job", "lessdb.storage.features"):
        importlib.import_module(heavy)   # the scorers import these (torch, ...) lazily: not part of the timing
    ws = Workspace.open(root)
    info = fstore.get_feature_set(ws, FSID)
    t0 = time.monotonic()
    out: dict = {"kind": kind}
    if kind == "raw":
        ds = ws.lance.dataset(info.lance_table)
        rows = nbytes = 0
        for b in ds.to_batches(columns=["example_id", "vector"], filter="role = 'candidate'", batch_size=batch_rows):
            rows += b.num_rows
            nbytes += b.column("vector").values.nbytes
        out.update(rows=rows, vector_bytes=nbytes)
    else:
        gradient.compute_validation_features = lambda *a, **k: None   # already stored by build()
        # build() stores the validation rows under the keys of the feature set's window cut on the right
        res = sel.select(ws, sel.SelectConfig(task=TASK, method=method, batch_rows=batch_rows, val_truncation="right",
                                              progress=False))
        out.update(k=res.k, n_scored=res.n_scored, selection_id=res.selection_id)
    out["seconds"] = time.monotonic() - t0
    out["peak_rss_gb"] = peak_rss_gb()
    return out


def run_worker(kind: str, root: Path, batch_rows: int, method: str = "less") -> dict:
    return run_bench_worker("select_speed", "--worker", kind, "--workdir", root, "--batch-rows", batch_rows,
                            "--method", method)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="20000x4x1024,20000x4x8192",
                    help="comma-separated NxCxD (candidates x checkpoints x dim)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/lessdb-bench-select"))
    ap.add_argument("--batch-rows", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of each (best is reported)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the synthetic workspaces; a kept, complete one is reused by the next run")
    ap.add_argument("--build-only", action="store_true", help="build (and keep) the stores, time nothing")
    ap.add_argument("--no-compact", action="store_true",
                    help="leave the store as its 10,000-row appends (skips rewriting it: for the 17.7 GB shape)")
    ap.add_argument("--method", default="less", choices=["less", "unnormalized"],
                    help="selection method timed (unnormalized also reads the stored raw norms)")
    ap.add_argument("--worker", choices=["raw", "select"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.workdir, args.batch_rows, args.method)))
        return
    results = []
    for shape in args.shapes.split(","):
        n, c, d = synthetic_store.parse_shape(shape)
        root = args.workdir / f"ws-{n}x{c}x{d}"
        t0 = time.monotonic()
        if not is_built(root, n, c, d):
            build(root, n, c, d, compact=not args.no_compact)
        build_s = time.monotonic() - t0
        if args.build_only:
            print(json.dumps({"shape": f"{n}x{c}x{d}", "built": str(root), "build_s": round(build_s, 1)}), flush=True)
            continue
        run_worker("raw", root, args.batch_rows)   # warm the page cache
        raw = min((run_worker("raw", root, args.batch_rows) for _ in range(args.repeats)), key=lambda r: r["seconds"])
        sel = min((run_worker("select", root, args.batch_rows, args.method) for _ in range(args.repeats)),
                  key=lambda r: r["seconds"])
        gb = raw["vector_bytes"] / 1e9
        row = {"shape": f"{n}x{c}x{d}", "vector_gb": round(gb, 3), "build_s": round(build_s, 1),
               "raw_s": round(raw["seconds"], 2), "raw_gb_s": round(gb / raw["seconds"], 2),
               "raw_rss_gb": round(raw["peak_rss_gb"], 2), "select_s": round(sel["seconds"], 2),
               "select_gb_s": round(gb / sel["seconds"], 2), "select_over_raw": round(sel["seconds"] / raw["seconds"], 2),
               "select_rss_gb": round(sel["peak_rss_gb"], 2), "k": sel["k"], "n_scored": sel["n_scored"],
               "load_average_1m": loadavg()[0]}
        results.append(row)
        print(json.dumps(row), flush=True)
        if not args.keep:
            shutil.rmtree(root)
    if args.build_only:
        return
    print("\n| shape N×C×d | vector GB | raw scan s (GB/s) | select s (GB/s) | select/raw | peak RSS raw / select GB |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['shape']} | {r['vector_gb']} | {r['raw_s']} ({r['raw_gb_s']}) | {r['select_s']} "
              f"({r['select_gb_s']}) | {r['select_over_raw']} | {r['raw_rss_gb']} / {r['select_rss_gb']} |")


if __name__ == "__main__":
    main()
