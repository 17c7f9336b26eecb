"""float16 vs float32 stored features, side by side: `lessdb select` time and the agreement of its scores.

One real workspace holds two feature sets of the SAME vectors (float32, and the same vectors rounded to
float16), N candidates × C checkpoints × d, plus 27 subtasks × 3 validation vectors. The vectors are
structured like LESS features rather than pure noise: each candidate is a random mix of a few of the 27 subtask
directions plus isotropic noise (`--signal`), so the top 5% is decided by real score gaps as well as by ties
in the noise. Each select runs in a fresh process with the page cache warm (best of --repeats); then the two
recorded selections are compared: top-k overlap, Spearman correlation of all scores (recomputed in float64
from the stored vectors of each set), max |score difference| and that difference relative to the score spread.

    python -m bench.dtype_select --shapes 20000x4x1024,10000x4x8192
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from bench import synthetic_store
from bench.common import cpu_seconds, loadavg, peak_rss_gb, run_worker as run_bench_worker
from bench.synthetic_store import N_SUBTASKS, N_VAL

TASK = "dtype-bbh"
RUN = "dtype-run"
FSIDS = {"float32": "dtypebench000f32", "float16": "dtypebench000f16"}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def build(root: Path, n: int, checkpoints: int, dim: int, signal: float, seed: int = 0) -> None:
    from lessdb import Workspace
    from lessdb.choices import DEFAULT_VAL_TRUNCATION
    from lessdb.featurize import validation_key
    from lessdb.storage import features as fstore

    if root.exists():
        shutil.rmtree(root)
    ws = Workspace.init(root)
    rng = np.random.default_rng(seed)
    ids = [f"{i:024x}" for i in range(n)]
    synthetic_store.add_candidates(ws, ids)
    task = synthetic_store.add_task(ws, root, TASK)
    synthetic_store.add_warmup_run(ws, RUN, checkpoints)
    infos = {dtype: synthetic_store.add_feature_set(ws, fsid, RUN, dim, dtype)
             for dtype, fsid in FSIDS.items()}
    # select's default validation window: the feature set's, cut on the left
    val_ids = [validation_key(msgs, 512, None, DEFAULT_VAL_TRUNCATION) for _, msgs in task.examples()]
    val_subtask = [i // N_VAL for i in range(len(val_ids))]
    chunk = 10_000
    for e in range(1, checkpoints + 1):
        centers = _unit(rng.standard_normal((N_SUBTASKS, dim)))
        val = _unit(centers[val_subtask] + 0.5 * _unit(rng.standard_normal((len(val_ids), dim))))
        for info in infos.values():
            fstore.write_features(ws, info, e, "validation", val_ids, val)
        for start in range(0, n, chunk):
            part = ids[start:start + chunk]
            mix = rng.dirichlet(np.full(N_SUBTASKS, 0.1), len(part)).astype(np.float32)
            vecs = _unit(signal * mix @ centers + _unit(rng.standard_normal((len(part), dim))))
            for info in infos.values():   # write_features rounds to the set's dtype
                fstore.write_features(ws, info, e, "candidate", part, vecs)
        print(f"  built checkpoint {e}/{checkpoints}", file=sys.stderr)
    for info in infos.values():
        ws.lance.open(info.lance_table).optimize()


def worker(root: Path, dtype: str) -> dict:
    import importlib

    sel = importlib.import_module("lessdb.selection.select")   # imports are not part of the timing
    gradient = importlib.import_module("lessdb.selection.methods.gradient")
    from lessdb import Workspace

    ws = Workspace.open(root)
    t0, c0 = time.monotonic(), cpu_seconds()
    gradient.compute_validation_features = lambda *a, **k: None    # stored by build()
    res = sel.select(ws, sel.SelectConfig(task=TASK, feature_set=FSIDS[dtype], progress=False))
    return {"dtype": dtype, "seconds": time.monotonic() - t0, "cpu_s": cpu_seconds() - c0, "selection_id": res.selection_id, "k": res.k,
            "peak_rss_gb": peak_rss_gb()}


def run_worker(root: Path, dtype: str) -> dict:
    return run_bench_worker("dtype_select", "--worker", dtype, "--workdir", root)


def all_scores(ws, fsid: str, epochs: list[int], weights: list[float]) -> tuple[list[str], np.ndarray]:
    """score(z) = max_j Σ_i η_i cos(mean_j validation, candidate) in float64, from the stored vectors."""
    from lessdb.tasks import catalog as tasks
    from lessdb.choices import DEFAULT_VAL_TRUNCATION
    from lessdb.featurize import validation_key
    from lessdb.storage.features import iter_feature_batches

    task = tasks.load_task(ws, TASK)
    groups = [[validation_key(ex.messages, 512, None, DEFAULT_VAL_TRUNCATION) for ex in task.subtasks[s]]
              for s in sorted(task.subtasks)]
    total, ids = None, None
    for e, w in zip(epochs, weights):
        val = dict(p for ids_, vs in iter_feature_batches(ws, fsid, e, "validation") for p in zip(ids_, vs))
        g = np.stack([np.mean([val[k] / np.linalg.norm(val[k]) for k in keys], axis=0)
                      for keys in groups]).astype(np.float64)
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        cid, rows = [], []
        for ids_, vs in iter_feature_batches(ws, fsid, e, "candidate"):
            cid += ids_
            rows.append(vs.astype(np.float64))
        x = np.concatenate(rows)
        order = np.argsort(cid)
        x = x[order] / np.linalg.norm(x[order], axis=1, keepdims=True)
        ids = [cid[i] for i in order]
        total = w * (x @ g.T) if total is None else total + w * (x @ g.T)
    return ids, total.max(axis=1)


def compare(root: Path, a: dict, b: dict) -> dict:
    from lessdb import Workspace
    from lessdb.storage import meta_runs, meta_selections as meta

    ws = Workspace.open(root)
    members = {r["dtype"]: meta.selection_members(ws, r["selection_id"]).column("candidate_id").to_pylist()
               for r in (a, b)}
    ckpts = meta_runs.list_checkpoints(ws, RUN)
    epochs, weights = [c.epoch for c in ckpts], [c.mean_lr for c in ckpts]
    ids32, s32 = all_scores(ws, FSIDS["float32"], epochs, weights)
    ids16, s16 = all_scores(ws, FSIDS["float16"], epochs, weights)
    assert ids32 == ids16
    rank32, rank16 = np.argsort(np.argsort(-s32)), np.argsort(np.argsort(-s16))
    spearman = float(np.corrcoef(rank32, rank16)[0, 1])
    k = a["k"]
    diff = np.abs(s32 - s16)
    return {"topk_overlap": len(set(members["float32"]) & set(members["float16"])) / k,
            "members_identical_order": members["float32"] == members["float16"],
            "spearman_all": round(spearman, 6), "max_abs_score_diff": float(diff.max()),
            "max_diff_over_score_std": float(diff.max() / s32.std()),
            "score_gap_at_k": float(np.sort(s32)[::-1][k - 1] - np.sort(s32)[::-1][k])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="20000x4x1024,10000x4x8192", help="comma-separated NxCxD")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/lessdb-bench-dtype"))
    ap.add_argument("--signal", type=float, default=0.5, help="weight of the subtask directions vs the noise")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--worker", choices=sorted(FSIDS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.workdir, args.worker)))
        return
    rows = []
    for shape in args.shapes.split(","):
        n, c, d = synthetic_store.parse_shape(shape)
        root = args.workdir / f"ws-{n}x{c}x{d}"
        t0 = time.monotonic()
        if not (args.keep and (root / "built").exists()):
            build(root, n, c, d, args.signal)
            (root / "built").write_text(shape)
        build_s = time.monotonic() - t0
        run_worker(root, "float32")   # warm the page cache for both tables
        run_worker(root, "float16")
        timed = {dt: min((run_worker(root, dt) for _ in range(args.repeats)), key=lambda r: r["seconds"])
                 for dt in ("float32", "float16")}
        row = {"shape": f"{n}x{c}x{d}", "build_s": round(build_s, 1),
               "select_s_f32": round(timed["float32"]["seconds"], 2),
               "select_s_f16": round(timed["float16"]["seconds"], 2),
               "f16_over_f32": round(timed["float16"]["seconds"] / timed["float32"]["seconds"], 2),
               "cpu_s_f32": round(timed["float32"]["cpu_s"], 2), "cpu_s_f16": round(timed["float16"]["cpu_s"], 2),
               "rss_gb_f32": round(timed["float32"]["peak_rss_gb"], 2),
               "rss_gb_f16": round(timed["float16"]["peak_rss_gb"], 2), "k": timed["float32"]["k"],
               **compare(root, timed["float32"], timed["float16"]), "load_average_1m": loadavg()[0]}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if not args.keep:
            shutil.rmtree(root)
    print("\n| shape N×C×d | select s f32 / f16 (ratio) | its CPU s f32 / f16 | peak RSS GB f32 / f16 | top-k overlap "
          "| Spearman | max abs score diff (/ score std) | gap at k |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['select_s_f32']} / {r['select_s_f16']} ({r['f16_over_f32']}) | {r['cpu_s_f32']} / "
              f"{r['cpu_s_f16']} | {r['rss_gb_f32']} / "
              f"{r['rss_gb_f16']} | {r['topk_overlap']:.4f} | {r['spearman_all']} | {r['max_abs_score_diff']:.2e} "
              f"({r['max_diff_over_score_std']:.2e}) | {r['score_gap_at_k']:.2e} |")


if __name__ == "__main__":
    main()
