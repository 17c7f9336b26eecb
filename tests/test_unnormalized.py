"""Raw gradient norms stored with every feature, and the unnormalised-gradient ablation (`--method unnormalized`,
the paper's Table 12) end to end: a real tiny warmup (lessdb.runs.warmup, real peft), real featurize jobs, LanceDB +
DuckDB on disk.

The stored norms are checked against the exact sketched vector computed independently (plain autograd one
example at a time, Adam's Γ written out in numpy, the dense Rademacher Π built block by block); the scores
against a numpy recomputation from the stored vectors × norms. Feature tables made before the norm column keep
working for every other method and refuse this one clearly."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import write_jsonl
from lessdb import LessdbError, Workspace
from lessdb.tasks import catalog as tasks
from lessdb.runs.config import build_warmup_config
from lessdb.choices import DEFAULT_VAL_TRUNCATION
from lessdb.conversation import content_hash
from lessdb.featurize import FeaturizeConfig, featurize_run, validation_features, validation_key
from lessdb.featurize.sketch import rademacher_block
from lessdb.ingest.pipeline import ingest_files
from lessdb.selection import SelectConfig, select
from lessdb.storage import features as fstore
from lessdb.storage import meta_runs
from lessdb.runs.warmup import run_warmup

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda".split()
DIM = 64
SEED = 3
N_CAND = 14
TASK = [("s1", "alpha beta gamma", "delta"), ("s1", "zeta eta", "theta iota kappa"),
        ("s2", "lambda alpha", "beta beta beta beta"), ("s3", "gamma", "eta")]


def _records(seed: int, n: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"messages": [{"role": "user", "content": " ".join(rng.choice(WORDS, rng.integers(2, 12)))},
                          {"role": "assistant", "content": " ".join(rng.choice(WORDS, rng.integers(1, 14)))}]}
            for _ in range(n)]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A workspace with a complete 2-epoch tiny warmup, float16 Adam features (dense Rademacher, d=64) of every
    candidate at both checkpoints, and a 3-subtask task."""
    root = tmp_path_factory.mktemp("unnormalized-template")
    ws = Workspace.init(root / "ws")
    ingest_files(ws, [write_jsonl(root / "pool.jsonl", _records(0, N_CAND))], pool="p", progress=False)
    cfg = build_warmup_config("p", model="tiny", percentage=0.5, lora_r=4, lora_alpha=16, max_seq_length=128,
                              epochs=2, batch_size=4, micro_batch_size=2, device="cpu", lr=1e-3)
    run_id = run_warmup(ws, cfg, progress=False, count_tokens=False).run_id
    fs = featurize_run(ws, _featurize_config(run_id))
    write_jsonl(root / "task.jsonl", [{"subtask": s, "prompt": p, "completion": c} for s, p, c in TASK])
    tasks.add_tasks(ws, "toy", file=root / "task.jsonl")
    return root, run_id, fs.feature_set_id


def _featurize_config(run_id) -> FeaturizeConfig:
    return FeaturizeConfig(run_id=run_id, dim=DIM, sketch="dense-rademacher", seed=SEED, dtype="float16",
                           progress=False, batch_size=4, commit_rows=8)


@pytest.fixture
def ws_run(template, tmp_path):
    root, run_id, fsid = template
    shutil.copytree(root / "ws", tmp_path / "ws")
    return Workspace.open(tmp_path / "ws"), run_id, fsid


# -- the independent computation ------------------------------------------------------------------------------
def _exact_sketches(ws, run_id, info, epoch, conversations: list[list[dict]], adam: bool) -> np.ndarray:
    """Π·Γ (adam) or Π·g (plain gradient) of each conversation in float64, without the featurize engine: one
    example at a time through ordinary autograd, Adam as the paper writes it, Π = rademacher blocks per slice."""
    from lessdb.runs.checkpoint_models import load_checkpoint_model
    from lessdb.runs.checkpoints import load_optimizer_state
    from lessdb.models.tokenization import collate, encode_conversation, pad_token_id

    model, base = load_checkpoint_model(ws, run_id, epoch, device="cpu", dtype=torch.float32)
    named = dict(model.named_parameters())
    names = [name for name, _ in info.module_order]
    weights = [named[n] for n in names]
    ckpt = {c.epoch: c for c in meta_runs.list_checkpoints(ws, run_id)}[epoch]
    state = load_optimizer_state(ckpt.path)
    b1, b2 = state["betas"]
    t, eps = int(state["step"]), float(state["eps"])
    pi = [rademacher_block(info.sketch_seed, k, 0, int(np.prod(shape)), info.dim).double().numpy()
          for k, (_, shape) in enumerate(info.module_order)]
    out = []
    for messages in conversations:
        enc = encode_conversation(base.tokenizer, messages, info.max_seq_length)
        batch = collate([enc], pad_token_id(base.tokenizer))
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][0, 1:]
        keep = labels != -100
        loss = torch.nn.functional.cross_entropy(logits[0, :-1][keep], labels[keep])
        grads = torch.autograd.grad(loss, weights)
        total = np.zeros(info.dim)
        for k, (name, g) in enumerate(zip(names, grads)):
            g = g.detach().double().numpy().ravel()
            if adam:
                m = b1 * state["exp_avg"][name].double().numpy().ravel() + (1 - b1) * g
                v = b2 * state["exp_avg_sq"][name].double().numpy().ravel() + (1 - b2) * g * g
                g = (m / (1 - b1 ** t)) / np.sqrt(v / (1 - b2 ** t) + eps)
            total += g @ pi[k]
        out.append(total)
    return np.array(out)


