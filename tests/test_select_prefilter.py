"""`select --prefilter LOWDxFACTOR` (issue 14 item 6) end to end on a real tiny store: a real tiny warmup, real
CountSketch features (float16, d=256), LanceDB + DuckDB on disk.

The folded copy is checked against a numpy fold of the stored full vectors; a shortlist covering the pool must
give exactly the plain selection (members, ranks, scores); a small shortlist must keep most of the exact top k
with exact scores; the copy is made exactly once across a kill and extended by featurize; bad input is refused."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import run_cli, write_jsonl
from lessdb import LessdbError, Workspace
from lessdb.tasks import catalog as tasks
from lessdb.runs.config import build_warmup_config
from lessdb.featurize import FeaturizeConfig, featurize_run
from lessdb.ingest.pipeline import ingest_files
from lessdb.selection import SelectConfig, select
from lessdb.storage import features as fstore
from lessdb.storage.folded_copies import folded_copy, folded_table_name
from lessdb.runs.warmup import run_warmup

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi".split()
DIM, LOW, N_CAND = 256, 64, 48
TASK = [("s1", "alpha beta gamma", "delta"), ("s1", "zeta eta", "theta iota kappa"),
        ("s2", "lambda alpha", "beta beta beta beta"), ("s3", "gamma mu", "nu xi")]


def _records(seed: int, n: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"messages": [{"role": "user", "content": " ".join(rng.choice(WORDS, rng.integers(2, 12)))},
                          {"role": "assistant", "content": " ".join(rng.choice(WORDS, rng.integers(1, 14)))}]}
            for _ in range(n)]


def _featurize(run_id, sketch="countsketch") -> FeaturizeConfig:
    return FeaturizeConfig(run_id=run_id, dim=DIM, sketch=sketch, seed=5, dtype="float16", progress=False,
                           batch_size=8, commit_rows=16)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefilter-template")
    ws = Workspace.init(root / "ws")
    ingest_files(ws, [write_jsonl(root / "pool.jsonl", _records(0, N_CAND))], pool="p", progress=False)
    cfg = build_warmup_config("p", model="tiny", percentage=0.25, lora_r=4, lora_alpha=16, max_seq_length=64,
                              epochs=2, batch_size=4, micro_batch_size=4, device="cpu", lr=1e-3)
    run_id = run_warmup(ws, cfg, progress=False, count_tokens=False).run_id
    fsid = featurize_run(ws, _featurize(run_id)).feature_set_id
    write_jsonl(root / "task.jsonl", [{"subtask": s, "prompt": p, "completion": c} for s, p, c in TASK])
    tasks.add_tasks(ws, "toy", file=root / "task.jsonl")
    return root, run_id, fsid


@pytest.fixture
def ws_run(template, tmp_path):
    root, run_id, fsid = template
    shutil.copytree(root / "ws", tmp_path / "ws")
    return Workspace.open(tmp_path / "ws"), run_id, fsid


def _members(res):
    return [(m.rank, m.candidate_id, m.score, m.best_subtask) for m in res.members]


def _rows(ws, table, version=None) -> dict:
    t = ws.lance.dataset(table, version).to_table(columns=["key", "vector"])
    keys = t.column("key").to_pylist()
    assert len(keys) == len(set(keys)), "a key stored twice"
    dim = len(t.column("vector")[0])
    return dict(zip(keys, fstore.vector_view(t.column("vector"), dim).astype(np.float32)))


def test_covering_shortlist_is_the_plain_selection_and_replays(ws_run):
    ws, _, fsid = ws_run
    info = fstore.get_feature_set(ws, fsid)
    plain = select(ws, SelectConfig(task="toy", count=5, progress=False))
    two = select(ws, SelectConfig(task="toy", count=5, prefilter=f"{LOW}x{N_CAND}", name="pf", progress=False))
    assert _members(two) == _members(plain) and two.n_scored == plain.n_scored
    pct = select(ws, SelectConfig(task="toy", percentage=0.25, progress=False))
    pct2 = select(ws, SelectConfig(task="toy", percentage=0.25, prefilter=f"{LOW}x4", progress=False))
    # k = p x the filtered pool (all N_CAND candidates, scorable or not; issue 23), the same in both stages
    assert _members(pct2) == _members(pct) and pct2.k == pct.k == int(0.25 * N_CAND)

    # the folded copy: every row of the full table once, the numpy fold of the stored vector
    name = folded_table_name(fsid, LOW)
    pf = two.provenance["params"]["prefilter"]
    assert pf["low_dim"] == LOW and pf["factor"] == N_CAND and pf["folded_table"] == name
    versions = two.provenance["table_versions"]
    rec = folded_copy(ws, fsid, LOW)
    assert versions[name] == rec["lance_version"] and rec["source_version"] == versions[info.lance_table]
    full, low = _rows(ws, info.lance_table, versions[info.lance_table]), _rows(ws, name, versions[name])
    assert set(low) == set(full) and rec["n_rows"] == len(full)
    for key, vec in full.items():
        expect = vec.reshape(DIM // LOW, LOW).sum(axis=0)
        np.testing.assert_allclose(low[key], expect, rtol=2e-3, atol=2e-4)

    # replayed identically from the recorded versions; shown
    again = select(ws, SelectConfig(replay="pf", progress=False))
    assert again.identical is True and _members(again) == _members(two)
    shown = run_cli("show", "pf", workspace=ws.root).stdout
    assert f"prefilter {LOW}x{N_CAND}" in shown and name in shown
    from click.testing import CliRunner

    from lessdb.cli.main import cli
    for args in (["explain", "pf", "--top", "2"], ["diagnose", "pf"],
                 ["report", "pf", "--output", str(ws.root / "r.html")]):
        out = CliRunner().invoke(cli, ["--workspace", str(ws.root), *args])   # the other readers of a selection
        assert out.exit_code == 0, (args, out.output)


def test_small_shortlist_keeps_most_of_the_top_k_with_exact_scores(ws_run, monkeypatch):
    ws, _, fsid = ws_run
    k = 6
    everything = select(ws, SelectConfig(task="toy", percentage=1.0, progress=False))
    plain = {m.candidate_id: m.score for m in everything.members}
    exact_top = sorted(plain, key=lambda c: (-plain[c], c))[:k]
    two = select(ws, SelectConfig(task="toy", count=k, prefilter=f"{LOW}x2", progress=False))
    got = [m.candidate_id for m in two.members]
    recall = len(set(got) & set(exact_top)) / k
    assert recall >= 5 / 6, (recall, got, exact_top)
    for m in two.members:   # full-d scores, bit for bit
        assert m.score == plain[m.candidate_id]
    pf = two.provenance["params"]["prefilter"]
    assert pf["shortlist"] == 2 * k and pf["full_rows_read"] == 2 * k * 2   # 2 checkpoints
    assert two.n_scored == everything.n_scored   # the pool outside the shortlist still counts as scored
    # compaction moves the full rows: the stored row addresses go stale and the rescan finds the rows by id
    info = fstore.get_feature_set(ws, fsid)
    ws.lance.open(info.lance_table).optimize()
    from lessdb.storage import meta_selections

    by_id = []
    scan = meta_selections.scan_feature_rows
    monkeypatch.setattr(meta_selections, "scan_feature_rows", lambda *a, **kw: by_id.append(1) or scan(*a, **kw))
    moved = select(ws, SelectConfig(task="toy", count=k, prefilter=f"{LOW}x2", progress=False))
    assert by_id   # the fallback really ran
    assert moved.provenance["table_versions"][info.lance_table] > two.provenance["table_versions"][info.lance_table]
    assert _members(moved) == _members(two)


def test_fold_is_exactly_once_across_a_kill_and_extended_by_featurize(ws_run, tmp_path):
    ws, run_id, fsid = ws_run
    name = folded_table_name(fsid, LOW)
    killed = run_cli("fold", "--feature-set", fsid, "--low-dim", str(LOW), workspace=ws.root, check=False,
                     env={"LESSDB_FAULT": "fold.after_append:1"})
    assert killed.returncode == 137
    assert folded_copy(ws, fsid, LOW) is None and ws.lance.version(name) is not None   # committed, not recorded
    out = json.loads(run_cli("fold", "--feature-set", fsid, "--low-dim", str(LOW), "--json", workspace=ws.root).stdout)
    info = fstore.get_feature_set(ws, fsid)
    assert out["n_rows"] == ws.lance.dataset(info.lance_table).count_rows() and set(_rows(ws, name)) == \
        set(_rows(ws, info.lance_table))
    # more candidates featurized: the copy that exists is extended by featurize itself
    ingest_files(ws, [write_jsonl(tmp_path / "more.jsonl", _records(9, 5))], pool="p", progress=False)
    featurize_run(ws, _featurize(run_id))
    rec = folded_copy(ws, fsid, LOW)
    assert rec["source_version"] == ws.lance.version(info.lance_table)
    assert set(_rows(ws, name, rec["lance_version"])) == set(_rows(ws, info.lance_table))


def test_bad_prefilter_input_is_refused_cleanly(ws_run):
    ws, run_id, fsid = ws_run
    for value, words in (("1024", "LOWDxFACTOR"), ("0x5", "at least 1"), ("48x2", "divide"), (f"{DIM}x2", "divide"),
                         ("abcx2", "LOWDxFACTOR")):
        proc = run_cli("select", "--task", "toy", "--count", "3", "--prefilter", value, workspace=ws.root, check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        assert "--prefilter" in proc.stderr and words in proc.stderr, proc.stderr
    proc = run_cli("select", "--task", "toy", "--method", "bm25", "--count", "3", "--prefilter", "64x2",
                   workspace=ws.root, check=False)
    assert proc.returncode != 0 and "not to --method bm25" in proc.stderr
    proc = run_cli("select", "--task", "toy", "--max-tokens", "100", "--prefilter", "64x2", workspace=ws.root,
                   check=False)
    assert proc.returncode != 0 and "--count or --percentage" in proc.stderr
    other = featurize_run(ws, _featurize(run_id, sketch="sparse-sign")).feature_set_id
    with pytest.raises(LessdbError, match="'sparse-sign' projection"):
        select(ws, SelectConfig(task="toy", count=3, feature_set=other, prefilter="64x2", progress=False))
    assert not ws.lance.has_table(folded_table_name(other, LOW))
    assert ws.selections() == []   # nothing recorded by any refused request
