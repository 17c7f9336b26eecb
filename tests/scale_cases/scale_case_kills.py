"""Kills on the scale-out paths (issue 23), in the loopback-only namespace of tests/test_scale.py: the Ray driver
and a Ray worker of `featurize` with the tables on S3 (moto), and the driver and a worker of `select --engine ray`.
Each kill is followed by `lessdb verify` (clean) and a rerun whose answer equals the uninterrupted run's (the same
command never killed, on a copy): vectors and norms bit for bit, every key once, the same members and scores."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import boto3
import numpy as np
import pytest

from conftest import run_cli, write_jsonl
from lessdb import Workspace
from lessdb.storage import meta_scale
from lessdb.storage.object_store import TablesLocation, save_location
from scale_case_featurize import _ray, _rows
from scale_fixtures import CREDS, cli, cli_json
from test_featurize_jobs import N_GOOD

DIM = 32
TASK = [{"subtask": "a", "prompt": "alpha beta question", "completion": "gamma delta"},
        {"subtask": "b", "prompt": "iota kappa question", "completion": "lambda alpha beta"}]


def _verified(ws_root) -> None:
    """`lessdb verify --json` in a subprocess: no error and no warning left."""
    proc = run_cli("verify", "--json", workspace=ws_root, check=False)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["clean"], report["findings"]


def _on_s3(s3, template: Path, target: Path) -> Path:
    """A copy of the template workspace whose Lance tables are on S3: the same catalogue and run, its tables
    uploaded under a fresh prefix, tables.json pointing there (non-secret options only)."""
    shutil.copytree(template, target, ignore=shutil.ignore_patterns("lance"))
    prefix = f"kills-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=s3["endpoint"], region_name="us-east-1",
                          aws_access_key_id=CREDS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=CREDS["AWS_SECRET_ACCESS_KEY"])
    for path in (template / "lance").rglob("*"):
        if path.is_file():
            client.upload_file(str(path), s3["bucket"], f"{prefix}/{path.relative_to(template / 'lance')}")
    save_location(target, TablesLocation(f"s3://{s3['bucket']}/{prefix}", {"allow_http": "true"}))
    return target


def _uninterrupted(s3, template: Path, tmp_path: Path, args) -> dict:
    """The uninterrupted answer: the same command, never killed, on another S3 copy of the same workspace."""
    ws_root = _on_s3(s3, template, tmp_path / "uninterrupted")
    summary = cli_json(ws_root, *args)
    return _rows(Workspace.open(ws_root), summary["feature_set_id"])


def _same_vectors(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for key in want:
        assert np.array_equal(got[key][0], want[key][0]) and got[key][1] == want[key][1], key


def _featurize_args(ray_cluster, run_id, *extra, workers=1):
    return (*_ray(ray_cluster, "--unit-rows", "8", "--checkpoints", "1", *extra, workers=workers), "--run", run_id,
            "--dim", str(DIM), "--batch-size", "4")


def test_s3_featurize_driver_killed_after_a_commit_then_rerun(s3, ray_cluster, tiny_template, tmp_path):
    template, run_id = tiny_template
    ws_root = _on_s3(s3, template, tmp_path / "ws")
    args = _featurize_args(ray_cluster, run_id, "--commit-units", "1")
    proc = run_cli(*args, "--json", workspace=ws_root, check=False, env={"LESSDB_FAULT": "driver:2"})
    assert proc.returncode == -9, proc.stderr
    summary = cli_json(ws_root, *args)
    assert summary["jobs"][0]["recovered_commits"] == 1       # the commit Lance had and DuckDB had not
    _verified(ws_root)
    ws = Workspace.open(ws_root)
    got = _rows(ws, summary["feature_set_id"])                 # every key once
    assert sum(c["n_rows"] for c in meta_scale.commit_rows(ws)) == len(got) == N_GOOD
    _same_vectors(got, _uninterrupted(s3, template, tmp_path, args))


def test_s3_featurize_worker_killed_then_completes(s3, ray_cluster, tiny_template, tmp_path):
    template, run_id = tiny_template
    ws_root = _on_s3(s3, template, tmp_path / "ws")
    os.environ.update(LESSDB_FAULT="worker:1", LESSDB_FAULT_MARKER=str(tmp_path / "killed"))
    try:
        summary = cli_json(ws_root, *_featurize_args(ray_cluster, run_id, workers=2))
    finally:
        del os.environ["LESSDB_FAULT"], os.environ["LESSDB_FAULT_MARKER"]
    assert (tmp_path / "killed").exists(), "the fault did not fire"
    assert summary["examples"] == N_GOOD
    _verified(ws_root)
    got = _rows(Workspace.open(ws_root), summary["feature_set_id"])
    _same_vectors(got, _uninterrupted(s3, template, tmp_path, _featurize_args(ray_cluster, run_id)))
    again = cli_json(ws_root, *_featurize_args(ray_cluster, run_id))
    assert again["examples"] == 0                              # a rerun finds nothing missing


@pytest.fixture
def featurized(ws_copy, ray_cluster, tmp_path):
    """A local copy with its features and a task: what `select --engine ray` scores."""
    ws_root, run_id = ws_copy
    cli(ws_root, *_featurize_args(ray_cluster, run_id))
    write_jsonl(tmp_path / "task.jsonl", TASK)
    cli(ws_root, "task", "add", "toy", "--file", tmp_path / "task.jsonl")
    whole = cli_json(ws_root, "select", "--task", "toy", "--run", run_id, "--count", "5", "--checkpoints", "1",
                     "--name", "whole")
    return ws_root, run_id, whole


def _select(ray_cluster, run_id, name):
    return ("select", "--task", "toy", "--run", run_id, "--count", "5", "--checkpoints", "1", "--engine", "ray",
            "--ray-address", ray_cluster, "--name", name)


def test_ray_select_driver_killed_then_rerun_equals_uninterrupted(featurized, ray_cluster):
    ws_root, run_id, whole = featurized
    proc = run_cli(*_select(ray_cluster, run_id, "k1"), "--json", workspace=ws_root, check=False,
                   env={"LESSDB_FAULT": "select.before_record:1"})
    assert proc.returncode == 137 and "injected fault" in proc.stderr, proc.stderr
    _verified(ws_root)
    again = cli_json(ws_root, *_select(ray_cluster, run_id, "k1"))
    assert again["members_head"] == whole["members_head"]
    assert _verified(ws_root) is None


def test_ray_select_worker_killed_then_its_task_retried(featurized, ray_cluster, tmp_path):
    ws_root, run_id, whole = featurized
    os.environ.update(LESSDB_FAULT="select-worker:1", LESSDB_FAULT_MARKER=str(tmp_path / "killed"))
    try:
        out = cli_json(ws_root, *_select(ray_cluster, run_id, "k2"))
    finally:
        del os.environ["LESSDB_FAULT"], os.environ["LESSDB_FAULT_MARKER"]
    assert (tmp_path / "killed").exists(), "the fault did not fire"
    assert out["members_head"] == whole["members_head"]
    _verified(ws_root)
    assert cli_json(ws_root, "select", "--replay", "k2")["identical"] is True
