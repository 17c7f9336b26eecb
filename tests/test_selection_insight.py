"""Token budgets, near-duplicate control, explanations and diagnostics on the real pipeline: tiny Llama warmup,
real featurize, real LanceDB + DuckDB; every result checked against an independent recomputation from the
stored bytes (token counts from the tokenizer, cosines from the stored vectors, MinHash from datasketch)."""
from __future__ import annotations

import numpy as np
import pytest

from lessdb import Workspace
from lessdb.tasks import catalog as tasks
from lessdb.choices import DEFAULT_VAL_TRUNCATION
from lessdb.conversation import content_hash
from lessdb.featurize import validation_key
from lessdb.ingest.pipeline import ingest_files
from lessdb.selection import SelectConfig, select
from lessdb.selection.noise import gap_vs_noise
from lessdb.storage import features as fstore
from lessdb.storage import meta_runs

from conftest import write_jsonl
from test_select import _conv, cli, cli_json

MSL = 128


@pytest.fixture(scope="module")
def real(tmp_path_factory, one_torch_thread):
    """24 candidates (two near-duplicate pairs), a 2-epoch tiny warmup, features at d = 32, a 2-subtask task;
    4 more candidates appended after the warmup (no token counts yet)."""
    from lessdb.runs.config import LoraSettings, TrainingSettings, WarmupConfig
    from lessdb.featurize import FeaturizeConfig, featurize_run
    from lessdb.runs.warmup import run_warmup

    tmp = tmp_path_factory.mktemp("insight")
    ws = Workspace.init(tmp / "ws")
    rng = np.random.default_rng(5)
    recs = [_conv(i, rng) for i in range(20)]
    for src in (0, 1):   # near-duplicates: the same conversation with one word of the answer changed
        dup = {**recs[src], "id": f"dup-{src}", "messages": [dict(m) for m in recs[src]["messages"]]}
        dup["messages"][1]["content"] += " indeed"
        recs.append(dup)
    write_jsonl(tmp / "pool.jsonl", recs)
    ingest_files(ws, [tmp / "pool.jsonl"], pool="p", progress=False, minhash=True)   # signatures now (opt-in)
    summary = run_warmup(ws, WarmupConfig(pool="p", model="tiny", percentage=0.5,
                                          lora=LoraSettings(r=4, alpha=16, dropout=0.0),
                                          training=TrainingSettings(epochs=2, batch_size=4, micro_batch_size=4,
                                                                    max_seq_length=MSL, lr=1e-3)),
                         progress=False)
    more = [_conv(300 + i, rng) for i in range(4)]
    write_jsonl(tmp / "more.jsonl", more)
    ingest_files(ws, [tmp / "more.jsonl"], pool="p", progress=False)                # signatures lazily
    featurize_run(ws, FeaturizeConfig(run_id=summary.run_id, dim=32, dtype="float32", device="cpu", progress=False))
    write_jsonl(tmp / "t.jsonl", [
        {"subtask": "a", "prompt": "q0: apple river", "completion": "a0: logic tree"},
        {"subtask": "a", "prompt": "q1: ocean sort", "completion": "a1: matrix date"},
        {"subtask": "a", "prompt": "q5: sport count", "completion": "a5: grammar"},
        {"subtask": "b", "prompt": "q2: python grammar", "completion": "a2: count object"},
        {"subtask": "b", "prompt": "q3: shuffle date", "completion": "a3: tree"}])
    tasks.add_tasks(ws, "t", file=tmp / "t.jsonl")
    return {"ws": ws, "run": summary.run_id, "recs": recs + more, "more": more}


def _token_counts(ws, recs, budget_on):
    """Independently: encode each conversation with the tiny tokenizer at the run's window."""
    from lessdb.models.tiny import tiny_tokenizer
    from lessdb.models.tokenization import encode_conversation

    tok = tiny_tokenizer()
    out = {}
    for r in recs:
        e = encode_conversation(tok, r["messages"], MSL)
        out[content_hash(r["messages"])] = e.completion_tokens if budget_on == "completion" else e.total_tokens
    return out


