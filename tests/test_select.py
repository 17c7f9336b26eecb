"""`select` end to end on a real workspace (LanceDB + DuckDB): filter -> score -> top-k -> record, exact replay
after appends, every baseline, audit views, show/diff/export.

The store is built with the real storage APIs (ingest, runs/checkpoints, feature sets, feature writes); the
validation features are written the same way, so the scores can be recomputed independently from the stored
bytes. A separate test runs the real featurize pipeline when it is available.
"""
from __future__ import annotations

import importlib
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from rank_bm25 import BM25Okapi

from lessdb import LessdbError
from lessdb.choices import DEFAULT_VAL_TRUNCATION
from lessdb.conversation import content_hash
from lessdb.featurize import validation_key
from lessdb.ingest.pipeline import ingest_files
from lessdb.selection import (SelectConfig, diff_selections, export_selection, list_selections, select,
                              show_selection)
from lessdb.selection import baselines
from lessdb.storage import features as fstore
from lessdb.storage import meta_features, meta_runs
from lessdb.storage.lance_tables import CANDIDATES
from lessdb.tasks import catalog as tasks

from conftest import run_cli, write_jsonl

gradient_methods = importlib.import_module("lessdb.selection.methods.gradient")

DIM = 16
RUN = "run-test"
FSID = "fs0000000000test"
WEIGHTS = {1: 2e-5, 2: 7e-6}
WORDS = ["apple", "river", "logic", "deduce", "python", "matrix", "ocean", "tree", "sort", "date", "sport",
         "grammar", "translate", "count", "object", "shuffle"]


def _conv(i: int, rng) -> dict:
    prompt = " ".join(rng.choice(WORDS, size=5 + i % 7))
    answer = " ".join(rng.choice(WORDS, size=3 + (i * 7) % 11))
    return {"messages": [{"role": "user", "content": f"q{i}: {prompt}"},
                         {"role": "assistant", "content": f"a{i}: {answer}"}],
            "dataset": ["flan", "cot", "dolly"][i % 3], "id": f"orig-{i}"}


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _val_key(messages) -> str:
    """Where the featurizer caches a validation example for select's default window (the feature set's 64
    tokens, cut on the left)."""
    return validation_key(messages, 64, None, DEFAULT_VAL_TRUNCATION)


def _write(ws, epoch, role, ids, vecs):
    info = fstore.get_feature_set(ws, FSID)
    fstore.write_features(ws, info, epoch, role, ids, vecs)


def _feature_set_row(fsid=FSID, grad_kind="adam"):
    return {"feature_set_id": fsid, "run_id": RUN, "lance_table": fstore.table_name(fsid), "grad_kind": grad_kind,
            "bias_correction": True, "sketch_kind": "countsketch", "sketch_seed": 0, "sketch_nnz": 1, "n_params": 999,
            "dim": DIM, "dtype": "float16", "compute_dtype": "float32", "max_seq_length": 64, "tokenizer_id": "tok",
            "module_order": [], "model_sha256": "m", "params": {"grad_kind": grad_kind}, "lessdb_version": "test"}


