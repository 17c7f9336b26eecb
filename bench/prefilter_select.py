"""Benchmark `select --prefilter LOWDxFACTOR` against the plain select, side by side in one run.

On the synthetic store of bench/select_speed.py (N×C×d float16 unit vectors, 27 subtasks × 3 validation
examples), each in a fresh process with the page cache warm:
  plain      `select --count K` (every candidate's full vector read);
  fold       `lessdb fold --low-dim D'` (the one-off pass that stores the folded copy; featurize keeps it current);
  prefilter  `select --count K --prefilter D'xF` for each setting (the copy already stored).
It reports wall seconds, bytes the process read (/proc/self/io rchar: page-cache hits included, i.e. what Lance
asked the filesystem for), peak RSS, and recall of the plain selection's members. Synthetic vectors have no
structure shared by candidates and queries, so recall here is a floor, not real-feature recall; `--real WS`
also measures recall on a real workspace (its newest LESS feature set and task, every candidate scored).

    python -m bench.prefilter_select --shape 270679x1x8192 --k-pct 0.05 --settings 1024x1,1024x2,2048x2,1024x20
    python -m bench.prefilter_select --real /tmp/qs-fresh-ws --real-task bbh --settings 64x2,256x2
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from bench import synthetic_store
from bench.common import loadavg, peak_rss_gb, run_worker as run_bench_worker
from bench.select_speed import FSID, TASK, build, is_built   # the same synthetic store


def _io() -> dict:
    with open("/proc/self/io") as fh:
        return {k: int(v) for k, v in (line.split(": ") for line in fh)}


def worker(kind: str, root: Path, k: int, setting: str | None, task: str | None) -> dict:
    """One measured step in this (fresh) process."""
    import importlib

    from lessdb import Workspace

    for heavy in ("lessdb.selection.select", "lessdb.selection.scoring", "lessdb.selection.two_stage",
                  "lessdb.featurize.folding", "lessdb.storage.features", "lessdb.featurize.job"):
        importlib.import_module(heavy)   # imports are not part of the timing
    sel = importlib.import_module("lessdb.selection.select")
    gradient = importlib.import_module("lessdb.selection.methods.gradient")
    ws = Workspace.open(root)
    synthetic = task is None
    if synthetic:   # validation rows are stored by the build (bench.select_speed)
        gradient.compute_validation_features = lambda *a, **kw: None
    io0, t0 = _io(), time.monotonic()
    out: dict = {"kind": kind, "setting": setting}
    if kind == "fold":
        fsid = FSID if synthetic else [f for f in ws.feature_sets() if f["grad_kind"] == "adam"][-1][
            "feature_set_id"]
        out.update(ws.fold(fsid, int(setting.split("x")[0]), progress=False))
    else:
        cfg = sel.SelectConfig(task=task or TASK, count=k, progress=False,
                               prefilter=setting, val_truncation="right" if synthetic else "left")
        res = sel.select(ws, cfg)
        out.update(members=[m.candidate_id for m in res.members], scores=[m.score for m in res.members],
                   n_scored=res.n_scored, params=res.provenance["params"].get("prefilter"))
    io1 = _io()
    out.update(seconds=time.monotonic() - t0, rchar=io1["rchar"] - io0["rchar"],
               read_bytes=io1["read_bytes"] - io0["read_bytes"],
               peak_rss_gb=peak_rss_gb())
    return out


def run_worker(kind: str, root: Path, k: int, setting: str | None = None, task: str | None = None) -> dict:
    args = ["--worker", kind, "--root", root, "--k", k]
    args += ["--setting", setting] if setting else []
    args += ["--real-task", task] if task else []
    return run_bench_worker("prefilter_select", *args)


def compare(root: Path, k: int, settings: list[str], task: str | None, repeats: int) -> list[dict]:
    best = lambda runs: min(runs, key=lambda r: r["seconds"])   # noqa: E731
    plain = best([run_worker("select", root, k, None, task) for _ in range(repeats)])
    rows = [{"step": "plain", "seconds": plain["seconds"], "rchar_gb": plain["rchar"] / 1e9, "recall": 1.0,
             "rss_gb": plain["peak_rss_gb"], "n_scored": plain["n_scored"]}]
    exact = dict(zip(plain["members"], plain["scores"]))
    for low in sorted({s.split("x")[0] for s in settings}, key=int):
        f = run_worker("fold", root, k, f"{low}x1", task)
        rows.append({"step": f"fold to {low} (one-off)", "seconds": f["seconds"], "rchar_gb": f["rchar"] / 1e9,
                     "rss_gb": f["peak_rss_gb"], "rows": f["n_rows"]})
    for s in settings:
        r = best([run_worker("select", root, k, s, task) for _ in range(repeats)])
        same = [c for c in r["members"] if c in exact]
        assert all(r["scores"][r["members"].index(c)] == exact[c] for c in same), "a shared member's score differs"
        rows.append({"step": f"prefilter {s}", "seconds": r["seconds"], "rchar_gb": r["rchar"] / 1e9,
                     "recall": len(same) / len(exact), "rss_gb": r["peak_rss_gb"], "n_scored": r["n_scored"],
                     "shortlist": r["params"]["shortlist"], "full_rows_read": r["params"]["full_rows_read"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="50000x1x8192", help="NxCxD of the synthetic store")
    ap.add_argument("--k-pct", type=float, default=0.05, help="k as a share of N")
    ap.add_argument("--settings", default="1024x1,1024x2,1024x20")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/lessdb-bench-prefilter"))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the synthetic store (a later run reuses it)")
    ap.add_argument("--real", type=Path, help="also (or only, with --shape none) a real workspace, copied first")
    ap.add_argument("--real-task", default="bbh")
    ap.add_argument("--real-k", type=int, default=5, help="k on the real workspace")
    ap.add_argument("--worker", choices=["select", "fold"], help=argparse.SUPPRESS)
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--k", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--setting", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.root, args.k, args.setting,
                                args.real_task if args.real_task != "-" else None)))
        return
    settings = args.settings.split(",")
    out = {"load_average_1m_start": loadavg()[0]}
    if args.shape != "none":
        n, c, d = synthetic_store.parse_shape(args.shape)
        root = args.workdir / f"ws-{n}x{c}x{d}"
        t0 = time.monotonic()
        if not is_built(root, n, c, d):
            build(root, n, c, d, compact=False)
        print(json.dumps({"built": str(root), "seconds": round(time.monotonic() - t0, 1)}), file=sys.stderr)
        k = int(args.k_pct * n)
        out["synthetic"] = {"shape": args.shape, "k": k, "rows": compare(root, k, settings, "-", args.repeats),
                            "full_vector_gb": n * c * d * 2 / 1e9}
        if not args.keep:
            shutil.rmtree(root)
    if args.real:
        root = args.workdir / "real-ws"
        if root.exists():
            shutil.rmtree(root)
        shutil.copytree(args.real, root)
        k = args.real_k
        out["real"] = {"workspace": str(args.real), "task": args.real_task, "k": k,
                       "rows": compare(root, k, settings, args.real_task, 1)}
        shutil.rmtree(root)
    out["load_average_1m_end"] = loadavg()[0]
    print(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