def _scores(res_members):
    return [(m.rank, m.candidate_id, m.score, m.best_subtask) for m in res_members]


@pytest.mark.parametrize("method,budget_on", [("less", "completion"), ("random", "total")])
def test_token_budget_is_a_prefix_of_the_ranking(real, method, budget_on):
    ws = real["ws"]
    toks = _token_counts(ws, real["recs"], budget_on)
    ranked = select(ws, SelectConfig(task="t", method=method, count=24, seed=2, progress=False))
    order = [m.candidate_id for m in ranked.members]
    budget = sum(toks[c] for c in order[:5]) + toks[order[5]] - 1   # the 6th does not fit
    res = select(ws, SelectConfig(task="t", method=method, max_tokens=budget, budget_on=budget_on, seed=2,
                                  name=f"budget-{method}", progress=False))
    assert [m.candidate_id for m in res.members] == order[:5]
    b = res.provenance["params"]["budget"]
    assert b["tokens_used"] == sum(toks[c] for c in order[:5]) <= budget and b["stopped_by"] == "budget"
    assert b["budget_on"] == budget_on and b["max_seq_length"] == MSL and res.provenance["percentage"] is None
    # the appended candidates were counted with the run's tokenizer and stored
    tid = b["tokenizer_id"]
    counted = meta_runs.token_counts(ws, tid, MSL, [content_hash(r["messages"]) for r in real["more"]])
    assert len(counted) == 4
    rows = cli_json(ws, "sql", f"SELECT sum(budget_tokens) AS t FROM selection_member_targets "
                               f"WHERE selection_id = '{res.selection_id}'")
    assert rows[0]["t"] == b["tokens_used"]
    # the same numbers through the selection_member_tokens view (the README's LESS-vs-random comparison)
    view = cli_json(ws, "sql", f"SELECT max_tokens, sum({budget_on}_tokens) AS t, count(*) AS n FROM "
                               f"selection_member_tokens WHERE selection_id = '{res.selection_id}' GROUP BY ALL")
    assert view == [{"max_tokens": budget, "t": b["tokens_used"], "n": 5}]
    ranked_view = cli_json(ws, "sql", f"SELECT sum({budget_on}_tokens) AS t FROM selection_member_tokens "
                                      f"WHERE selection_id = '{ranked.selection_id}' AND rank <= 5")
    assert ranked_view[0]["t"] == b["tokens_used"]   # an example-budget selection, counted with the run's tokenizer
    again = select(ws, SelectConfig(replay=f"budget-{method}", progress=False))
    assert again.identical is True
    # with a count as well: whichever is reached first
    both = select(ws, SelectConfig(task="t", method=method, max_tokens=budget, budget_on=budget_on, count=3, seed=2,
                                   progress=False))
    assert [m.candidate_id for m in both.members] == order[:3]


def _stored_vectors(ws, res):
    fs = fstore.get_feature_set(ws, res.provenance["feature_set_id"])
    ds = ws.lance.dataset(fs.lance_table, res.provenance["table_versions"][fs.lance_table])
    t = ds.to_table(columns=["example_id", "epoch", "vector"], filter="role = 'candidate'")
    out = {}
    for x, e, v in zip(t.column("example_id").to_pylist(), t.column("epoch").to_pylist(),
                       t.column("vector").to_pylist()):
        out.setdefault((x, e), np.array(v, dtype=np.float64))
    return out