def _stored(ws, info, version=None) -> dict:
    """(role, epoch, example_id) -> (float64 vector, norm) as stored."""
    t = ws.lance.dataset(info.lance_table, version).to_table(columns=["role", "epoch", "example_id", "vector", "norm"])
    vecs = np.array(t.column("vector").to_pylist(), dtype=np.float64)
    keys = zip(t.column("role").to_pylist(), t.column("epoch").to_pylist(), t.column("example_id").to_pylist())
    return {k: (v, n) for k, v, n in zip(keys, vecs, t.column("norm").to_pylist())}


def _candidates(ws) -> dict[str, list[dict]]:
    t = ws.lance.dataset("candidates").to_table(columns=["id", "messages"])
    return dict(zip(t.column("id").to_pylist(), t.column("messages").to_pylist()))


def _expected_unnormalized(ws, run_id, info, version, cand_ids) -> dict[str, tuple[float, str]]:
    """score(z) = maxⱼ Σᵢ η̄ᵢ ⟨mean_{z'∈Dʲ} vector(z')·norm(z'), vector(z)·norm(z)⟩ from the stored rows."""
    stored = _stored(ws, info, version)
    eta = {c.epoch: c.mean_lr for c in meta_runs.list_checkpoints(ws, run_id)}
    task = tasks.load_task(ws, "toy")
    raw = {k: v * n for k, (v, n) in stored.items()}
    subs = sorted(task.subtasks)
    out = {}
    keys = {s: [validation_key(ex.messages, info.max_seq_length, None, DEFAULT_VAL_TRUNCATION)   # select's default
                for ex in task.subtasks[s]] for s in subs}
    for cid in cand_ids:
        per = [sum(w * float(np.mean([raw[("validation", e, k)] for k in keys[s]], axis=0) @ raw[("candidate", e, cid)])
                   for e, w in eta.items()) for s in subs]
        out[cid] = (max(per), subs[int(np.argmax(per))])
    return out


# -- tests ----------------------------------------------------------------------------------------------------
def test_stored_norms_are_the_norms_of_the_exact_sketch(ws_run):
    ws, run_id, fsid = ws_run
    info = fstore.get_feature_set(ws, fsid)
    assert "norm" in ws.lance.schema(info.lance_table).names
    convs = _candidates(ws)
    ids = sorted(convs)[:5]
    val = [(f"v{k}", [{"role": "user", "content": p}, {"role": "assistant", "content": c}])
           for k, (_, p, c) in enumerate(TASK)]
    for epoch in (1, 2):
        validation_features(ws, fsid, epoch, val)
    stored = _stored(ws, info)
    for epoch in (1, 2):
        for role, keys, msgs, adam in (
                ("candidate", ids, [convs[i] for i in ids], True),
                ("validation", [validation_key(m, info.max_seq_length) for _, m in val], [m for _, m in val], False)):
            exact = _exact_sketches(ws, run_id, info, epoch, msgs, adam)
            for key, x in zip(keys, exact):
                vec, norm = stored[(role, epoch, key)]
                assert norm == pytest.approx(np.linalg.norm(x), rel=1e-4), (role, epoch)
                np.testing.assert_allclose(vec, x / np.linalg.norm(x), atol=2e-3)   # float16 unit vector
    # the norms really vary (else the ablation would equal a cosine): Adam's Γ is far from unit length
    norms = [n for (role, _, _), (_, n) in stored.items() if role == "candidate"]
    assert len(norms) == 2 * N_CAND and max(norms) > 1.2 * min(norms)


