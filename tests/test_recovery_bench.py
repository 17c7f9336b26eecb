"""bench/recovery.py's --smoke path (tiny model, synthetic skills, real pipeline and real `select`): the recorded
precision@k equals a recount from the selections' members and the candidates' source datasets, the summary is
the mean of the per-skill values inside its bootstrap interval, and a rerun resumes without selecting again."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from lessdb import Workspace
from lessdb.storage import meta_selections as meta
from lessdb.storage.candidates import read_candidates
from lessdb.storage.features import get_feature_set, stored_counts

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import recovery  # noqa: E402
import recovery_data  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_split_keeps_targets_out_of_the_pool_and_rewrites_the_cross_surface():
    sources, skills = recovery_data.synthetic_split(3, per_task=6, n_val=2)
    split = recovery_data.build_split(sources, skills, per_task=6, n_val=2, seed=0)
    assert len(split["pool"]) == 18 and {r["dataset"] for r in split["pool"]} == {f"bigbench/skill{i}" for i in range(3)}
    pool_texts = {(r["prompt"], r["completion"]) for r in split["pool"]}
    for variant in ("same", "cross"):
        for exs in split[variant].values():
            assert len(exs) == 2 and not {(e["prompt"], e["completion"]) for e in exs} & pool_texts
    assert all(e["completion"].startswith("The answer is: ") for exs in split["cross"].values() for e in exs)
    assert all(e["prompt"].startswith("Skill ") for exs in split["same"].values() for e in exs)
    overlap = {v: recovery_data.lexical_overlap(split, v) for v in ("same", "cross")}
    assert overlap["cross"]["own"] < overlap["same"]["own"]


def test_bootstrap_interval():
    assert recovery.bootstrap_ci(np.full(7, 0.25)) == (0.25, 0.25)
    lo, hi = recovery.bootstrap_ci(np.array([0.0, 1.0, 0.5, 0.2]))
    assert 0.0 <= lo < 0.425 < hi <= 1.0


def test_smoke_run_counts_recovery_through_real_selections(tmp_path):
    argv = ["--smoke", "--workspace", str(tmp_path / "ws"), "--n-skills", "2", "--per-task", "5", "--n-val", "2",
            "--methods", "random,bm25,hybrid", "--json-out", str(tmp_path / "r.json"), "--quiet"]
    result = recovery.main(argv)
    rows = result["rows"]
    assert len(rows) == 3 * 2 * 2
    ws = Workspace.open(tmp_path / "ws")
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
            assert s["mean"] == pytest.approx(np.mean(per)) and s["ci95"][0] <= s["mean"] <= s["ci95"][1]
    # the synthetic same-surface targets share their skill's template: BM25 must find them
    assert result["summary"]["same"]["bm25"]["mean"] == 1.0
    # a rerun resumes: same rows, no new selection recorded
    n = len(meta.list_selections(ws))
    assert recovery.main(argv)["rows"] == rows and len(meta.list_selections(ws)) == n


def test_feature_ablation_at_one_checkpoint_and_rds(tmp_path):
    """--feature-checkpoints 1: the sketch-seed ablation is featurized at checkpoint 1 only, its selections use
    exactly that checkpoint and that feature set (seed 1, float32 like the main set), and the label says so;
    RDS+ runs through the same select path."""
    argv = ["--smoke", "--workspace", str(tmp_path / "ws"), "--n-skills", "2", "--per-task", "4", "--n-val", "2",
            "--methods", "less:ckpt1,less:sketch-seed1,rds+", "--feature-checkpoints", "1",
            "--json-out", str(tmp_path / "r.json"), "--quiet"]
    result = recovery.main(argv)
    assert set(result["summary"]["same"]) == {"less:ckpt1", "less:sketch-seed1@ckpt1", "rds+"}
    ws = Workspace.open(tmp_path / "ws")
    by_method = {}
    for r in result["rows"]:
        by_method.setdefault(r["method"], []).append(meta.get_selection(ws, r["selection_id"]))
    main_fs = {s["feature_set_id"] for s in by_method["less:ckpt1"]}
    seed_fs = {s["feature_set_id"] for s in by_method["less:sketch-seed1@ckpt1"]}
    assert len(main_fs) == len(seed_fs) == 1 and main_fs != seed_fs
    assert all(s["checkpoints"] == [1] for s in by_method["less:sketch-seed1@ckpt1"] + by_method["less:ckpt1"])
    info = get_feature_set(ws, seed_fs.pop())
    assert (info.sketch_seed, info.dtype) == (1, "float32")
    assert {epoch for (role, epoch) in stored_counts(ws, info.lance_table) if role == "candidate"} == {1}
    assert all(s["method"] == "rds+" for s in by_method["rds+"]) and len(by_method["rds+"]) == 4


def test_warmup_ablation_uses_its_own_run_and_keeps_the_main_one(tmp_path):
    """--warmup-ablations: the lr variant gets its own warmup run (lr 8e-5, otherwise the main run's settings),
    its selections use that run's feature set, and the main methods keep using the main run."""
    argv = ["--smoke", "--workspace", str(tmp_path / "ws"), "--n-skills", "2", "--per-task", "4", "--n-val", "2",
            "--methods", "less:ckpt1,less:warmup-lr8e-5", "--warmup-ablations", "--feature-checkpoints", "1",
            "--json-out", str(tmp_path / "r.json"), "--quiet"]
    result = recovery.main(argv)
    assert set(result["summary"]["same"]) == {"less:ckpt1", "less:warmup-lr8e-5@ckpt1"}
    ws = Workspace.open(tmp_path / "ws")
    runs = {}
    for r in result["rows"]:
        runs.setdefault(r["method"], set()).add(meta.get_selection(ws, r["selection_id"])["run_id"])
    assert runs["less:warmup-lr8e-5@ckpt1"] == {recovery.ABLATION_RUN_PREFIX + "warmup-lr8e-5"}
    (main_run,) = runs["less:ckpt1"]
    assert not main_run.startswith(recovery.ABLATION_RUN_PREFIX)
    from lessdb.storage.meta_runs import get_run
    variant, main = get_run(ws, recovery.ABLATION_RUN_PREFIX + "warmup-lr8e-5"), get_run(ws, main_run)
    lr = lambda run: run["config"]["warmup"]["training"]["lr"]   # noqa: E731
    assert lr(variant) == 8e-5 and lr(main) != 8e-5
    assert main["n_examples"] == variant["n_examples"]            # same subset size: only the lr differs