def test_feature_dedup_skips_what_a_plain_greedy_walk_skips(real):
    ws = real["ws"]
    full = select(ws, SelectConfig(task="t", count=24, progress=False))
    vec = _stored_vectors(ws, full)
    epochs, weights = full.provenance["checkpoints"], full.provenance["weights"]

    def cos(a, b):
        return sum(w * vec[(a, e)] @ vec[(b, e)] / np.linalg.norm(vec[(a, e)]) / np.linalg.norm(vec[(b, e)])
                   for e, w in zip(epochs, weights)) / sum(weights)

    order = [m.candidate_id for m in full.members]
    sims = sorted(cos(a, b) for i, a in enumerate(order[:10]) for b in order[:i])
    threshold = float(np.quantile(sims, 0.7))
    chosen, skipped = [], []
    for c in order:
        if len(chosen) == 6:
            break
        best = max(((cos(c, m), m) for m in chosen), default=(None, None))
        if best[0] is not None and best[0] > threshold:
            skipped.append((c, best[1]))
        else:
            chosen.append(c)
    assert skipped, "the threshold should make the walk skip something"
    res = select(ws, SelectConfig(task="t", count=6, dedup=threshold, name="dedup-f", progress=False))
    assert [m.candidate_id for m in res.members] == chosen
    rows = cli_json(ws, "sql", f"SELECT candidate_id, similar_to, similarity, reason FROM selection_skips "
                               f"WHERE selection_id = '{res.selection_id}' ORDER BY seq")
    assert [(r["candidate_id"], r["similar_to"]) for r in rows] == skipped
    for r in rows:
        assert r["reason"] == "near_duplicate_features"
        assert r["similarity"] == pytest.approx(cos(r["candidate_id"], r["similar_to"]), abs=1e-5)
    assert res.provenance["params"]["skipped"] == {"near_duplicate_features": len(skipped)}
    assert select(ws, SelectConfig(replay="dedup-f", progress=False)).identical is True
    assert "Skipped near-duplicates" in cli(ws, "show", "dedup-f")


def test_text_dedup_uses_minhash_signatures_stored_at_ingest_or_computed_lazily(real):
    from datasketch import MinHash

    from lessdb.ingest import minhash
    from lessdb.conversation import conversation_text

    ws = real["ws"]
    ids = [content_hash(r["messages"]) for r in real["recs"]]
    more = {content_hash(r["messages"]) for r in real["more"]}

    def stored() -> set[str]:
        return set(ws.lance.dataset("text_minhash").to_table(columns=["candidate_id"]).column("candidate_id")
                   .to_pylist())

    # the --minhash ingest wrote its signatures before any selection; the default one left them to --dedup-text
    assert set(ids) - more <= stored() and not more & stored()
    # our signatures are datasketch's, and the Jaccard estimate is datasketch's
    a, b = (conversation_text(real["recs"][i]["messages"]) for i in (0, 20))
    sig = minhash.signatures([a, b])
    ref = []
    for text in (a, b):
        m = MinHash(num_perm=128, seed=1, scheme="affine32", hashfunc=int)
        m.update_batch(minhash.shingle_hashes(text))
        ref.append(m)
    assert np.array_equal(sig[0], ref[0].hashvalues) and minhash.jaccard(sig[0], sig[1:])[0] == ref[0].jaccard(ref[1])
    assert ref[0].jaccard(ref[1]) > 0.6

    res = select(ws, SelectConfig(task="t", method="random", count=24, seed=0, dedup_text=0.6, progress=False))
    chosen = {m.candidate_id for m in res.members}
    pairs = [(ids[0], ids[20]), (ids[1], ids[21])]
    assert all(not (x in chosen and y in chosen) for x, y in pairs)   # never both of a near-duplicate pair
    skips = cli_json(ws, "sql", f"SELECT candidate_id, similar_to, reason FROM selection_skips "
                                f"WHERE selection_id = '{res.selection_id}'")
    assert {frozenset((s["candidate_id"], s["similar_to"])) for s in skips} == {frozenset(p) for p in pairs}
    assert {s["reason"] for s in skips} == {"near_duplicate_text"}
    assert len(res.members) == 24 and res.provenance["params"]["dedup"]["minhash"]["scheme"] == minhash.SCHEME_DS
    assert chosen <= stored()        # the selection computed (and kept) the signatures it needed
    assert select(ws, SelectConfig(replay=res.selection_id, progress=False)).identical is True