@pytest.fixture
def store(workspace, tmp_path, monkeypatch):
    """60 candidates in pool `p`, a complete warmup run with 2 checkpoints, an adam feature set with candidate
    and validation features (float16) for both checkpoints, and a 3-subtask task."""
    rng = np.random.default_rng(0)
    recs = [_conv(i, rng) for i in range(60)]
    write_jsonl(tmp_path / "pool.jsonl", recs)
    ingest_files(workspace, [tmp_path / "pool.jsonl"], pool="p", progress=False)
    from lessdb.models.loading import load_base_model

    tiny_sha = load_base_model(workspace, "tiny").sha256
    meta_runs.create_run(workspace, run_id=RUN, kind="warmup", pool="p", model_name="tiny", model_sha256=tiny_sha,
                         seed=0, percentage=0.05, n_examples=3, n_excluded=0,
                         config={"training": {"max_seq_length": 256}}, device="cpu", lessdb_version="test")
    meta_runs.set_run_status(workspace, RUN, "complete")
    for epoch, lr in WEIGHTS.items():
        meta_runs.add_checkpoint(workspace, meta_runs.CheckpointInfo(RUN, epoch, f"/ck/{epoch}", "a", "o", 10 * epoch,
                                                                     lr, 1.0))
    meta_features.insert_feature_set(workspace, _feature_set_row())
    fstore.ensure_feature_table(workspace, fstore.get_feature_set(workspace, FSID))

    task_recs = []
    for sub, n in (("alpha", 3), ("beta", 1), ("gamma", 2)):
        for k in range(n):
            task_recs.append({"subtask": sub, "prompt": f"{sub} question {k}: " + " ".join(rng.choice(WORDS, 6)),
                              "completion": f"{sub} answer {k} " + " ".join(rng.choice(WORDS, 4))})
    write_jsonl(tmp_path / "task.jsonl", task_recs)
    tasks.add_tasks(workspace, "toy", file=tmp_path / "task.jsonl")
    task = tasks.load_task(workspace, "toy")

    cand_ids = [content_hash(r["messages"]) for r in recs]
    for epoch in WEIGHTS:
        _write(workspace, epoch, "candidate", cand_ids, _unit(rng.standard_normal((60, DIM))))
        val_ids = [_val_key(m) for _, m in task.examples()]
        _write(workspace, epoch, "validation", val_ids, _unit(rng.standard_normal((len(val_ids), DIM))))
    # the real validation featurizer is exercised in test_real_pipeline; here the rows are already stored
    monkeypatch.setattr(gradient_methods, "compute_validation_features", lambda *a, **k: None)
    return {"ws": workspace, "ids": cand_ids, "recs": recs, "task": task, "rng": rng, "tmp": tmp_path}


