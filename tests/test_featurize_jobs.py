"""Featurize jobs on real storage: a real tiny warmup (lessdb.runs.warmup), real peft, LanceDB + DuckDB.

Complete and duplicate-free after kill -9 + rerun, two shard processes at once, incremental reruns,
validation features cached, the CLI's --json output."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from conftest import run_cli, write_jsonl
from lessdb import Workspace
from lessdb.runs.config import build_warmup_config
from lessdb.featurize import FeaturizeConfig, featurize_run, shard_of, validation_features
from lessdb.ingest.pipeline import ingest_files
from lessdb.storage import meta_features
from lessdb.storage.features import get_feature_set, iter_feature_batches
from lessdb.runs.warmup import run_warmup

pytestmark = pytest.mark.usefixtures("one_torch_thread")


WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda".split()
N_GOOD = 30
DIM = 128


def _records(seed: int, n: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"messages": [{"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(2, 12)))},
                          {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=rng.randint(1, 10)))}]}
            for _ in range(n)]


LONG = {"messages": [{"role": "user", "content": "x" * 400}, {"role": "assistant", "content": "too late"}]}


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("featurize-template")
    ws = Workspace.init(root / "ws")
    ingest_files(ws, [write_jsonl(root / "pool.jsonl", _records(0, N_GOOD) + [LONG])], pool="p")
    cfg = build_warmup_config("p", model="tiny", percentage=0.5, lora_r=4, lora_alpha=16, max_seq_length=128,
                              epochs=2, batch_size=4, micro_batch_size=2, device="cpu")
    run_id = run_warmup(ws, cfg, progress=False, count_tokens=False).run_id
    return root, run_id


@pytest.fixture
def ws_run(template, tmp_path):
    root, run_id = template
    shutil.copytree(root / "ws", tmp_path / "ws")
    return Workspace.open(tmp_path / "ws"), run_id


def _config(run_id, **kw) -> FeaturizeConfig:
    base = dict(run_id=run_id, dim=DIM, progress=False, batch_size=4, commit_rows=8)
    base.update(kw)
    return FeaturizeConfig(**base)


def _stored_keys(ws, fsid) -> list[str]:
    info = get_feature_set(ws, fsid)
    return ws.lance.dataset(info.lance_table).to_table(columns=["key"]).column("key").to_pylist()


def _assert_complete(ws, fsid, epochs=(1, 2), n=N_GOOD):
    keys = _stored_keys(ws, fsid)
    assert len(keys) == len(set(keys)), "duplicate feature rows"
    for epoch in epochs:
        ids = [i for batch_ids, _ in iter_feature_batches(ws, fsid, epoch) for i in batch_ids]
        assert len(ids) == n and len(set(ids)) == n
    return keys


def test_featurize_complete_normalised_and_recorded(ws_run):
    ws, run_id = ws_run
    s = featurize_run(ws, _config(run_id))
    assert (s.examples, s.excluded, s.epochs) == (2 * N_GOOD, 2, [1, 2])
    _assert_complete(ws, s.feature_set_id)
    info = get_feature_set(ws, s.feature_set_id)
    assert (info.sketch_kind, info.dim, info.dtype, info.grad_kind, info.bias_correction) == \
           ("countsketch", DIM, "float16", "adam", True)
    assert ws.lance.schema(info.lance_table).field("vector").type.value_type == pa.float16()
    assert info.n_params == sum(np.prod(shape) for _, shape in info.module_order)
    for epoch in (1, 2):
        for _, vecs in iter_feature_batches(ws, s.feature_set_id, epoch):
            np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=2e-3)   # float16 unit vectors
            assert np.isfinite(vecs).all()
    # the over-long example is excluded and recorded, never stored
    excl = meta_features.excluded_ids(ws, s.feature_set_id, "candidate", 1)
    assert len(excl) == 1 and "no completion token" in next(iter(excl.values()))
    # epochs differ (different adapters and moments): features really come from each checkpoint
    v1 = dict(zip(*next(iter_feature_batches(ws, s.feature_set_id, 1))))
    v2 = dict(zip(*next(iter_feature_batches(ws, s.feature_set_id, 2))))
    common = sorted(set(v1) & set(v2))[:5]
    assert common and not all(np.allclose(v1[c], v2[c]) for c in common)
    # a rerun computes nothing, writes no new version
    again = featurize_run(ws, _config(run_id))
    assert again.examples == 0 and again.already_present == 2 * (N_GOOD + 1)
    assert again.lance_version == s.lance_version
    # other settings make another feature set; the default one is not touched
    other = featurize_run(ws, _config(run_id, checkpoints=(2,), sketch="dense-rademacher", dtype="float32",
                                      bias_correction=False))
    assert other.feature_set_id != s.feature_set_id and other.examples == N_GOOD
    assert get_feature_set(ws, other.feature_set_id).dtype == "float32"


def test_default_dtype_keeps_extending_an_existing_float32_feature_set(ws_run):
    """Workspaces made when float32 was the default: featurizing again without --dtype extends their float32
    set (same id, only the missing rows), instead of recomputing everything as float16."""
    ws, run_id = ws_run
    old = featurize_run(ws, _config(run_id, checkpoints=(1,), dtype="float32"))
    assert get_feature_set(ws, old.feature_set_id).dtype == "float32" and old.examples == N_GOOD
    again = featurize_run(ws, _config(run_id))            # no dtype: the existing float32 set, epoch 2 added
    assert again.feature_set_id == old.feature_set_id and again.examples == N_GOOD
    half = featurize_run(ws, _config(run_id, checkpoints=(1,), dtype="float16"))
    assert half.feature_set_id != old.feature_set_id and get_feature_set(ws, half.feature_set_id).dtype == "float16"
    # scores depend on the dtype only through rounding: the two sets hold the same unit vectors to ~1e-3
    a = {i: v for ids, vs in iter_feature_batches(ws, old.feature_set_id, 1) for i, v in zip(ids, vs)}
    b = {i: v for ids, vs in iter_feature_batches(ws, half.feature_set_id, 1) for i, v in zip(ids, vs)}
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k].astype(np.float16).astype(np.float32), atol=0)
    # once a float16 set exists, it is the default one
    assert featurize_run(ws, _config(run_id, checkpoints=(1,))).feature_set_id == half.feature_set_id


def test_features_do_not_depend_on_batch_size(ws_run):
    ws, run_id = ws_run
    # float32: compares the arithmetic, not where float16 rounding falls
    a = featurize_run(ws, _config(run_id, checkpoints=(1,), batch_size=1, sketch="dense-rademacher", dtype="float32"))
    # same feature set id: recompute in a copy of the workspace without the vectors, another batch size
    shutil.copytree(ws.root, ws.root.parent / "ws-b")
    ws_b = Workspace.open(ws.root.parent / "ws-b")
    ws_b.lance.db.drop_table(get_feature_set(ws, a.feature_set_id).lance_table)
    b = featurize_run(ws_b, _config(run_id, checkpoints=(1,), batch_size=7, sketch="dense-rademacher",
                                    dtype="float32"))
    assert b.feature_set_id == a.feature_set_id
    va = {i: v for ids, vs in iter_feature_batches(ws, a.feature_set_id, 1) for i, v in zip(ids, vs)}
    vb = {i: v for ids, vs in iter_feature_batches(ws_b, b.feature_set_id, 1) for i, v in zip(ids, vs)}
    assert va.keys() == vb.keys()
    for k in va:
        np.testing.assert_allclose(va[k], vb[k], atol=2e-5)


CHILD = """
import sys
from lessdb import Workspace
from lessdb.featurize import FeaturizeConfig, featurize_run
ws = Workspace.open(sys.argv[1])
featurize_run(ws, FeaturizeConfig(run_id=sys.argv[2], dim=%d, progress=False, batch_size=1, commit_rows=2))
""" % DIM


def _versions(ws_root: Path) -> int:
    dirs = list((ws_root / "lance").glob("features_*.lance/_versions"))
    return len(list(dirs[0].iterdir())) if dirs else 0


def test_kill_during_featurize_then_rerun_is_complete(ws_run):
    ws, run_id = ws_run
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(ws.root), run_id], stderr=subprocess.PIPE,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.monotonic() + 120
    while _versions(ws.root) < 5 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert child.poll() is None, child.stderr.read().decode()[-2000:]
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    fsid = meta_features.feature_set_rows(ws)[0]["feature_set_id"]
    partial = _stored_keys(ws, fsid)
    assert 0 < len(partial) < 2 * N_GOOD   # killed mid-run
    s = featurize_run(ws, _config(run_id))
    assert s.feature_set_id == fsid
    assert s.examples == 2 * N_GOOD - len(partial)
    _assert_complete(ws, fsid)
    assert all(j["status"] == "complete" for j in meta_features.job_rows(ws, fsid))


@pytest.mark.slow   # two featurize processes at once: ~14 CPU s
def test_two_shards_in_two_processes(ws_run):
    ws, run_id = ws_run
    procs = [subprocess.Popen([sys.executable, "-m", "lessdb.cli.main", "featurize", "--run", run_id, "--dim", str(DIM),
                               "--shard", f"{i}/2", "--batch-size", "4", "--json"],
                              env=dict(os.environ, LESSDB_WORKSPACE=str(ws.root), LESSDB_PROGRESS="0", OMP_NUM_THREADS="1"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    summaries = [json.loads(o[0]) for o in outs]
    fsid = summaries[0]["feature_set_id"]
    assert summaries[1]["feature_set_id"] == fsid
    assert sum(s["examples"] for s in summaries) == 2 * N_GOOD
    _assert_complete(ws, fsid)
    jobs = meta_features.job_rows(ws, fsid)
    assert sorted((j["epoch"], j["shard_index"], j["shard_count"]) for j in jobs) == [(1, 0, 2), (1, 1, 2), (2, 0, 2), (2, 1, 2)]
    # each process did exactly its hash shard
    for s in summaries:
        i = int(s["shard"].split("/")[0])
        assert s["jobs"][0]["shard_examples"] == sum(1 for e in _all_ids(ws) if shard_of(e, 2) == i)


def _all_ids(ws) -> list[str]:
    from lessdb.storage.candidates import select_candidate_ids
    return select_candidate_ids(ws, "p")


def test_incremental_only_new_candidates(ws_run, tmp_path):
    ws, run_id = ws_run
    first = featurize_run(ws, _config(run_id))
    ingest_files(ws, [write_jsonl(tmp_path / "more.jsonl", _records(99, 6))], pool="p")
    n_new = len(_all_ids(ws)) - (N_GOOD + 1)
    assert n_new > 0
    second = featurize_run(ws, _config(run_id))
    assert second.feature_set_id == first.feature_set_id
    assert second.examples == 2 * n_new and second.already_present == 2 * (N_GOOD + 1)
    _assert_complete(ws, first.feature_set_id, n=N_GOOD + n_new)


def test_where_filter_and_cli(ws_run):
    ws, run_id = ws_run
    out = run_cli("featurize", "--run", run_id, "--dim", str(DIM), "--checkpoints", "1", "--where",
                  "completion_chars < 30", "--json", workspace=ws.root, env={"LESSDB_PROGRESS": "0", "OMP_NUM_THREADS": "1"})
    summary = json.loads(out.stdout)
    from lessdb.storage.candidates import select_candidate_ids
    want = select_candidate_ids(ws, "p", "completion_chars < 30")
    assert 0 < len(want) < N_GOOD
    assert summary["examples"] + summary["excluded"] == len(want)
    # the cheap commands in-process (a subprocess costs an interpreter start + torch import)
    from click.testing import CliRunner
    from lessdb.cli.main import cli
    listed = json.loads(CliRunner().invoke(cli, ["--workspace", str(ws.root), "feature-sets", "--json"]).output)
    assert listed[0]["feature_set_id"] == summary["feature_set_id"] and listed[0]["jobs"]["candidate/1"]["done"] == \
           summary["examples"]
    bad = CliRunner().invoke(cli, ["--workspace", str(ws.root), "featurize", "--run", run_id, "--shard", "2/2"])
    assert bad.exit_code != 0 and "shard" in str(bad.output) + str(bad.exception)


def test_validation_features_cached_and_consistent(ws_run):
    ws, run_id = ws_run
    s = featurize_run(ws, _config(run_id, checkpoints=(1,), grad_kind="sgd"))
    recs = _records(5, 3)
    examples = [(f"val-{k}", r["messages"]) for k, r in enumerate(recs)] + [("val-long", LONG["messages"])]
    got = validation_features(ws, s.feature_set_id, 1, examples)
    assert sorted(got) == ["val-0", "val-1", "val-2"]          # the one without completion tokens is omitted
    for v in got.values():   # float16 unit vectors (the default stored dtype), returned as stored
        assert v.shape == (DIM,) and abs(np.linalg.norm(v) - 1) < 2e-3
        np.testing.assert_array_equal(v, v.astype(np.float16).astype(np.float32))
    version = ws.lance.version(get_feature_set(ws, s.feature_set_id).lance_table)
    again = validation_features(ws, s.feature_set_id, 1, examples)
    assert ws.lance.version(get_feature_set(ws, s.feature_set_id).lance_table) == version   # served from cache
    for k in got:
        np.testing.assert_array_equal(got[k], again[k])
    # same code path as candidates: an sgd candidate feature of the same conversation is the same vector
    ingest_files(ws, [write_jsonl(ws.root.parent / "v.jsonl", [recs[0]])], pool="p")
    featurize_run(ws, _config(run_id, checkpoints=(1,), grad_kind="sgd"))
    from lessdb.conversation import content_hash
    cid = content_hash(recs[0]["messages"])
    cand = {i: v for ids, vs in iter_feature_batches(ws, s.feature_set_id, 1) for i, v in zip(ids, vs)}
    np.testing.assert_allclose(cand[cid], got["val-0"], atol=1e-5)
