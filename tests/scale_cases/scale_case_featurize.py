"""Ray engine scenarios on real components: a local Ray cluster, the real CLI as the driver, the tiny warmup's
real checkpoints, LanceDB + DuckDB on disk. Run inside a loopback-only network namespace (see conftest)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import lance
import numpy as np
import pytest
import torch

from conftest import run_cli
from scale_fixtures import cli, cli_json
from lessdb import Workspace
from lessdb.featurize import FeaturizeConfig, featurize_run
from lessdb.storage import meta_features, meta_leases, meta_scale
from lessdb.storage.features import get_feature_set
from test_featurize_jobs import DIM, N_GOOD

FEAT = ("--dim", str(DIM), "--batch-size", "4")


def _ray(address, *extra, workers=1):
    # one worker unless the test needs two: every actor process imports torch, most of these tests' time
    return ("featurize", "--engine", "ray", "--ray-address", address, "--workers", str(workers), *extra)


def _rows(ws, fsid) -> dict[str, np.ndarray]:
    info = get_feature_set(ws, fsid)
    t = ws.lance.dataset(info.lance_table).to_table(columns=["key", "vector", "norm"])
    keys = t.column("key").to_pylist()
    assert len(keys) == len(set(keys)), "duplicate keys"
    vecs = t.column("vector").combine_chunks().flatten().to_numpy().reshape(len(keys), -1)
    norms = t.column("norm").to_numpy()
    return {k: (v, n) for k, v, n in zip(keys, vecs, norms)}


def _featurize_ray(ws_root, run_id, address, *extra, workers=1):
    """The driver in this process (joins the session's cluster); only the kill -9 test needs a subprocess."""
    return cli_json(ws_root, *_ray(address, *extra, workers=workers), "--run", run_id, *FEAT)


def _lance_commits(ws, table) -> dict[str, dict]:
    ds = ws.lance.dataset(table)
    out = {}
    for v in range(1, ds.latest_version + 1):
        t = ds.read_transaction(v)
        if t is not None and "lessdb.job" in (t.transaction_properties or {}):
            out[t.uuid] = {"version": v, **t.transaction_properties}
    return out


def test_ray_equals_local_bit_for_bit(ws_copy, ray_cluster, tmp_path):
    """On the session's two-node cluster: the actors of both nodes write rows, the keys and vectors equal the
    local engine's bit for bit, and no worker opens anything in the driver's workspace outside its tables
    folder (the checkpoint reaches the nodes through Ray's object store)."""
    import shutil

    import ray

    from conftest import write_jsonl
    from lessdb.ingest.pipeline import ingest_files
    from lessdb.storage.candidates import select_candidate_ids
    from lessdb.storage.meta_runs import list_checkpoints
    from scale_fixtures import worker_opens
    from test_featurize_jobs import _records

    ws_root, run_id = ws_copy
    # 40 more candidates: 71 ids make two work units of the local engine's 64-id read chunk, so both actors
    # (one per node: each node has one CPU) compute and write rows, with the local engine's batches
    ingest_files(Workspace.open(ws_root), [write_jsonl(tmp_path / "more.jsonl", _records(7, 40))], pool="p",
                 progress=False)
    n_good = len(select_candidate_ids(Workspace.open(ws_root), "p")) - 1     # all but LONG
    assert n_good > 64
    local_root = tmp_path / "ws-local"
    shutil.copytree(ws_root, local_root)
    before = torch.get_num_threads()
    torch.set_num_threads(1)   # the workers compute with one thread: same BLAS path
    try:
        local = featurize_run(Workspace.open(local_root), FeaturizeConfig(run_id=run_id, dim=DIM, batch_size=4,
                                                                          progress=False))
    finally:
        torch.set_num_threads(before)
    summary = _featurize_ray(ws_root, run_id, ray_cluster, workers=2)
    nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    # rows from both nodes (every checkpoint's units share one queue, so a checkpoint's rows may come from either)
    assert len(nodes) == 2 and sorted({n for j in summary["jobs"] for n in j["nodes"]}) == nodes
    assert all(j["nodes"] and set(j["nodes"]) <= set(nodes) for j in summary["jobs"])
    # forbidden: the driver's workspace (but its tables folder) and the checkpoint folders the catalogue records
    # (a copied workspace still names the template's)
    tables = str((ws_root / "lance").resolve())
    forbidden = [str(ws_root.resolve())] + [c.path for c in list_checkpoints(Workspace.open(ws_root), run_id)]
    opened = worker_opens()
    stray = sorted(p for p in opened if any((p + os.sep).startswith(f + os.sep) for f in forbidden) and
                   not p.startswith(tables + os.sep))
    assert not stray, f"Ray workers opened the driver's workspace: {stray[:5]}"
    cache = os.environ["LESSDB_CACHE_DIR"]   # control: the log does see the workers' checkpoint reads
    assert any(p.startswith(cache) and p.endswith("adapter_config.json") for p in opened), sorted(opened)[:20]
    assert summary["feature_set_id"] == local.feature_set_id      # same feature set identity on both engines
    assert summary["examples"] == local.examples == 2 * n_good and summary["excluded"] == local.excluded == 2
    ws, wl = Workspace.open(ws_root), Workspace.open(local_root)
    a, b = _rows(ws, summary["feature_set_id"]), _rows(wl, local.feature_set_id)
    assert sorted(a) == sorted(b) and len(a) == 2 * n_good
    for key in a:
        assert np.array_equal(a[key][0], b[key][0]), key          # bit for bit
        assert a[key][1] == b[key][1], key
    assert meta_features.excluded_ids(ws, local.feature_set_id, "candidate", 1) == \
        meta_features.excluded_ids(wl, local.feature_set_id, "candidate", 1)
    jobs = meta_features.job_rows(ws, local.feature_set_id)
    assert {j["job_id"]: j["status"] for j in jobs if j["role"] == "candidate"} == \
        {f"{local.feature_set_id}/candidate/{e}/0of1": "complete" for e in (1, 2)}
    with ws.duck.connect(read_only=True) as con:   # provenance records the engine; the lease is released
        rows = con.execute("SELECT engine, lease_owner FROM feature_jobs WHERE role = 'candidate'").fetchall()
    assert rows == [("ray", None), ("ray", None)]
    # every DuckDB commit row is one Lance transaction with our uuid, and vice versa
    recorded = {c["txn_uuid"]: c for c in meta_scale.commit_rows(ws)}
    in_lance = _lance_commits(ws, summary["lance_table"])
    assert set(recorded) == set(in_lance) and recorded
    assert sum(c["n_rows"] for c in recorded.values()) == 2 * n_good
    assert all(recorded[u]["lance_version"] == in_lance[u]["version"] for u in recorded)
    # a rerun finds nothing to do
    again = _featurize_ray(ws_root, run_id, ray_cluster)
    assert again["examples"] == 0 and again["already_present"] == 2 * (n_good + 1)


def test_kill_driver_after_lance_commit_then_rerun(ws_copy, ray_cluster):
    """kill -9 right after a Lance commit and before DuckDB records it: the rerun records the commit from Lance
    (recovered), computes only what is not stored, and every key is stored once."""
    ws_root, run_id = ws_copy
    args = ("--unit-rows", "8", "--commit-units", "1", "--checkpoints", "1")
    proc = run_cli(*_ray(ray_cluster, *args), "--run", run_id, *FEAT, "--json", workspace=ws_root, check=False,
                   env={"LESSDB_FAULT": "driver:2"})
    assert proc.returncode == -9, proc.stderr
    ws = Workspace.open(ws_root)
    fsid = meta_features.job_rows(ws)[0]["feature_set_id"]
    info = get_feature_set(ws, fsid)
    stored = len(_rows(ws, fsid))
    assert 0 < stored < N_GOOD
    assert len(meta_scale.commit_rows(ws)) == 1            # the second commit reached Lance, not DuckDB
    summary = _featurize_ray(ws_root, run_id, ray_cluster, *args)
    assert summary["examples"] == N_GOOD - stored           # nothing committed is computed again
    assert summary["jobs"][0]["recovered_commits"] == 1
    assert sorted(_rows(ws, fsid)) == sorted(f"candidate/1/{e}" for e in _good_ids(ws, fsid, 1))
    recorded = meta_scale.commit_rows(ws)
    assert set(c["txn_uuid"] for c in recorded) == set(_lance_commits(ws, info.lance_table))
    assert [c["recovered"] for c in recorded].count(True) == 1
    job = meta_features.job_rows(ws, fsid)[0]
    assert job["status"] == "complete" and job["n_done"] == N_GOOD and job["n_excluded"] == 1


def _good_ids(ws, fsid, epoch):
    from lessdb.storage.candidates import select_candidate_ids
    from lessdb.storage.meta_runs import list_checkpoints

    excluded = meta_features.excluded_ids(ws, fsid, "candidate", epoch)
    return [e for e in select_candidate_ids(ws, "p") if e not in excluded]


def _data_files(ws, table) -> tuple[set[str], set[str]]:
    """(data files on disk, data files referenced by the latest version)."""
    uri = ws.lance.table_uri(table)
    on_disk = {p.name for p in (Path(uri) / "data").glob("*.lance")}
    ds = lance.dataset(uri)
    referenced = {f.path.rsplit("/", 1)[-1] for frag in ds.get_fragments() for f in frag.data_files()}
    return on_disk, referenced


def test_kill_worker_then_complete_and_vacuum(ws_copy, ray_cluster, tmp_path):
    ws_root, run_id = ws_copy
    os.environ.update(LESSDB_FAULT="worker:1", LESSDB_FAULT_MARKER=str(tmp_path / "killed"))
    try:
        summary = _featurize_ray(ws_root, run_id, ray_cluster, "--unit-rows", "8", "--checkpoints", "1", workers=2)
    finally:
        del os.environ["LESSDB_FAULT"], os.environ["LESSDB_FAULT_MARKER"]
    assert (tmp_path / "killed").exists(), "the fault did not fire"
    ws = Workspace.open(ws_root)
    fsid = summary["feature_set_id"]
    before = _rows(ws, fsid)
    assert summary["examples"] == N_GOOD and len(before) == N_GOOD
    on_disk, referenced = _data_files(ws, summary["lance_table"])
    assert referenced < on_disk, "the killed worker's fragment should be an orphan file"
    # vacuum is refused while a job holds its lease (a live process: this one)
    with ws.duck.transaction() as con:
        con.execute("UPDATE feature_jobs SET status = 'running', lease_owner = ? WHERE role = 'candidate'",
                    [meta_leases.lease_owner()])
    refused = run_cli("vacuum", "--json", workspace=ws_root, check=False)   # the real CLI: a clear error
    assert refused.returncode != 0 and "lease" in refused.stderr and "Traceback" not in refused.stderr
    assert _data_files(ws, summary["lance_table"])[0] == on_disk
    with ws.duck.transaction() as con:
        con.execute("UPDATE feature_jobs SET status = 'complete', lease_owner = NULL")
    cli(ws_root, "vacuum", "--json")
    on_disk2, referenced2 = _data_files(ws, summary["lance_table"])
    assert on_disk2 == referenced2 == referenced
    after = _rows(ws, fsid)
    assert sorted(after) == sorted(before) and all(np.array_equal(after[k][0], before[k][0]) for k in after)
    versions = ws.lance.dataset(summary["lance_table"]).versions()
    assert len(versions) >= 2                    # vacuum keeps every version (replay needs them)


def test_second_driver_refused_while_first_holds_lease(ws_copy, ray_cluster):
    """A live driver's lease (a sleeping process stands in for it) refuses a Ray driver and a local one."""
    import subprocess
    import sys

    ws_root, run_id = ws_copy
    ws = Workspace.open(ws_root)
    first = featurize_run(ws, FeaturizeConfig(run_id=run_id, dim=DIM, batch_size=4, checkpoints=(1,), progress=False))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        with ws.duck.transaction() as con:
            con.execute("UPDATE feature_jobs SET status = 'running', engine = 'ray', lease_owner = ?, "
                        "lease_expires_at = current_timestamp + INTERVAL 600 SECOND",
                        [meta_leases.lease_owner(sleeper.pid)])
        for args in (_ray(ray_cluster), ("featurize",)):
            result = cli(ws_root, *args, "--run", run_id, *FEAT, "--checkpoints", "1", ok=False)
            assert result.exit_code != 0 and "holds the lease" in str(result.exception), result.output
    finally:
        sleeper.kill()
        sleeper.wait()
    again = _featurize_ray(ws_root, run_id, ray_cluster, "--checkpoints", "1")   # its owner died: lease free
    assert again["examples"] == 0 and first.examples == N_GOOD


def test_preflight_refuses_before_writing_anything(ws_copy, ray_cluster, tmp_path):
    """On the session's GPU-less two-node cluster (1 CPU each): a GPU request, or more CPU workers than CPUs, is
    refused with the reason and leaves no job row and no feature set; a table no node can open names each node."""
    import ray

    from lessdb.errors import LessdbError
    from lessdb.scale.preflight import check_cluster

    ws_root, run_id = ws_copy
    for extra, workers, reason in ((("--gpus-per-worker", "1"), 2, "the cluster has 0 GPUs"),
                                   ((), 3, "the cluster has 2 CPUs; --workers 3")):
        res = cli(ws_root, *_ray(ray_cluster, *extra, workers=workers), "--run", run_id, *FEAT, ok=False)
        message = f"{res.exception} {res.output}"   # in-process click: the LessdbError is the result's exception
        assert res.exit_code == 1 and reason in message and "nothing was written" in message, message
    ws = Workspace.open(ws_root)
    assert ws.sql("SELECT count(*) AS n FROM feature_jobs").to_pylist() == [{"n": 0}]
    assert ws.sql("SELECT count(*) AS n FROM feature_sets").to_pylist() == [{"n": 0}]
    assert not [t for t in ws.lance.table_names() if t.startswith("features_")]
    with pytest.raises(LessdbError) as err:
        check_cluster(ray, str(tmp_path / "nowhere.lance"), None, 1)
    assert str(err.value).count("cannot open") == 2 and "AWS_*" in str(err.value)
    assert check_cluster(ray, ws.lance.table_uri("candidates"), None, None, workers=2, cpus_per_worker=1)["nodes"] == 2


def test_select_on_a_partial_feature_set_is_refused_on_either_engine(ws_copy, ray_cluster, tmp_path):
    """Issue 23: only shard 0 of 2 featurized. `select --engine ray` (and --prefilter on the cluster) is refused
    as the local engine is, naming the command that completes the set; --allow-partial scores the same stored
    vectors on the cluster as locally and records the same partial state."""
    from conftest import write_jsonl
    from lessdb.tasks.catalog import add_tasks

    ws_root, run_id = ws_copy
    ws = Workspace.open(ws_root)
    featurize_run(ws, FeaturizeConfig(run_id=run_id, dim=DIM, batch_size=4, shard=(0, 2), progress=False))
    add_tasks(ws, "toy", file=write_jsonl(tmp_path / "task.jsonl", [
        {"subtask": "a", "prompt": "alpha beta", "completion": "gamma"},
        {"subtask": "b", "prompt": "delta", "completion": "epsilon zeta"}]))
    ray = ("--engine", "ray", "--ray-address", ray_cluster)
    for extra in ((), ("--prefilter", f"{DIM // 2}x2")):
        refused = cli(ws_root, "select", "--task", "toy", "--run", run_id, "--count", "3", *ray, *extra, ok=False)
        assert refused.exit_code == 1 and "is incomplete" in str(refused.exception), refused.output
        assert f"lessdb featurize --run {run_id} --dim {DIM}" in str(refused.exception)
    remote = cli_json(ws_root, "select", "--task", "toy", "--run", run_id, "--count", "3", "--allow-partial", *ray)
    local = cli_json(ws_root, "select", "--task", "toy", "--run", run_id, "--count", "3", "--allow-partial")
    assert remote["partial"] == local["partial"] and remote["partial"]["n_missing"] > 0
    assert remote["members_head"] == local["members_head"]