def test_signatures_missing_for_old_workspaces_are_computed_lazily(real, tmp_path):
    from lessdb.storage import minhash_store

    ws = real["ws"]
    ws.lance.delete(minhash_store.TABLE, "candidate_id <> ''")
    res = select(ws, SelectConfig(task="t", method="random", count=23, seed=0, dedup_text=0.6, progress=False))
    assert len(res.members) == 23 and ws.lance.dataset(minhash_store.TABLE).count_rows() >= 23


def test_explanations_sum_back_to_the_recorded_scores(real):
    ws = real["ws"]
    res = select(ws, SelectConfig(task="t", count=4, name="expl", progress=False))
    out = cli_json(ws, "explain", "expl", "--top", "4", "--examples", "10")
    vec = _stored_vectors(ws, res)
    fs = fstore.get_feature_set(ws, res.provenance["feature_set_id"])
    ds = ws.lance.dataset(fs.lance_table, res.provenance["table_versions"][fs.lance_table])
    t = ds.to_table(columns=["example_id", "epoch", "vector"], filter="role = 'validation'")
    val = {(x, e): np.array(v) for x, e, v in zip(t.column("example_id").to_pylist(), t.column("epoch").to_pylist(),
                                                  t.column("vector").to_pylist())}
    task = tasks.load_task(ws, "t")
    epochs, weights = res.provenance["checkpoints"], res.provenance["weights"]
    for m, got in zip(res.members, out["members"]):
        assert got["candidate_id"] == m.candidate_id
        assert got["explained_score"] == pytest.approx(m.score, rel=1e-5)
        for s in got["subtasks"]:
            # independently: eta-bar x cos(mean unit validation gradient, candidate) per checkpoint
            for part, e, w in zip(s["checkpoints"], epochs, weights):
                us = [val[(validation_key(ex.messages, MSL, None, DEFAULT_VAL_TRUNCATION), e)]
                      for ex in task.subtasks[s["subtask"]]]
                g = np.mean([u / np.linalg.norm(u) for u in us], axis=0)
                x = vec[(m.candidate_id, e)]
                assert part["part"] == pytest.approx(w * g @ x / np.linalg.norm(g) / np.linalg.norm(x), rel=1e-6)
            assert sum(p["part"] for p in s["checkpoints"]) == pytest.approx(s["influence"], rel=1e-9)
            # all of the subtask's examples listed: their contributions sum to its influence
            assert len(s["top_examples"]) == len(task.subtasks[s["subtask"]])
            assert sum(x["contribution"] for x in s["top_examples"]) == pytest.approx(s["influence"], rel=1e-6)
            assert {x["example"] for x in s["top_examples"]} == {ex.example_id for ex in task.subtasks[s["subtask"]]}
        assert got["subtasks"][0]["subtask"] == m.best_subtask
    rows = cli_json(ws, "sql", "SELECT rank, subtask, influence, score FROM selection_explain "
                               "WHERE selection_name = 'expl' AND is_best_subtask ORDER BY rank")
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert all(r["influence"] == pytest.approx(r["score"], rel=1e-5) for r in rows)
    one = cli(ws, "explain", "expl", res.members[1].candidate_id)
    assert f"#2 {res.members[1].candidate_id}" in one and "#1 " not in one


def test_diagnose_reports_noise_agreement_and_overlaps(real):
    ws = real["ws"]
    res = select(ws, SelectConfig(task="t", count=5, name="diag", progress=False))
    assert "diagnostics" in res.provenance["params"]
    d = cli_json(ws, "diagnose", "diag")
    assert [a["checkpoints"] for a in d["checkpoint_rank_agreement"]] == [[1, 2]]
    assert -1 <= d["checkpoint_rank_agreement"][0]["spearman"] <= 1
    assert d["overlap_random"]["expected"] == pytest.approx(25 / res.n_scored)
    assert 0 <= d["overlap_bm25"]["overlap"] <= 5
    n = d["noise"]
    assert n["dim"] == 32 and n["gap"] == pytest.approx(n["kth_score"] - n["median_score"])
    text = cli(ws, "diagnose", "diag")
    assert "Spearman" in text and "overlap with random" in text