def test_unnormalized_scores_match_numpy_and_replay_is_identical(ws_run, tmp_path):
    from click.testing import CliRunner

    from lessdb.cli.main import cli

    ws, run_id, fsid = ws_run
    info = fstore.get_feature_set(ws, fsid)
    res = select(ws, SelectConfig(task="toy", method="unnormalized", count=5, name="un", progress=False))
    assert res.provenance["feature_set_id"] == fsid and res.n_scored == N_CAND
    params = res.provenance["params"]
    assert params["aggregation"] == "dot" and params["row_scale"] == "given"
    version = res.provenance["table_versions"][info.lance_table]
    exp = _expected_unnormalized(ws, run_id, info, version, sorted(_candidates(ws)))
    order = sorted(exp, key=lambda c: (-exp[c][0], c))
    scale = max(abs(v) for v, _ in exp.values())
    assert [m.candidate_id for m in res.members] == order[:5]
    for m in res.members:
        assert m.score == pytest.approx(exp[m.candidate_id][0], rel=1e-5, abs=1e-6 * scale)
        assert m.best_subtask == exp[m.candidate_id][1]
    # not a cosine in disguise: the same selection's LESS scores are a different function of the same rows
    less = select(ws, SelectConfig(task="toy", method="less", count=N_CAND, progress=False))
    less_score = {m.candidate_id: m.score for m in less.members}
    ratio = [exp[c][0] / less_score[c] for c in order]
    assert max(ratio) - min(ratio) > 1e-3 * max(abs(r) for r in ratio)

    # more candidates, featurized: a fresh selection sees them, the replay reads the recorded versions
    more = _records(7, 4)
    ingest_files(ws, [write_jsonl(tmp_path / "more.jsonl", more)], pool="p", progress=False)
    featurize_run(ws, _featurize_config(run_id))
    again = select(ws, SelectConfig(replay="un", progress=False))
    assert again.identical is True and again.n_candidates == N_CAND
    assert [(m.rank, m.candidate_id, m.score, m.best_subtask) for m in again.members] == \
        [(m.rank, m.candidate_id, m.score, m.best_subtask) for m in res.members]
    # the CLI, as a user runs it
    out = CliRunner().invoke(cli, ["--workspace", str(ws.root), "select", "--task", "toy", "--method", "unnormalized",
                                   "--count", "3", "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    got = json.loads(out.stdout)
    assert got["method"] == "unnormalized" and got["n_scored"] == N_CAND + len(more) and got["k"] == 3


def _to_old_layout(ws, info) -> None:
    """Rewrite the feature table as lessdb wrote it before the norm column (same rows, same primary key), as a
    new version of the same table: an old workspace's versions never go backwards (selections pin them)."""
    old = ws.lance.dataset(info.lance_table).to_table().drop_columns(["norm"])
    schema = fstore.feature_schema(info.dim, info.dtype, with_norm=False)
    table = ws.lance.db.open_table(info.lance_table)
    table.add(old.cast(schema), mode="overwrite")
    table.set_unenforced_primary_key("key")


def test_old_table_without_norms_works_except_unnormalized(ws_run, tmp_path):
    ws, run_id, fsid = ws_run
    info = fstore.get_feature_set(ws, fsid)
    before = select(ws, SelectConfig(task="toy", count=4, progress=False))
    _to_old_layout(ws, info)
    with pytest.raises(LessdbError, match="no `norm` column.*featurize into a new feature set"):
        select(ws, SelectConfig(task="toy", method="unnormalized", count=4, progress=False))   # (k >= 1: else
        # the k check, which comes before any feature is read, refuses first)
    after = select(ws, SelectConfig(task="toy", count=4, progress=False))
    assert [(m.candidate_id, m.score) for m in after.members] == [(m.candidate_id, m.score) for m in before.members]
    # both writers still append to it in its own layout: validation features of a new task, new candidates
    write_jsonl(tmp_path / "t2.jsonl", [{"subtask": "x", "prompt": "kappa kappa", "completion": "iota"}])
    tasks.add_tasks(ws, "toy2", file=tmp_path / "t2.jsonl")
    assert select(ws, SelectConfig(task="toy2", count=2, progress=False)).n_scored == N_CAND
    ingest_files(ws, [write_jsonl(tmp_path / "more.jsonl", _records(9, 2))], pool="p", progress=False)
    s = featurize_run(ws, _featurize_config(run_id))
    assert s.feature_set_id == fsid and s.examples == 4
    assert "norm" not in ws.lance.schema(info.lance_table).names
    assert select(ws, SelectConfig(task="toy2", count=2, progress=False)).n_scored == N_CAND + 2


def test_rows_written_without_norms_are_refused_only_when_selected(ws_run, tmp_path):
    ws, run_id, fsid = ws_run
    info = fstore.get_feature_set(ws, fsid)
    rec = _records(11, 1)
    ingest_files(ws, [write_jsonl(tmp_path / "one.jsonl", rec)], pool="p", progress=False)
    cid = content_hash(rec[0]["messages"])
    unit = np.full((1, DIM), 1 / np.sqrt(DIM))
    for epoch in (1, 2):
        fstore.write_features(ws, info, epoch, "candidate", [cid], unit)          # no norms: stored as null
    assert _stored(ws, info)[("candidate", 1, cid)][1] is None
    with pytest.raises(LessdbError, match="stored without one"):
        select(ws, SelectConfig(task="toy", method="unnormalized", count=3, progress=False))
    res = select(ws, SelectConfig(task="toy", method="unnormalized", count=3, where=f"id <> '{cid}'",
                                  progress=False))
    assert res.n_scored == N_CAND
    assert select(ws, SelectConfig(task="toy", count=3, progress=False)).n_scored == N_CAND + 1
