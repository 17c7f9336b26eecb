"""The task-recovery benchmark's --smoke path, run as a user runs it (`python -m bench.recovery --smoke` in a child
process: tiny model, synthetic skills, real pipeline and real `select`), judged from its JSON output and the
workspace it leaves: the pool and target files keep targets out of the pool, the recorded precision@k equals a
recount from the selections' members and the candidates' source datasets, the summary is the mean of the
per-skill values inside its bootstrap interval, and a rerun resumes without selecting again. Tests never import
bench/: they check what the benchmark prints and records."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lessdb import Workspace
from lessdb.storage import meta_selections as meta
from lessdb.storage.candidates import read_candidates
from lessdb.storage.features import get_feature_set, stored_counts
from lessdb.storage.meta_runs import get_run

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow   # each test runs the benchmark (tiny warmup + featurize + selections): 12-20 CPU s


def recovery(tmp_path: Path, *args: str) -> dict:
    """`python -m bench.recovery --smoke ...` from the repository root; its JSON result."""
    out = tmp_path / "r.json"
    argv = [sys.executable, "-m", "bench.recovery", "--smoke", "--workspace", str(tmp_path / "ws"), "--threads", "1",
            "--json-out", str(out), "--quiet", *args]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1", LESSDB_PROGRESS="0"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_smoke_run_counts_recovery_through_real_selections(tmp_path):
    args = ("--n-skills", "2", "--per-task", "5", "--n-val", "2", "--methods", "random,bm25,hybrid")
    result = recovery(tmp_path, *args)
    rows = result["rows"]
    assert len(rows) == 3 * 2 * 2 and result["skills"] == ["skill0", "skill1"]

    # the files it ingested and added as tasks: targets are held out of the pool, the cross surface rewritten
    root = tmp_path / "ws"
    pool = read_jsonl(root / "bigbench-pool.jsonl")
    assert len(pool) == 2 * 5 and {r["dataset"] for r in pool} == {"bigbench/skill0", "bigbench/skill1"}
    pool_texts = {(r["prompt"], r["completion"]) for r in pool}
    targets = {(v, s): read_jsonl(root / "tasks" / f"{v}-{s}.jsonl")
               for v in ("same", "cross") for s in result["skills"]}
    for (variant, skill), exs in targets.items():
        assert len(exs) == 2 and {e["subtask"] for e in exs} == {skill}
        assert not {(e["prompt"], e["completion"]) for e in exs} & pool_texts
        if variant == "cross":
            assert all(e["completion"].startswith("The answer is: ") for e in exs)
        else:
            assert all(e["prompt"].startswith("Skill ") for e in exs)
    overlap = result["lexical_overlap"]
    assert overlap["cross"]["own"] < overlap["same"]["own"]

    # precision@k recounted from the recorded selections and the candidates' source datasets
    ws = Workspace.open(root)
    cands = read_candidates(ws, pool="recovery", columns=["source_dataset"])
    dataset = dict(zip(cands.column("id").to_pylist(), cands.column("source_dataset").to_pylist()))
    for r in rows:
        members = meta.selection_members(ws, r["selection_id"]).column("candidate_id").to_pylist()
        assert len(members) == r["k"] == 5
        assert r["hits"] == sum(dataset[c] == f"bigbench/{r['skill']}" for c in members)
        assert r["precision"] == r["hits"] / r["k"]
    for variant, summary in result["summary"].items():
        for method in ("random", "bm25", "hybrid"):
            s = summary[method]
            per = [r["precision"] for r in rows if r["method"] == method and r["variant"] == variant]
            assert s["mean"] == pytest.approx(np.mean(per))
            # a percentile interval of resampled means: inside the range of the values, around their mean
            assert min(per) <= s["ci95"][0] <= s["mean"] <= s["ci95"][1] <= max(per)
            if len(set(per)) == 1:
                assert s["ci95"] == [per[0], per[0]]
    # the synthetic same-surface targets share their skill's template: BM25 must find them
    assert result["summary"]["same"]["bm25"]["mean"] == 1.0
    # a rerun resumes: same rows, no new selection recorded
    n = len(meta.list_selections(ws))
    assert recovery(tmp_path, *args)["rows"] == rows and len(meta.list_selections(ws)) == n


def test_feature_ablation_at_one_checkpoint_and_rds(tmp_path):
    """--feature-checkpoints 1: the sketch-seed ablation is featurized at checkpoint 1 only, its selections use
    exactly that checkpoint and that feature set (seed 1, float32 like the main set), and the label says so;
    RDS+ runs through the same select path."""
    result = recovery(tmp_path, "--n-skills", "2", "--per-task", "4", "--n-val", "2",
                      "--methods", "less:ckpt1,less:sketch-seed1,rds+", "--feature-checkpoints", "1")
    assert set(result["summary"]["same"]) == {"less:ckpt1", "less:sketch-seed1@ckpt1", "rds+"}
    ws = Workspace.open(tmp_path / "ws")
    by_method = {}
    for r in result["rows"]:
        by_method.setdefault(r["method"], []).append(meta.get_selection(ws, r["selection_id"]))
    main_fs = {s["feature_set_id"] for s in by_method["less:ckpt1"]}
    seed_fs = {s["feature_set_id"] for s in by_method["less:sketch-seed1@ckpt1"]}
    assert len(main_fs) == len(seed_fs) == 1 and main_fs != seed_fs
    assert seed_fs == {result["feature_sets"]["seed1"]} and main_fs == {result["feature_sets"]["main"]}
    assert all(s["checkpoints"] == [1] for s in by_method["less:sketch-seed1@ckpt1"] + by_method["less:ckpt1"])
    info = get_feature_set(ws, seed_fs.pop())
    assert (info.sketch_seed, info.dtype) == (1, "float32")
    assert {epoch for (role, epoch) in stored_counts(ws, info.lance_table) if role == "candidate"} == {1}
    assert all(s["method"] == "rds+" for s in by_method["rds+"]) and len(by_method["rds+"]) == 4


def test_warmup_ablation_uses_its_own_run_and_keeps_the_main_one(tmp_path):
    """--warmup-ablations: the lr variant gets its own warmup run (lr 8e-5, otherwise the main run's settings),
    its selections use that run's feature set, and the main methods keep using the main run."""
    result = recovery(tmp_path, "--n-skills", "2", "--per-task", "4", "--n-val", "2",
                      "--methods", "less:ckpt1,less:warmup-lr8e-5", "--warmup-ablations", "--feature-checkpoints", "1")
    assert set(result["summary"]["same"]) == {"less:ckpt1", "less:warmup-lr8e-5@ckpt1"}
    ws = Workspace.open(tmp_path / "ws")
    runs = {}
    for r in result["rows"]:
        runs.setdefault(r["method"], set()).add(meta.get_selection(ws, r["selection_id"])["run_id"])
    variant_run = result["warmup_runs"]["warmup-lr8e-5"]
    assert runs["less:warmup-lr8e-5@ckpt1"] == {variant_run} and runs["less:ckpt1"] == {result["run_id"]}
    assert variant_run != result["run_id"]
    variant, main = get_run(ws, variant_run), get_run(ws, result["run_id"])
    lr = lambda run: run["config"]["warmup"]["training"]["lr"]   # noqa: E731
    assert lr(variant) == 8e-5 and lr(main) != 8e-5
    assert main["n_examples"] == variant["n_examples"]            # same subset size: only the lr differs