def test_noise_warning_in_plain_words():
    scores = np.linspace(0, 1e-6, 101)
    quiet = gap_vs_noise(scores, kth=1e-6, weights=[1e-5, 1e-5], dim=1024)
    assert quiet["gap_in_noise_sd"] < 2 and "indistinguishable from sketch noise" in quiet["warning"]
    loud = gap_vs_noise(np.linspace(0, 1, 101), kth=1.0, weights=[0.5, 0.5], dim=8192)
    # sd of a difference: sqrt(2 * sum w^2 (1 - c^2) / d) at c = s / sum w
    expect = np.hypot(np.sqrt(0.5 * (1 - 1.0) / 8192), np.sqrt(0.5 * (1 - 0.25) / 8192))
    assert loud["noise_sd_of_difference"] == pytest.approx(expect) and "warning" not in loud


def _n_rows(ws, table):
    return ws.lance.dataset(table).count_rows()


def test_rds_embeddings_are_a_stored_feature_set(real, tmp_path):
    from lessdb.models.loading import load_base_model
    from lessdb.featurize.embeddings import hidden_state_embeddings
    from lessdb.models.tokenization import encode_conversation, pad_token_id

    ws = real["ws"]
    out = cli_json(ws, "embed", "--run", real["run"], "--pooling", "mean", "--shard", "0/2")
    fsid, table = out["feature_set_id"], out["lance_table"]
    first = _n_rows(ws, table)
    assert 0 < first < 26 and out["examples"] == first
    cli_json(ws, "embed", "--run", real["run"], "--pooling", "mean", "--shard", "1/2")
    assert _n_rows(ws, table) == 26
    res = select(ws, SelectConfig(task="t", method="rds+", count=5, name="rdsp", progress=False))
    assert res.provenance["params"]["rds"]["feature_set_id"] == fsid and _n_rows(ws, table) == 26   # nothing recomputed
    assert res.provenance["table_versions"][table] == ws.lance.version(table)
    # independently: one forward pass per example, cosine with the normalised mean of each subtask's embeddings
    loaded = load_base_model(ws, "tiny")
    tok, pad = loaded.tokenizer, pad_token_id(loaded.tokenizer)

    def emb(msgs):
        return hidden_state_embeddings(loaded.model.eval(), [encode_conversation(tok, msgs, MSL)], pad, "mean")[0]

    task = tasks.load_task(ws, "t")
    q = {}
    for s, exs in task.subtasks.items():
        u = np.stack([emb(ex.messages) for ex in exs]).astype(np.float64)
        g = (u / np.linalg.norm(u, axis=1, keepdims=True)).mean(axis=0)
        q[s] = g / np.linalg.norm(g)
    expected = {}
    for r in real["recs"]:
        x = emb(r["messages"]).astype(np.float64)
        expected[content_hash(r["messages"])] = max(float(q[s] @ x / np.linalg.norm(x)) for s in q)
    order = sorted(expected, key=lambda c: (-expected[c], c))
    assert [m.candidate_id for m in res.members] == order[:5]
    for m in res.members:
        assert m.score == pytest.approx(expected[m.candidate_id], rel=1e-4)
    # appended candidates: the next selection embeds only them; a replay reads the recorded version
    more = [_conv(500 + i, np.random.default_rng(8)) for i in range(3)]
    write_jsonl(tmp_path / "more2.jsonl", more)
    ingest_files(ws, [tmp_path / "more2.jsonl"], pool="p", progress=False)
    again = select(ws, SelectConfig(task="t", method="rds+", count=5, progress=False))
    assert _n_rows(ws, table) == 29 and again.n_candidates == 29
    assert select(ws, SelectConfig(replay="rdsp", progress=False)).identical is True
    jobs = cli_json(ws, "sql", f"SELECT sum(n_done) AS n FROM feature_jobs WHERE feature_set_id = '{fsid}'")
    assert jobs[0]["n"] == 29   # every candidate embedded exactly once
