"""Task recovery: does a selector find the pool examples of the task its validation examples come from? (issue 16)

A pool of BIG-bench tasks (`per_task` examples of each skill in bench/recovery_data.py, read from the `bigbench`
1.0.0 sdist, --bigbench-sdist) plus short ShareGPT conversations as distractors. For every skill and two variants,
a target task of `n_val` held-out examples:

  same    validation examples from the pool's own task file, same rendering (shared template);
  cross   the same skill from a sibling BIG-bench task, rewritten (our instruction wording, one-line choices,
          "The answer is: X"): low lexical overlap; the word-set Jaccard reached is printed and recorded.

Every method selects k = (the skill's examples in the filtered pool) through the real `lessdb.selection.select`
path (filter -> score -> top k -> recorded selection); precision@k = the share of the k that belong to the
skill. Reported per skill and as a mean over skills with a 95% bootstrap interval (10,000 resamples of the
skills), paired differences hybrid − BM25 and hybrid − LESS, and the seconds of each method.

The pipeline is the real one, in process: ingest -> warmup (--preset cpu-small, 5%) -> featurize (every
checkpoint, CountSketch d 8192) -> task add -> select. Everything is resumed from --workspace.

    python -m bench.recovery --bigbench-sdist /tmp/bigbench-1.0.0.tar.gz [--per-task 20] [--n-val 3]
                             [--sharegpt 400] [--skills color,math_word,...] [--ablations] [--threads 1]
    python -m bench.recovery --smoke        # tiny random model, synthetic skills: checks the plumbing (~1 min)

The `bigbench` 1.0.0 sdist is no longer on the package registry (only 0.0.1, without task data): pass a copy
with --bigbench-sdist FILE. --smoke needs no download.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench import recovery_data as rd
from bench.common import OUT, bigbench_sdist, loadavg, logger, write_json

# (label, SelectConfig overrides, feature-set key): the methods every run compares ...
METHODS = [
    ("random", {"method": "random", "seed": 0}, None),
    ("bm25", {"method": "bm25"}, None),
    ("dsir", {"method": "dsir"}, None),
    ("rds", {"method": "rds"}, None),        # hidden states of the warmup's base model (embedded once, stored)
    ("rds+", {"method": "rds+"}, None),
    ("less", {"method": "less"}, "main"),
    ("hybrid", {"method": "hybrid", "method_params": {"fusion": "rrf"}}, "main"),
    ("hybrid-zscore", {"method": "hybrid", "method_params": {"fusion": "zscore"}}, "main"),
]
# ... and LESS's selection-time knobs (--ablations; the same features, so they cost seconds)
ABLATIONS = [
    ("less:ckpt1", {"method": "less", "checkpoints": [1]}, "main"),
    ("less:ckpt2", {"method": "less", "checkpoints": [2]}, "main"),
    ("less:reference-agg", {"method": "less", "val_aggregation": "reference"}, "main"),
    ("less:unnormalized", {"method": "unnormalized"}, "main"),
]
# feature-set variants (--feature-ablations; each is one more featurize pass over the pool: minutes)
# (float32 like the main set, so that only the named knob differs)
FEATURE_SETS = {"main": {}, "d2048": {"dim": 2048, "dtype": "float32"}, "seed1": {"seed": 1, "dtype": "float32"},
                "sgd": {"grad_kind": "sgd", "dtype": "float32"}}
FEATURE_ABLATIONS = [
    ("less:d2048", {"method": "less"}, "d2048"),
    ("less:sketch-seed1", {"method": "less"}, "seed1"),
    ("sgd-features", {"method": "sgd"}, "sgd"),
]
# warmup variants (--warmup-ablations; each is a new warmup run plus one featurize pass): the paper's knobs that
# decide which checkpoints and Adam moments LESS sees; the main run is cpu-small at 5% with the paper's lr 2e-5
WARMUP_VARIANTS = {"warmup-lr8e-5": {"lr": 8e-5}, "warmup-10pct": {"percentage": 0.10}}
WARMUP_ABLATIONS = [(f"less:{key}", {"method": "less"}, key) for key in WARMUP_VARIANTS]
ABLATION_RUN_PREFIX = "recovery-ablation-"


log = logger("recovery")


# -- building the workspace ---------------------------------------------------------------------------------------
def build_split(args) -> dict:
    if args.smoke:
        sources, skills = rd.synthetic_split(args.n_skills, args.per_task, args.n_val)
    else:
        # always drawn for every skill (the same pool and held-out examples whichever targets are scored)
        skills = dict(rd.SKILLS)
        wanted = sorted({src for pair in skills.values() for src in pair[:2]})
        sources = rd.load_sources(bigbench_sdist(args.bigbench_sdist, OUT / "cache", log), wanted, args.cache)
    split = rd.build_split(sources, skills, args.per_task, args.n_val, seed=0)
    if args.skills:
        unknown = set(args.skills) - set(split["same"])
        if unknown:
            raise SystemExit(f"--skills: unknown {sorted(unknown)} (known: {', '.join(split['same'])})")
        for variant in ("same", "cross"):
            split[variant] = {s: split[variant][s] for s in args.skills}
    return split




def prepare(ws, split: dict, args, timings: dict) -> str:
    """Pool, warmup run, feature sets and target tasks (each step skipped when already done). Returns the run."""
    from lessdb.tasks import catalog as tasks
    from lessdb.runs.config import build_warmup_config
    from lessdb.featurize import FeaturizeConfig, featurize_run
    from lessdb.ingest.pipeline import ingest_builtin, ingest_files
    from lessdb.storage import meta_runs
    from lessdb.storage.meta_selections import pools
    from lessdb.runs.warmup import resume_warmup, run_warmup

    root = Path(ws.root)
    if args.pool not in pools(ws):
        path = root / "bigbench-pool.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in split["pool"]))
        ingest_files(ws, [path], pool=args.pool, progress=False)
        if args.sharegpt:
            ingest_builtin(ws, "sharegpt", pool=args.pool, limit=args.sharegpt, progress=False)
    # the main warmup's settings; a --warmup-ablations run changes one of them (WARMUP_VARIANTS)
    main_warmup = {"percentage": 0.05, "seed": 0, "device": "cpu",
                   **({"model": "tiny", "max_examples": 8, "max_seq_length": 128} if args.smoke else {})}
    status = {r["run_id"]: r["status"] for r in meta_runs.list_runs(ws, kind="warmup", pool=args.pool)}
    runs = [r for r, st in status.items() if st == "complete" and not r.startswith(ABLATION_RUN_PREFIX)]
    if runs:
        run_id = runs[-1]
    else:
        t = time.perf_counter()
        cfg = build_warmup_config(args.pool, preset="cpu-small", **main_warmup)
        run_id = run_warmup(ws, cfg, progress=not args.quiet).run_id
        timings["warmup"] = time.perf_counter() - t
    args.runs = {}
    for key in args.feature_sets:
        t = time.perf_counter()
        key_run = run_id
        if key in WARMUP_VARIANTS:   # its own warmup (resumed/reused by name), then the main feature settings
            key_run = ABLATION_RUN_PREFIX + key
            if key_run not in status:
                cfg = build_warmup_config(args.pool, preset="cpu-small", run_id=key_run,
                                          **{**main_warmup, **WARMUP_VARIANTS[key]})
                run_warmup(ws, cfg, progress=not args.quiet)
            elif status[key_run] != "complete":
                resume_warmup(ws, key_run)
            timings[f"warmup:{key}"] = time.perf_counter() - t
            args.runs[key] = key_run
        opts = {"dim": args.dim, **FEATURE_SETS.get(key, {"dtype": "float32"})}
        if key != "main" and args.feature_checkpoints:
            opts["checkpoints"] = tuple(args.feature_checkpoints)
        s = featurize_run(ws, FeaturizeConfig(run_id=key_run, where=args.where, progress=not args.quiet, **opts))
        timings[f"featurize:{key}"] = time.perf_counter() - t
        args.fsids[key] = s.feature_set_id
    for variant in ("same", "cross"):
        for skill, exs in split[variant].items():
            path = root / "tasks" / f"{variant}-{skill}.jsonl"
            path.parent.mkdir(exist_ok=True)
            path.write_text("".join(json.dumps({"subtask": skill, **e}) + "\n" for e in exs))
            tasks.add_tasks(ws, name=f"rec-{variant}-{skill}", file=path, replace=True)
    return run_id


# -- selecting and scoring ------------------------------------------------------------------------------------------
def skill_of_candidates(ws, pool: str, where: str | None) -> dict[str, str]:
    """candidate id -> skill ("" for distractors) over the filtered pool."""
    from lessdb.storage.candidates import read_candidates, select_candidate_ids

    keep = set(select_candidate_ids(ws, pool, where))
    t = read_candidates(ws, pool=pool, columns=["source_dataset"])
    return {cid: (ds.split("/", 1)[1] if ds and ds.startswith("bigbench/") else "")
            for cid, ds in zip(t.column("id").to_pylist(), t.column("source_dataset").to_pylist()) if cid in keep}


def run_selections(ws, run_id: str, skills: list[str], methods: list, args, skill_of: dict) -> list[dict]:
    """One selection per (method, variant, skill), recorded under a stable name; results cached per name in
    the workspace (results.jsonl), so a rerun only does what is missing."""
    from lessdb.selection import SelectConfig, select

    cache = Path(ws.root) / (f"results-{args.tag}.jsonl" if args.tag else "results.jsonl")
    done = {}
    if cache.exists():
        for line in cache.read_text().splitlines():
            r = json.loads(line)
            done[r["name"]] = r
    k_of = {s: sum(1 for v in skill_of.values() if v == s) for s in skills}
    out = []
    # target by target, every method: a target's validation gradients (the slow part) are computed by its first
    # gradient method and cached for the others, so a run cut short has complete rows for the targets it reached
    for label, overrides, fs_key, variant, skill in sorted(
            ((*m, v, s) for m in methods for v in ("same", "cross") for s in skills),
            key=lambda t: (t[3] != "same", skills.index(t[4]))):
        name = (f"{args.tag}|" if args.tag else "") + f"{label}|{variant}|{skill}"
        if name not in done:
            cfg = SelectConfig(task=f"rec-{variant}-{skill}", pool=args.pool, run=args.runs.get(fs_key, run_id),
                               count=k_of[skill],
                               where=args.where, name=name.replace("|", "--").replace(":", "-"),
                               progress=False, feature_set=args.fsids.get(fs_key) if fs_key else None,
                               **overrides)
            res = select(ws, cfg)
            hits = sum(1 for m in res.members if skill_of.get(m.candidate_id) == skill)
            done[name] = {"name": name, "method": label, "variant": variant, "skill": skill,
                          "k": res.k, "hits": hits, "precision": hits / res.k, "seconds": res.seconds,
                          "selection_id": res.selection_id}
            with cache.open("a") as fh:
                fh.write(json.dumps(done[name]) + "\n")
        out.append(done[name])
    return out


def bootstrap_ci(values: np.ndarray, n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean over resamples of the entries (skills) with replacement."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarise(rows: list[dict], skills: list[str]) -> dict:
    table: dict = {}
    for variant in ("same", "cross"):
        by_method: dict[str, dict] = {}
        for r in rows:
            if r["variant"] == variant:
                by_method.setdefault(r["method"], {})[r["skill"]] = r
        summary = {}
        for method, per in by_method.items():
            p = np.array([per[s]["precision"] for s in skills])
            lo, hi = bootstrap_ci(p)
            summary[method] = {"mean": float(p.mean()), "ci95": [lo, hi],
                               "seconds": float(sum(per[s]["seconds"] for s in skills)),
                               "per_skill": {s: per[s]["precision"] for s in skills}}
        for a, b in (("hybrid", "bm25"), ("hybrid", "less"), ("hybrid-zscore", "bm25"), ("hybrid-zscore", "less")):
            if a in by_method and b in by_method:
                d = np.array([by_method[a][s]["precision"] - by_method[b][s]["precision"] for s in skills])
                summary[f"{a} − {b}"] = {"mean": float(d.mean()), "ci95": list(bootstrap_ci(d))}
        table[variant] = summary
    return table


def print_table(summary: dict, skills: list[str]) -> None:
    for variant, rows in summary.items():
        print(f"\n{variant} surface: precision@k, mean over {len(skills)} skills [95% bootstrap CI], selection seconds")
        for method, r in rows.items():
            secs = f"{r['seconds']:8.1f}s" if "seconds" in r else ""
            print(f"  {method:<22}{r['mean']:7.3f}  [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]  {secs}")


def markdown(result: dict) -> str:
    """The recorded result as the tables of bench/RESULTS.md (method rows; then precision per skill)."""
    skills = result["skills"]
    ov = result["lexical_overlap"]
    lines = [f"{len(skills)} skills, pool {result['pool_size']} candidates ({result['distractors']} ShareGPT), "
             f"k = each skill's pool examples; word-set Jaccard of validation examples with their own skill's pool "
             f"/ other skills': same {ov['same']['own']:.3f} / {ov['same']['other']:.3f}, cross "
             f"{ov['cross']['own']:.3f} / {ov['cross']['other']:.3f}", "",
             "| method | same surface P@k [95% CI] | cross surface P@k [95% CI] | select s (same + cross) |",
             "|---|---|---|---|"]
    same, cross = result["summary"]["same"], result["summary"]["cross"]
    for m in same:
        secs = f"{same[m]['seconds'] + cross[m]['seconds']:.0f}" if "seconds" in same[m] else ""
        lines.append(f"| {m} | {same[m]['mean']:.3f} [{same[m]['ci95'][0]:.3f}, {same[m]['ci95'][1]:.3f}] | "
                     f"{cross[m]['mean']:.3f} [{cross[m]['ci95'][0]:.3f}, {cross[m]['ci95'][1]:.3f}] | {secs} |")
    lines += ["", "| method | variant | " + " | ".join(skills) + " |", "|---|---|" + "---|" * len(skills)]
    for m in same:
        for variant, rows in (("same", same), ("cross", cross)):
            if "per_skill" in rows[m]:
                lines.append(f"| {m} | {variant} | " + " | ".join(f"{rows[m]['per_skill'][s]:.2f}" for s in skills)
                             + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, default=Path("/tmp/lessdb-recovery"))
    ap.add_argument("--pool", default="recovery")
    ap.add_argument("--bigbench-sdist", type=Path, default=None)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/lessdb-recovery-bigbench"),
                    help="extracted task.json files (read from the tarball once)")
    ap.add_argument("--skills", type=lambda s: [x for x in s.split(",") if x], default=None,
                    help=f"target skills scored (default all {len(rd.SKILLS)}: {','.join(rd.SKILLS)}); the pool "
                         "always holds every skill (restrict it with --where)")
    ap.add_argument("--per-task", type=int, default=20)
    ap.add_argument("--n-val", type=int, default=3)
    ap.add_argument("--sharegpt", type=int, default=400, help="ShareGPT conversations ingested (then filtered)")
    ap.add_argument("--where", default="total_chars < 1500", help="filter of every step (the effective pool)")
    ap.add_argument("--dim", type=int, default=8192)
    ap.add_argument("--ablations", action="store_true", help="also LESS's selection-time knobs")
    ap.add_argument("--warmup-ablations", action="store_true",
                    help="also warmups with lr 8e-5 (4x the paper's) and on 10%% of the pool (2x), each featurized "
                         "like the main set (one warmup and one featurize pass each; --feature-checkpoints applies)")
    ap.add_argument("--feature-ablations", action="store_true",
                    help="also d 2048, sketch seed 1, SGD features (one featurize pass each)")
    ap.add_argument("--feature-checkpoints", type=lambda s: [int(x) for x in s.split(",") if x], default=None,
                    help="featurize the --feature-ablations sets at these checkpoints only (e.g. 1: half the cost); "
                         "their selections then use them too and are labelled @ckpt1 (compare with less:ckpt1)")
    ap.add_argument("--methods", type=lambda s: [x for x in s.split(",") if x], default=None,
                    help="only these method labels (default: all that the flags ask for)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--smoke", action="store_true", help="tiny random model, synthetic skills")
    ap.add_argument("--n-skills", type=int, default=4, help="--smoke: synthetic skills")
    ap.add_argument("--tag", default="", help="names this run's selections and results (several runs, e.g. other "
                                             "--where or --skills, in one workspace)")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None, help="only print the tables of a recorded result JSON")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return {}
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.smoke:
        if args.workspace == Path("/tmp/lessdb-recovery"):
            args.workspace = Path("/tmp/lessdb-recovery-smoke")
        args.per_task = min(args.per_task, 8)
        args.sharegpt = min(args.sharegpt, 20)
        args.where = None
        args.dim = min(args.dim, 256)
    from lessdb import Workspace

    t0 = time.perf_counter()
    log(f"load average {loadavg()}; workspace {args.workspace}")
    split = build_split(args)
    skills = list(split["same"])
    overlap = {v: rd.lexical_overlap(split, v) for v in ("same", "cross")}
    log("word-set Jaccard with own / other skills' pool: " +
        ", ".join(f"{v} {o['own']:.3f} / {o['other']:.3f}" for v, o in overlap.items()))
    ws = Workspace.open(args.workspace) if (args.workspace / "lessdb.duckdb").exists() else \
        Workspace.init(args.workspace)
    methods = (list(METHODS) + (ABLATIONS if args.ablations else [])
               + (FEATURE_ABLATIONS if args.feature_ablations else [])
               + (WARMUP_ABLATIONS if args.warmup_ablations else []))
    if args.methods:
        known = {m[0] for m in METHODS + ABLATIONS + FEATURE_ABLATIONS + WARMUP_ABLATIONS}
        unknown = set(args.methods) - known
        if unknown:
            raise SystemExit(f"--methods: unknown {sorted(unknown)} (known: {', '.join(sorted(known))})")
        methods = [m for m in METHODS + ABLATIONS + FEATURE_ABLATIONS + WARMUP_ABLATIONS if m[0] in args.methods]
    if args.feature_checkpoints:   # the feature ablations at fewer checkpoints: say so in their labels
        tag = "@ckpt" + "+".join(map(str, args.feature_checkpoints))
        methods = [(label + tag, {**o, "checkpoints": list(args.feature_checkpoints)}, fs)
                   if fs not in (None, "main") else (label, o, fs) for label, o, fs in methods]
    order = [*FEATURE_SETS, *WARMUP_VARIANTS]
    args.feature_sets = sorted({m[2] for m in methods if m[2]}, key=order.index)
    args.fsids = {}
    timings: dict = {}
    run_id = prepare(ws, split, args, timings)
    skill_of = skill_of_candidates(ws, args.pool, args.where)
    log(f"pool {args.pool}: {len(skill_of)} candidates after the filter "
        f"({sum(1 for v in skill_of.values() if not v)} distractors); run {run_id}")
    rows = run_selections(ws, run_id, skills, methods, args, skill_of)
    summary = summarise(rows, skills)
    result = {"skills": skills, "per_task": args.per_task, "n_val": args.n_val, "where": args.where,
              "pool_size": len(skill_of), "distractors": sum(1 for v in skill_of.values() if not v),
              "lexical_overlap": {v: {k: o[k] for k in ("own", "other")} for v, o in overlap.items()},
              "lexical_overlap_per_skill": {v: o["per_skill"] for v, o in overlap.items()},
              "run_id": run_id, "warmup_runs": args.runs, "feature_sets": args.fsids,
              "timings_s": timings, "seconds": time.perf_counter() - t0, "load_average_end": loadavg(),
              "summary": summary, "rows": rows}
    out = write_json(args.json_out or OUT / ("recovery-smoke.json" if args.smoke else "recovery.json"), result)
    print_table(summary, skills)
    log(f"total {time.perf_counter() - t0:.0f}s; results in {out}")
    return result


if __name__ == "__main__":
    main()
