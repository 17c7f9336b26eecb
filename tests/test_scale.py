"""Scale out: the tables location, the driver lease, and (in a loopback-only network namespace) the Ray and S3
scenarios of tests/scale_cases/."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MISSING_COMPONENT, missing, run_cli
from lessdb import Workspace
from lessdb.errors import LessdbError
from lessdb.storage import meta_features, meta_leases
from lessdb.storage.object_store import load_location, parse_storage_options

REPO = Path(__file__).resolve().parents[1]


def test_storage_options_never_take_secrets(tmp_path):
    assert parse_storage_options(["aws_endpoint=http://127.0.0.1:9", "allow_http=true"]) == {
        "aws_endpoint": "http://127.0.0.1:9", "allow_http": "true"}
    for bad in ("aws_secret_access_key=x", "aws_access_key_id=AKIA", "aws_session_token=t", "noequals"):
        with pytest.raises(LessdbError):
            parse_storage_options([bad])
    (tmp_path / "tables.json").write_text(json.dumps({"uri": "s3://b/p", "storage_options": {"aws_secret_access_key": "x"}}))
    with pytest.raises(LessdbError, match="tables.json.*credentials"):
        load_location(tmp_path, "lance")
    (tmp_path / "tables.json").write_text("{not json")
    with pytest.raises(LessdbError, match="tables.json"):
        load_location(tmp_path, "lance")


def test_tables_location_is_recorded_and_cannot_move(tmp_path):
    other = tmp_path / "elsewhere"
    info = json.loads(run_cli("init", "--tables", other, "--json", workspace=tmp_path / "ws").stdout)
    assert info["tables"] == str(other.resolve())
    ws = Workspace.open(tmp_path / "ws")
    assert ws.lance.has_table("candidates") and (other / "candidates.lance").is_dir()
    assert not list((tmp_path / "ws" / "lance").glob("*.lance"))
    moved = run_cli("init", "--tables", tmp_path / "third", workspace=tmp_path / "ws", check=False)
    assert moved.returncode != 0 and "not supported" in moved.stderr and "Traceback" not in moved.stderr


def test_init_on_an_unreachable_store_is_refused_and_leaves_nothing(tmp_path):
    """`init --tables s3://…` where the store cannot be listed (here: nothing listens at the endpoint): exit 1 with
    the bucket and the reason named, and no workspace folder left behind (it used to be exit 70 and a workspace
    half made). The missing-bucket case against moto: tests/scale_cases/scale_case_s3.py."""
    import socket

    with socket.socket() as sock:        # a loopback port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT": f"http://127.0.0.1:{port}", "AWS_ALLOW_HTTP": "true", "AWS_EC2_METADATA_DISABLED": "true"}
    res = run_cli("init", "--tables", "s3://lessdb-nowhere/ws", workspace=tmp_path / "ws", check=False, env=env)
    assert res.returncode == 1, res.stderr
    assert "cannot use bucket 'lessdb-nowhere'" in res.stderr and "connection refused" in res.stderr
    assert "nothing was created" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "ws").exists()


def _job(i=0, n=1, epoch=1):
    return {"job_id": f"fs/candidate/{epoch}/{i}of{n}", "feature_set_id": "fs", "role": "candidate", "epoch": epoch,
            "shard_index": i, "shard_count": n}


def test_lease_one_driver_per_checkpoint_except_disjoint_shards(workspace):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        other = meta_leases.lease_owner(sleeper.pid)          # a live driver on this host
        me = meta_leases.lease_owner()
        meta_features.start_job(workspace, _job(), owner=other, engine="ray")
        for job, engine in ((_job(), "ray"), (_job(), "local"), (_job(0, 2), "local")):
            with pytest.raises(LessdbError, match="holds the lease"):
                meta_features.start_job(workspace, job, owner=me, engine=engine)
        meta_features.start_job(workspace, _job(epoch=2), owner=me, engine="ray")   # another checkpoint: fine
        meta_features.finish_job(workspace, "fs/candidate/1/0of1")
        # local shards of one n run side by side; a different n or a Ray driver does not join them
        meta_features.start_job(workspace, _job(0, 2), owner=other, engine="local")
        meta_features.start_job(workspace, _job(1, 2), owner=me, engine="local")
        with pytest.raises(LessdbError, match="holds the lease"):
            meta_features.start_job(workspace, _job(1, 3), owner=me, engine="local")
        assert {j["job_id"] for j in meta_leases.live_leases(workspace)} == \
            {"fs/candidate/2/0of1", "fs/candidate/1/0of2", "fs/candidate/1/1of2"}
    finally:
        sleeper.kill()
        sleeper.wait()
    # its owner died (kill -9): the lease is free at once
    meta_features.start_job(workspace, _job(), owner=meta_leases.lease_owner(), engine="ray")


def _loopback_namespace() -> tuple[list[str] | None, str]:
    """How to start a process in a private network namespace that has only `lo`: `unshare -n` (root), else
    `unshare -rn` (an unprivileged user namespace); (None, why not) where this machine allows neither."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None, "`unshare` and `ip` are not both on PATH"
    errors = []
    for cmd in (["unshare", "-n"], ["unshare", "-rn"]):
        try:
            proc = subprocess.run([*cmd, "true"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            errors.append(f"{' '.join(cmd)}: {exc}")
            continue
        if proc.returncode == 0:
            return cmd, ""
        errors.append(f"`{' '.join(cmd)} true` failed: {proc.stderr.strip() or proc.returncode}")
    return None, "; ".join(errors)


NAMESPACE, NO_NAMESPACE = _loopback_namespace()   # checked once, at collection


@pytest.mark.scale
@pytest.mark.skipif(NAMESPACE is None, reason=missing(
    MISSING_COMPONENT, f"network namespaces: {NO_NAMESPACE}",
    "the Ray/S3 scenarios run only inside a private network namespace with nothing but `lo`: run as root, or "
    "enable unprivileged user namespaces (Debian: sysctl kernel.unprivileged_userns_clone=1)"))
@pytest.mark.skipif(importlib.util.find_spec("ray") is None or importlib.util.find_spec("moto") is None,
                    reason=missing(MISSING_COMPONENT, "ray and moto", "pip install -e '.[test,scale]'"))
def test_scale_scenarios_in_private_network_namespace():
    """Ray + S3 scenarios (tests/scale_cases: featurize/select on Ray, tables on S3, ingest from s3://) in a child
    pytest in a private network namespace where only `lo` exists: nothing they start can reach, or be reached
    from, another address (scale_fixtures fails them outright if any other interface is present)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests" / "scale_cases"), str(REPO / "tests")]),
               RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", LESSDB_PROGRESS="0")
    inner = (f"ip link set lo up && exec {sys.executable} -m pytest -q -x -n 0 -p no:cacheprovider -p scale_fixtures "
             f"-o python_files='scale_case_*.py' {REPO / 'tests' / 'scale_cases'}")
    proc = subprocess.run([*NAMESPACE, "sh", "-c", inner], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]


def _checkpoint(tmp_path, adapter=b"adapter-bytes", optimizer=b"adam-bytes"):
    import hashlib

    from lessdb.scale.shipping import SHIPPED_FILES
    from lessdb.storage.meta_runs import CheckpointInfo

    folder = tmp_path / "ws" / "runs" / "r" / "epoch-1"
    folder.mkdir(parents=True)
    for name, data in zip(SHIPPED_FILES, (adapter, b'{"r": 4}', optimizer)):
        (folder / name).write_bytes(data)
    return CheckpointInfo("r", 1, str(folder), hashlib.sha256(adapter).hexdigest(),
                          hashlib.sha256(optimizer).hexdigest(), 3, 1e-4, 1.0)


def test_checkpoint_shipping_checks_hashes_and_never_passes_the_driver_path(tmp_path, monkeypatch):
    """The files a Ray worker gets instead of the driver's checkpoint path (lessdb/scale/shipping.py)."""
    from lessdb.scale.shipping import SHIPPED_FILES, materialize_checkpoint, pack_checkpoint

    monkeypatch.setenv("LESSDB_CACHE_DIR", str(tmp_path / "node-cache"))
    ckpt = _checkpoint(tmp_path)
    shipment, files = pack_checkpoint(ckpt)
    assert str(tmp_path / "ws") not in repr(shipment) and shipment["info"].path == ""
    assert set(files) == set(SHIPPED_FILES) and files[SHIPPED_FILES[0]] == b"adapter-bytes"
    fetched = []

    def fetch(payload=files):
        fetched.append(1)
        return payload

    local = materialize_checkpoint(shipment, fetch)
    assert Path(local.path).parent == tmp_path / "node-cache" / "checkpoints" and fetched == [1]
    assert {n: (Path(local.path) / n).read_bytes() for n in SHIPPED_FILES} == files
    assert (local.adapter_sha256, local.epoch) == (ckpt.adapter_sha256, 1)
    assert materialize_checkpoint(shipment, fetch).path == local.path and fetched == [1]   # node cache hit
    (Path(local.path) / SHIPPED_FILES[2]).write_bytes(b"damaged")                          # a bad cached copy
    assert materialize_checkpoint(shipment, fetch).path == local.path and fetched == [1, 1]
    assert (Path(local.path) / SHIPPED_FILES[2]).read_bytes() == b"adam-bytes"
    # bytes changed in transit (or a different object): refused, and nothing is left in the cache
    shutil.rmtree(local.path)
    with pytest.raises(LessdbError, match="arrived with sha256"):
        materialize_checkpoint(shipment, lambda: {**files, SHIPPED_FILES[0]: b"tampered"})
    assert not Path(local.path).exists() and not list(Path(local.path).parent.glob(".tmp-*"))
    # the driver refuses a checkpoint whose files no longer match the catalogue's sha256
    (Path(ckpt.path) / SHIPPED_FILES[0]).write_bytes(b"modified after training")
    with pytest.raises(LessdbError, match="adapter_model.safetensors does not match its recorded sha256"):
        pack_checkpoint(ckpt)


def test_preflight_names_what_the_cluster_lacks():
    """lessdb.scale.preflight.resource_problems: totals and per-node fit, each with what to do about it."""
    from lessdb.scale.preflight import resource_problems

    (gpu,) = resource_problems(8, 1, 1, {"CPU": 16.0}, [{"CPU": 16.0}])
    assert "the cluster has 0 GPUs" in gpu and "needs 8" in gpu and "--gpus-per-worker 0" in gpu
    assert "lower --workers" not in gpu                          # nothing to lower to: no GPU at all
    (some,) = resource_problems(8, 1, 1, {"CPU": 16.0, "GPU": 4.0}, [{"CPU": 8.0, "GPU": 2.0}] * 2)
    assert "has 4 GPUs" in some and "lower --workers to 4" in some
    (cpu,) = resource_problems(3, 1, 0, {"CPU": 2.0}, [{"CPU": 1.0}] * 2)
    assert "has 2 CPUs" in cpu and "needs 3" in cpu and "lower --workers to 2" in cpu
    (node,) = resource_problems(2, 1, 2, {"CPU": 4.0, "GPU": 4.0}, [{"CPU": 2.0, "GPU": 1.0}] * 2 + [{"GPU": 2.0}])
    assert node.startswith("no single node has the 1 CPUs and 2 GPUs")
    assert resource_problems(2, 1, 0, {"CPU": 2.0}, [{"CPU": 1.0}] * 2) == []
    assert resource_problems(2, 1, 1, {"CPU": 2.0, "GPU": 2.0}, [{"CPU": 1.0, "GPU": 1.0}] * 2) == []
