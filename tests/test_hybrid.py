"""`select --method hybrid`: LESS and BM25 fused per subtask (lessdb/selection/fusion.py).

The fusion math is checked against brute-force formulas; on a real workspace (tiny model, real warmup, real
featurize) the hybrid's recorded scores equal a recomputation from the LESS and BM25 selections' own recorded
scores of every candidate, the parameters are recorded, and a replay is identical.
"""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from lessdb import Workspace
from lessdb.tasks import catalog as tasks
from lessdb.runs.config import build_warmup_config
from lessdb.featurize import FeaturizeConfig, featurize_run
from lessdb.ingest.pipeline import ingest_files
from lessdb.selection import SelectConfig, fusion as hybrid, select
from lessdb.storage import meta_selections as meta
from lessdb.runs.warmup import run_warmup

from conftest import run_cli, write_jsonl

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- the math, against brute force --------------------------------------------------------------------------------
def _brute_ranks(scores, valid):
    """rank = 1 + (# strictly higher) + (# tied others) / 2 among the valid entries."""
    out = np.full(len(scores), np.nan)
    vals = [s for s, ok in zip(scores, valid) if ok]
    for i, (s, ok) in enumerate(zip(scores, valid)):
        if ok:
            out[i] = 1 + sum(v > s for v in vals) + (sum(v == s for v in vals) - 1) / 2
    return out


def test_ranks_rrf_and_zscore_match_brute_force():
    rng = np.random.default_rng(0)
    g = rng.normal(size=40)
    b = rng.integers(0, 5, size=40).astype(float)      # many ties, as BM25's zeros
    valid = rng.random(40) > 0.2
    assert np.array_equal(np.isnan(hybrid.average_ranks(g, valid)), ~valid)
    np.testing.assert_allclose(hybrid.average_ranks(b, valid)[valid], _brute_ranks(b, valid)[valid])
    np.testing.assert_allclose(hybrid.average_ranks(g, valid)[valid], _brute_ranks(g, valid)[valid])

    fused = hybrid.fuse(g[:, None], b[:, None], valid, hybrid.fusion_rule("rrf"))[:, 0]
    expect = 1 / (60 + _brute_ranks(g, valid)) + 1 / (60 + _brute_ranks(b, valid))
    np.testing.assert_allclose(fused[valid], expect[valid], rtol=1e-12)
    assert np.isnan(fused[~valid]).all()

    z = hybrid.fuse(g[:, None], b[:, None], valid, hybrid.fusion_rule("zscore"))[:, 0]
    gv, bv = g[valid], b[valid]
    expect = 0.5 * (gv - gv.mean()) / gv.std() + 0.5 * (bv - bv.mean()) / bv.std()
    np.testing.assert_allclose(z[valid], expect, rtol=1e-12)
    # a constant signal contributes nothing; a shape mismatch is refused
    np.testing.assert_allclose(hybrid.standardise(np.ones(5), np.ones(5, bool)), 0.0)
    with pytest.raises(ValueError):
        hybrid.fuse(np.zeros((3, 2)), np.zeros((3, 1)), np.ones(3, bool), hybrid.fusion_rule())
    with pytest.raises(ValueError):
        hybrid.fusion_rule("mean")


def test_rank_fusion_lifts_a_candidate_top_in_either_signal():
    g = np.array([10.0, 9.0, 1.0, 0.0])   # candidate 0 best by gradient
    b = np.array([0.0, 1.0, 9.0, 10.0])   # candidate 3 best lexically; 1 and 2 middling in both
    fused = hybrid.fuse(g[:, None], b[:, None], np.ones(4, bool), hybrid.fusion_rule("rrf"))[:, 0]
    assert fused[0] == fused[3] and fused[1] == fused[2] and fused[0] > fused[1]


# -- on a real workspace --------------------------------------------------------------------------------------------
TOPICS = {"fruit": "apple pear plum grape melon".split(), "sea": "river lake ocean wave tide".split()}


def _record(rng, topic):
    w = TOPICS[topic]
    return {"dataset": topic, "prompt": f"Tell me about {' '.join(rng.choices(w, k=4))}.",
            "completion": " ".join(rng.choices(w, k=rng.randint(2, 6)))}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("hybrid")
    rng = random.Random(0)
    ws = Workspace.init(root / "ws")
    recs = [_record(rng, t) for t in ("fruit", "sea") for _ in range(14)]
    ingest_files(ws, [write_jsonl(root / "pool.jsonl", recs)], pool="p", progress=False)
    cfg = build_warmup_config("p", model="tiny", percentage=0.3, lora_r=4, lora_alpha=16, max_seq_length=96,
                              epochs=2, batch_size=4, micro_batch_size=2, device="cpu")
    run_id = run_warmup(ws, cfg, progress=False, count_tokens=False).run_id
    featurize_run(ws, FeaturizeConfig(run_id=run_id, dim=64, progress=False, batch_size=4))
    val = [{"subtask": "fruit", **_record(rng, "fruit")} for _ in range(2)] + \
          [{"subtask": "sea", **_record(rng, "sea")} for _ in range(2)]
    tasks.add_tasks(ws, name="t", file=write_jsonl(root / "task.jsonl", val))
    return ws