def cli(ws, *args) -> str:
    """The real click commands in-process (the subprocess runs cost ~10 s each on a loaded 2-core box)."""
    from click.testing import CliRunner

    from lessdb.cli.main import cli as root

    result = CliRunner().invoke(root, ["--workspace", str(ws.root), *map(str, args)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def cli_json(ws, *args):
    return json.loads(cli(ws, *args, "--json"))


def _stored(ws, role, epoch):
    ds = ws.lance.dataset(fstore.table_name(FSID))
    t = ds.to_table(filter=f"role = '{role}' AND epoch = {epoch}", columns=["example_id", "vector"])
    vecs = np.array(t.column("vector").to_pylist(), dtype=np.float64)
    return dict(zip(t.column("example_id").to_pylist(), vecs))


def _expected_scores(ws, task, aggregation, ids):
    """Independent float64 recomputation from the stored bytes: Σᵢ η̄ᵢ cos(ḡᵢⱼ, x) (paper) or
    Σᵢ η̄ᵢ mean cos(u, x) (reference); max over subtasks."""
    out = {}
    subs = sorted(task.subtasks)
    val = {e: _stored(ws, "validation", e) for e in WEIGHTS}
    cand = {e: _stored(ws, "candidate", e) for e in WEIGHTS}
    for cid in ids:
        per = []
        for s in subs:
            total = 0.0
            for e, w in WEIGHTS.items():
                x = cand[e][cid]
                us = [val[e][_val_key(ex.messages)] for ex in task.subtasks[s]]
                cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
                if aggregation == "paper":
                    total += w * cos(np.mean([u / np.linalg.norm(u) for u in us], axis=0), x)
                else:
                    total += w * float(np.mean([cos(u, x) for u in us]))
            per.append(total)
        out[cid] = (max(per), subs[int(np.argmax(per))])
    return out


@pytest.mark.parametrize("aggregation", ["paper", "reference"])
def test_less_selection_matches_independent_numpy(store, aggregation):
    ws, ids, task = store["ws"], store["ids"], store["task"]
    res = select(ws, SelectConfig(task="toy", val_aggregation=aggregation, percentage=0.1, progress=False))
    exp = _expected_scores(ws, task, aggregation, ids)
    order = sorted(ids, key=lambda c: (-exp[c][0], c))
    assert res.k == 6 and res.n_scored == 60 and res.n_unscorable == 0
    assert [m.candidate_id for m in res.members] == order[:6]
    for m in res.members:
        assert m.score == pytest.approx(exp[m.candidate_id][0], rel=1e-5, abs=1e-12)
        assert m.best_subtask == exp[m.candidate_id][1]
    prov = res.provenance
    assert prov["checkpoints"] == [1, 2] and prov["weights"] == [WEIGHTS[1], WEIGHTS[2]]
    assert prov["table_versions"][CANDIDATES] == ws.lance.version(CANDIDATES)
    assert prov["table_versions"][fstore.table_name(FSID)] == ws.lance.version(fstore.table_name(FSID))
    assert prov["sketch"]["kind"] == "countsketch" and prov["sketch"]["dim"] == DIM
    assert prov["task_hash"] == task.task_hash and prov["params"]["aggregation"] == aggregation
    assert prov["lessdb_version"] and prov["feature_set_id"] == FSID
    # the recorded members equal the result
    rows = cli_json(ws, "sql", f"SELECT rank, candidate_id, score, best_subtask FROM selection_members WHERE "
                               f"selection_id = '{res.selection_id}' ORDER BY rank")
    assert [(r["rank"], r["candidate_id"], r["score"], r["best_subtask"]) for r in rows] == \
        [(m.rank, m.candidate_id, m.score, m.best_subtask) for m in res.members]


def test_replay_after_appends_is_identical(store, tmp_path):
    ws, rng = store["ws"], store["rng"]
    first = select(ws, SelectConfig(task="toy", count=8, where="n_turns = 2", name="orig", progress=False))
    # append 20 new candidates whose features point straight at the first subtask: they would win now
    new = [_conv(100 + i, rng) for i in range(20)]
    write_jsonl(tmp_path / "more.jsonl", new)
    ingest_files(ws, [tmp_path / "more.jsonl"], pool="p", progress=False)
    new_ids = [content_hash(r["messages"]) for r in new]
    val = _stored(ws, "validation", 1)
    target = np.mean([val[_val_key(ex.messages)] for ex in store["task"].subtasks["alpha"]], axis=0)
    for epoch in WEIGHTS:
        _write(ws, epoch, "candidate", new_ids, _unit(np.tile(target, (20, 1)) + 0.01 * rng.standard_normal((20, DIM))))
    fresh = select(ws, SelectConfig(task="toy", count=8, where="n_turns = 2", progress=False))
    assert set(m.candidate_id for m in fresh.members) <= set(new_ids)   # the appends matter now...
    again = select(ws, SelectConfig(replay="orig", progress=False))
    assert again.identical is True and again.replay_of == first.selection_id
    assert [(m.rank, m.candidate_id, m.score, m.best_subtask) for m in again.members] == \
        [(m.rank, m.candidate_id, m.score, m.best_subtask) for m in first.members]
    # ... and the CLI replay says so
    out = run_cli("select", "--replay", first.selection_id, "--json", workspace=ws.root)
    assert json.loads(out.stdout)["identical"] is True


def test_filter_matching_nothing_is_a_clear_error(store):
    with pytest.raises(LessdbError, match="matched none of the 60 candidates"):
        select(store["ws"], SelectConfig(task="toy", where="total_chars > 1000000", progress=False))
    proc = run_cli("select", "--task", "toy", "--where", "source_dataset = 'nope'", workspace=store["ws"].root,
                   check=False)
    assert proc.returncode != 0 and "matched none" in proc.stderr and "Traceback" not in proc.stderr


def test_task_whose_examples_all_truncate_away_is_a_clear_error(store, tmp_path):
    """No validation example of the task has a feature (the featurizer omits examples with no completion token
    left): a clear error, never NaN scores."""
    write_jsonl(tmp_path / "long.jsonl", [{"subtask": "s", "prompt": "x " * 500, "completion": "y"}])
    tasks.add_tasks(store["ws"], "long", file=tmp_path / "long.jsonl")
    with pytest.raises(LessdbError, match="none of its 1 validation examples has a completion token"):
        select(store["ws"], SelectConfig(task="long", progress=False))


def test_candidates_without_features_or_completion_are_never_selected(store):
    ws, ids = store["ws"], store["ids"]
    # drop one candidate's checkpoint-2 feature and mark another as excluded by the featurizer
    fstore_table = ws.lance.open(fstore.table_name(FSID))
    fstore_table.delete(f"key = 'candidate/2/{ids[0]}'")
    meta_features_exclude(ws, ids[1])
    fstore_table.delete(f"example_id = '{ids[1]}'")
    # a missing vector is refused (issue 23: a partial store is never scored silently); allow_partial records it
    with pytest.raises(LessdbError, match="1 of the 60 candidates .* have no stored vector"):
        select(ws, SelectConfig(task="toy", count=58, progress=False))
    res = select(ws, SelectConfig(task="toy", count=58, allow_partial=True, progress=False))
    chosen = {m.candidate_id for m in res.members}
    assert ids[0] not in chosen and ids[1] not in chosen and res.n_unscorable == 2
    assert all(np.isfinite(m.score) for m in res.members)
    un = res.provenance["params"]["unscorable"]
    assert un["no_completion_tokens"] == 1 and un["missing_features"] == 1
    assert res.partial["n_missing"] == 1 and res.provenance["params"]["allow_partial"] is True
    with pytest.raises(LessdbError, match="exceeds the 58"):
        select(ws, SelectConfig(task="toy", count=59, allow_partial=True, progress=False))
    r = select(ws, SelectConfig(task="toy", method="random", count=58, progress=False))
    assert ids[1] not in {m.candidate_id for m in r.members}


def meta_features_exclude(ws, example_id):
    with ws.duck.transaction() as con:
        con.execute("INSERT INTO feature_exclusions VALUES (?, 'candidate', 1, ?, 'no completion token')",
                    [FSID, example_id])


@pytest.mark.parametrize("method", ["random", "bm25", "dsir", "rds", "rds+", "sgd", "sign"])
def test_every_baseline_returns_k_distinct_filtered_candidates(store, method):
    ws = store["ws"]
    if method in ("sgd", "sign"):   # ablations read their own feature set of that gradient kind
        fsid = f"fs{method:0>14}"
        meta_features.insert_feature_set(ws, _feature_set_row(fsid, method))
        info = fstore.get_feature_set(ws, fsid)
        fstore.ensure_feature_table(ws, info)
        rng = np.random.default_rng(9)
        val_ids = [_val_key(m) for _, m in store["task"].examples()]
        for e in WEIGHTS:
            fstore.write_features(ws, info, e, "candidate", store["ids"], _unit(rng.standard_normal((60, DIM))))
            fstore.write_features(ws, info, e, "validation", val_ids, _unit(rng.standard_normal((6, DIM))))
    where = "source_dataset IN ('flan', 'cot')"
    allowed = {content_hash(r["messages"]) for r in store["recs"] if r["dataset"] in ("flan", "cot")}
    res = select(ws, SelectConfig(task="toy", method=method, count=7, where=where, seed=3, progress=False))
    ids = [m.candidate_id for m in res.members]
    assert len(ids) == 7 == len(set(ids)) and set(ids) <= allowed
    assert res.n_candidates == len(allowed)
    scores = [m.score for m in res.members]
    assert all(np.isfinite(scores)) and scores == sorted(scores, reverse=True)
    if method in ("sgd", "sign"):
        assert res.provenance["feature_set_id"] == f"fs{method:0>14}"
    again = select(ws, SelectConfig(task="toy", method=method, count=7, where=where, seed=3, progress=False))
    assert [m.candidate_id for m in again.members] == ids   # deterministic


def test_random_depends_on_seed_only():
    ids = [f"id{i}" for i in range(50)]
    a, b = baselines.random_scores(ids, 1), baselines.random_scores(ids[::-1], 1)[::-1]
    assert np.array_equal(a, b) and not np.array_equal(a, baselines.random_scores(ids, 2))


def test_bm25_equals_rank_bm25():
    rng = np.random.default_rng(0)
    corpus = [list(rng.choice(WORDS, size=int(rng.integers(1, 30)))) for _ in range(40)]
    queries = [list(rng.choice(WORDS, size=7)), ["apple", "apple", "nosuchword", "tree"]]
    s = baselines.StreamingBM25(queries)
    for doc in corpus:
        s.add(doc)
    ref = BM25Okapi(corpus)
    got = s.scores()
    for qi, q in enumerate(queries):
        np.testing.assert_allclose(got[qi], ref.get_scores(q), rtol=1e-12, atol=1e-12)


def test_dsir_prefers_target_like_text():
    ng = baselines.HashedNgrams(1000)
    pool = ["the cat sat on the mat", "stocks fell sharply today", "logical deduction puzzle with three objects",
            "the weather is nice"]
    pool_counts = sum(ng.counts(t) for t in pool)
    target = ng.counts("a logical deduction puzzle about objects")
    ratio = baselines.dsir_log_ratio(target, pool_counts)
    scores = [ng.counts(t) @ ratio for t in pool]
    assert int(np.argmax(scores)) == 2
    assert np.array_equal(baselines.HashedNgrams(1000).counts(pool[2]), ng.counts(pool[2]))   # stable hash


def test_unnormalized_needs_raw_norms(store):
    with pytest.raises(LessdbError, match="raw gradient norms"):
        select(store["ws"], SelectConfig(task="toy", method="unnormalized", progress=False))


def test_show_diff_selections_export(store, tmp_path):
    ws = store["ws"]
    a = select(ws, SelectConfig(task="toy", percentage=0.2, name="less-a", progress=False))
    b = select(ws, SelectConfig(task="toy", method="random", percentage=0.2, name="rand-b", progress=False))
    rows = list_selections(ws)
    assert [r["name"] for r in rows] == ["less-a", "rand-b"]
    report = show_selection(ws, "less-a")
    assert report["size"] == 12 and sum(r["n_selected"] for r in report["source_mix"]) == 12
    assert sum(r["n_pool"] for r in report["source_mix"]) == 60
    assert {r["set"] for r in report["lengths"]} == {"selection", "pool"}
    assert sum(report["score_histogram"]["counts"]) == 60
    d = diff_selections(ws, "less-a", "rand-b")
    ia, ib = {m.candidate_id for m in a.members}, {m.candidate_id for m in b.members}
    assert d["overlap"] == len(ia & ib) and d["jaccard"] == pytest.approx(len(ia & ib) / len(ia | ib))
    assert d["only_a"]["n"] == len(ia - ib) and set(d["only_a"]["examples"]) <= ia - ib

    info = export_selection(ws, "less-a", tmp_path / "out.jsonl")
    lines = [json.loads(x) for x in open(tmp_path / "out.jsonl", encoding="utf-8")]
    assert [x["lessdb_id"] for x in lines] == [m.candidate_id for m in a.members]
    by_id = {content_hash(r["messages"]): r for r in store["recs"]}
    for x in lines:
        src = by_id[x["lessdb_id"]]
        assert x["messages"] == src["messages"] and x["id"] == src["id"] and x["dataset"] == src["dataset"]
    import hashlib
    assert info["sha256"] == hashlib.sha256((tmp_path / "out.jsonl").read_bytes()).hexdigest()
    pinfo = export_selection(ws, "less-a", tmp_path / "out.parquet", "parquet")
    t = pq.read_table(tmp_path / "out.parquet")
    assert t.column("lessdb_id").to_pylist() == [x["lessdb_id"] for x in lines] and pinfo["n_rows"] == 12
    assert [e["sha256"] for e in show_selection(ws, "less-a")["exports"]] == [info["sha256"], pinfo["sha256"]]

    # the CLI over the same functions, and the audit views in plain SQL
    assert [r["name"] for r in cli_json(ws, "selections")] == ["less-a", "rand-b"]
    assert cli_json(ws, "show", "less-a")["size"] == 12
    assert cli_json(ws, "diff", "less-a", "rand-b")["overlap"] == d["overlap"]
    got = cli_json(ws, "sql", "SELECT method, source_dataset, n FROM selection_sources ORDER BY ALL")
    assert sum(r["n"] for r in got if r["method"] == "less") == 12
    assert sum(r["n"] for r in got if r["method"] == "random") == 12
    text = run_cli("show", "less-a", workspace=ws.root).stdout   # once as a user would, in a subprocess
    assert "Source mix" in text and "threshold" in text
    out = cli(ws, "export", "rand-b", "--format", "jsonl", "--output", str(tmp_path / "r.jsonl"))
    assert "wrote 12 examples" in out


def test_real_pipeline_select_then_replay_after_appends(workspace, tmp_path):
    """ingest -> warmup (tiny model, real peft) -> featurize -> select (validation features computed on demand
    by the real featurizer) -> append candidates + featurize them -> replay is identical; scores equal an
    independent recomputation from the stored vectors and the run's η̄."""
    from lessdb.runs.config import LoraSettings, TrainingSettings, WarmupConfig
    from lessdb.featurize import FeaturizeConfig, featurize_run
    from lessdb.runs.warmup import run_warmup

    ws = workspace
    rng = np.random.default_rng(1)
    recs = [_conv(i, rng) for i in range(16)]
    write_jsonl(tmp_path / "pool.jsonl", recs)
    ingest_files(ws, [tmp_path / "pool.jsonl"], pool="real", progress=False)
    summary = run_warmup(ws, WarmupConfig(pool="real", model="tiny", percentage=0.5,
                                          lora=LoraSettings(r=4, alpha=16, dropout=0.0),
                                          training=TrainingSettings(epochs=2, batch_size=4, micro_batch_size=4,
                                                                    max_seq_length=128, lr=1e-3)),
                         progress=False, count_tokens=False)
    run_id = summary.run_id
    featurize_run(ws, FeaturizeConfig(run_id=run_id, dim=32, dtype="float16", device="cpu", progress=False))
    write_jsonl(tmp_path / "t.jsonl", [
        {"subtask": "a", "prompt": "q0: apple river", "completion": "a0: logic tree"},
        {"subtask": "a", "prompt": "q1: ocean sort", "completion": "a1: matrix date"},
        {"subtask": "b", "prompt": "q2: python grammar", "completion": "a2: count object"},
        {"subtask": "c", "prompt": "z" * 300, "completion": "never seen"}])   # truncates away at 128 tokens
    tasks.add_tasks(ws, "real-task", file=tmp_path / "t.jsonl")
    # cut on the right (the paper), subtask c keeps no completion token and is dropped (left would keep it)
    res = select(ws, SelectConfig(task="real-task", run=run_id, count=5, name="real", val_truncation="right",
                                  progress=False))
    assert res.provenance["params"]["dropped_subtasks"] == ["c"]
    fs = fstore.get_feature_set(ws, res.provenance["feature_set_id"])
    ckpts = {c.epoch: c.mean_lr for c in meta_runs.list_checkpoints(ws, run_id)}
    assert res.provenance["weights"] == [ckpts[1], ckpts[2]]

    ds = ws.lance.dataset(fs.lance_table, res.provenance["table_versions"][fs.lance_table])
    t = ds.to_table(columns=["example_id", "epoch", "role", "vector"])
    vec = {(r, e, x): np.array(v, dtype=np.float64) for r, e, x, v in zip(
        t.column("role").to_pylist(), t.column("epoch").to_pylist(), t.column("example_id").to_pylist(),
        t.column("vector").to_pylist())}
    task = tasks.load_task(ws, "real-task")
    cand_ids = sorted({x for (r, _, x) in vec if r == "candidate"})
    expected = {}
    for cid in cand_ids:
        per = []
        for s in ("a", "b"):
            total = 0.0
            for e, w in ckpts.items():
                us = [vec[("validation", e, content_hash(ex.messages))] for ex in task.subtasks[s]]
                g = np.mean([u / np.linalg.norm(u) for u in us], axis=0)
                x = vec[("candidate", e, cid)]
                total += w * float(g @ x / np.linalg.norm(g) / np.linalg.norm(x))
            per.append(total)
        expected[cid] = max(per)
    order = sorted(cand_ids, key=lambda c: (-expected[c], c))[:5]
    assert [m.candidate_id for m in res.members] == order
    for m in res.members:
        assert m.score == pytest.approx(expected[m.candidate_id], rel=1e-5)

    # append candidates and featurize them, then replay
    more = [_conv(200 + i, rng) for i in range(6)]
    write_jsonl(tmp_path / "more.jsonl", more)
    ingest_files(ws, [tmp_path / "more.jsonl"], pool="real", progress=False)
    featurize_run(ws, FeaturizeConfig(run_id=run_id, dim=32, dtype="float16", device="cpu", progress=False))
    again = select(ws, SelectConfig(replay="real", progress=False))
    assert again.identical is True and again.n_candidates == 16
    now = select(ws, SelectConfig(task="real-task", run=run_id, count=5, progress=False))
    assert now.n_candidates == 22 and now.n_scored == 22

    # a task none of whose examples survives right truncation: a clear error, not NaN; the default (left)
    # keeps the completion and scores it
    write_jsonl(tmp_path / "long.jsonl", [{"subtask": "s", "prompt": "y" * 400, "completion": "n"}])
    tasks.add_tasks(ws, "too-long", file=tmp_path / "long.jsonl")
    with pytest.raises(LessdbError, match="none of its 1 validation examples has a completion token.*"
                                          "drop val_truncation right") as err:
        select(ws, SelectConfig(task="too-long", run=run_id, val_truncation="right", progress=False))
    from lessdb.cli.options import setting_error_message   # the CLI names the flags
    assert "drop --val-truncation right" in setting_error_message(err.value)
    assert setting_error_message(err.value).endswith("or pass a larger --val-max-seq-length")
    kept = select(ws, SelectConfig(task="too-long", run=run_id, count=3, progress=False))
    assert kept.provenance["params"]["validation_window"] == {"max_seq_length": 128, "truncation": "left"}