def _all_scores(ws, method, **kw):
    """Every scored candidate's recorded score: select all of them (percentage 1)."""
    res = select(ws, SelectConfig(task="t", method=method, percentage=1.0, progress=False, **kw))
    return res, {m.candidate_id: (m.score, m.best_subtask) for m in res.members}


@pytest.mark.parametrize("fusion,signals", [("rrf", "less,bm25"), ("zscore", "less,bm25"),
                                            ("zscore", "less,bm25,rds+"), ("rrf", "less,bm25,rds+")])
def test_hybrid_scores_equal_a_recomputation_from_less_and_bm25(ws, fusion, signals):
    # the hybrid fuses each subtask's column before the max over subtasks: recompute every column from LESS and
    # BM25 selections of all candidates against that subtask alone (a one-subtask task with the same examples)
    t = tasks.load_task(ws, "t")
    for s in t.subtasks:
        rows = [{"subtask": s, "messages": ex.messages} for ex in t.subtasks[s]]
        tasks.add_tasks(ws, name=f"t-{s}", file=write_jsonl(ws.root / f"t-{s}.jsonl", rows), replace=True)
    columns = {}
    for s in t.subtasks:
        res_l = select(ws, SelectConfig(task=f"t-{s}", method="less", percentage=1.0, progress=False))
        res_b = select(ws, SelectConfig(task=f"t-{s}", method="bm25", percentage=1.0, progress=False))
        less = {m.candidate_id: m.score for m in res_l.members}
        bm25 = {m.candidate_id: m.score for m in res_b.members}
        sides = [less, bm25]
        if "rds+" in signals:
            res_r = select(ws, SelectConfig(task=f"t-{s}", method="rds+", percentage=1.0, progress=False))
            sides.append({m.candidate_id: m.score for m in res_r.members})
        ids = sorted(set.intersection(*(set(x) for x in sides)))
        vals = [np.array([x[i] for i in ids]) for x in sides]
        everyone = np.ones(len(ids), bool)
        weights = [0.5, 0.5] if len(vals) == 2 else [0.5, 0.25, 0.25]
        if fusion == "rrf":
            col = sum(1 / (60 + _brute_ranks(v, everyone)) for v in vals)
        else:
            col = sum(w * (v - v.mean()) / v.std() for w, v in zip(weights, vals))
        columns[s] = dict(zip(ids, col))
    res, got = _all_scores(ws, "hybrid", method_params={"fusion": fusion, "signals": signals})
    common = set.intersection(*(set(c) for c in columns.values()))
    assert set(got) == common and res.n_scored == len(common)
    for cid, (score, best) in got.items():
        expect = {s: columns[s][cid] for s in columns}
        assert score == pytest.approx(max(expect.values()), rel=1e-12, abs=1e-15)
        assert best == max(expect, key=expect.get)
    # parameters recorded, and the replay reads them back and reproduces members, ranks and scores exactly
    row = meta.get_selection(ws, res.selection_id)
    assert row["method"] == "hybrid"
    assert row["params"]["hybrid"] == {"fusion": fusion, "rrf_k": 60, "gradient_weight": 0.5, "signals": signals}
    assert row["params"]["bm25"]["k1"] == 1.5
    assert row["feature_set_id"] and row["checkpoints"] == [1, 2]
    again = select(ws, SelectConfig(replay=res.selection_id, progress=False))
    assert again.identical is True


def test_hybrid_default_fusion_is_zscore_and_rrf_records_replay_with_rrf(ws):
    # the default follows the evidence (selection/fusion.py); a record that names rrf replays with rrf
    res = select(ws, SelectConfig(task="t", method="hybrid", count=5, progress=False))
    assert meta.get_selection(ws, res.selection_id)["params"]["hybrid"]["fusion"] == "zscore"
    old = select(ws, SelectConfig(task="t", method="hybrid", count=5, method_params={"fusion": "rrf"},
                                  progress=False))
    again = select(ws, SelectConfig(replay=old.selection_id, progress=False))
    assert again.identical is True and meta.get_selection(ws, again.selection_id)["params"]["hybrid"]["fusion"] == "rrf"
    bad = run_cli("select", "--task", "t", "--method", "hybrid", "--method-param", "signals=bm25,less",
                  workspace=ws.root, check=False)
    assert bad.returncode != 0 and "signals" in bad.stderr and "Traceback" not in bad.stderr


def test_hybrid_from_the_command_line(ws):
    out = run_cli("select", "--task", "t", "--method", "hybrid", "--method-param", "fusion=zscore", "--count", "5",
                  "--json", workspace=ws.root)
    summary = json.loads(out.stdout)
    assert summary["method"] == "hybrid" and summary["k"] == 5
    assert summary["provenance"]["params"]["hybrid"]["fusion"] == "zscore"
    bad = run_cli("select", "--task", "t", "--method", "hybrid", "--method-param", "fusion=mean", workspace=ws.root,
                  check=False)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "fusion" in bad.stderr
