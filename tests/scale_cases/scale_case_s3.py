"""A workspace whose Lance tables live on S3 (moto's server on 127.0.0.1), driven end to end through the real
CLI: init --tables → ingest → warmup → featurize (Ray) → select (local and Ray: equal) → replay on either
engine → show / diff / export / sql / report. Credentials exist only in the environment: they must appear in
no workspace file, no Lance transaction and no job row."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import boto3

from conftest import run_cli, write_jsonl
from test_featurize_jobs import N_GOOD, _records
from scale_fixtures import CREDS, cli, cli_json

TASK = [{"subtask": "a", "prompt": "alpha beta question", "completion": "gamma delta"},
        {"subtask": "a", "prompt": "zeta eta question", "completion": "theta"},
        {"subtask": "b", "prompt": "iota kappa question", "completion": "lambda alpha beta"}]


def _json(*args, ws):
    return cli_json(ws, *args)


def test_init_on_a_missing_bucket_is_refused_and_leaves_nothing(s3, tmp_path):
    """A bucket that does not exist on the (moto) store: exit 1 naming it, and no workspace left behind."""
    ws = tmp_path / "ws"
    res = cli(ws, "init", "--tables", "s3://lessdb-no-such-bucket/ws", "--storage-option", "allow_http=true", ok=False)
    # in-process, the error is the exception that `lessdb` prints (with its exit code: tests/test_scale.py runs
    # the real command against an endpoint that refuses connections)
    message = str(res.exception)
    assert type(res.exception).__name__ == "LessdbError" and res.exception.exit_code == 1, repr(res.exception)
    assert "cannot use bucket 'lessdb-no-such-bucket': the bucket does not exist" in message, message
    assert not ws.exists()


def test_s3_workspace_end_to_end(s3, ray_cluster, tmp_path):
    ws = tmp_path / "ws"
    prefix = f"s3://{s3['bucket']}/ws-{uuid.uuid4().hex[:8]}"
    bad = cli(ws, "init", "--tables", prefix, "--storage-option", "aws_secret_access_key=x", ok=False)
    assert bad.exit_code != 0 and "environment" in str(bad.exception) and not (ws / "tables.json").exists()
    info = _json("init", "--tables", prefix, "--storage-option", "allow_http=true", ws=ws)
    assert info["tables"] == prefix
    pool = write_jsonl(tmp_path / "pool.jsonl", _records(0, N_GOOD))
    cli(ws, "ingest", pool, "--pool", "p")
    run = _json("warmup", "--pool", "p", "--model", "tiny", "--percentage", "0.5", "--epochs", "2", "--lora-r", "4",
                "--lora-alpha", "16", "--max-seq-length", "128", "--batch-size", "4", "--micro-batch-size", "2",
                "--device", "cpu", ws=ws)
    run_id = run["run_id"]
    feat = _json("featurize", "--engine", "ray", "--ray-address", ray_cluster, "--run", run_id, "--dim", "64",
                 "--batch-size", "4", ws=ws)
    assert feat["examples"] == 2 * N_GOOD
    # the tables really are in the bucket (and not in the local folder)
    client = boto3.client("s3", endpoint_url=s3["endpoint"], region_name="us-east-1",
                          aws_access_key_id=CREDS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=CREDS["AWS_SECRET_ACCESS_KEY"])
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3["bucket"], Prefix=prefix.split("/", 3)[3])["Contents"]]
    assert any(f"{feat['lance_table']}.lance/data/" in k for k in keys) and any("candidates.lance" in k for k in keys)
    assert not list((ws / "lance").glob("*.lance"))

    write_jsonl(tmp_path / "task.jsonl", TASK)
    cli(ws, "task", "add", "toy", "--file", tmp_path / "task.jsonl")
    local = _json("select", "--task", "toy", "--run", run_id, "--count", "6", "--name", "sel-local", ws=ws)
    remote = _json("select", "--task", "toy", "--run", run_id, "--count", "6", "--name", "sel-ray", "--engine", "ray",
                   "--ray-address", ray_cluster, ws=ws)
    assert remote["members_head"] == local["members_head"]
    assert _recorded_inputs(remote["provenance"]) == _recorded_inputs(local["provenance"])
    assert remote["provenance"]["params"]["compute"]["select_seconds"] > 0   # each run's own measured cost
    # two-stage select on the cluster, tables on S3: the folded copy is made there, a covering shortlist is the
    # plain selection, and the replay (local engine) reads the recorded folded version
    pf = _json("select", "--task", "toy", "--run", run_id, "--count", "6", "--prefilter", f"16x{N_GOOD}", "--name",
               "sel-pf", "--engine", "ray", "--ray-address", ray_cluster, ws=ws)
    assert pf["members_head"] == local["members_head"]
    assert pf["provenance"]["params"]["prefilter"]["folded_table"] in pf["provenance"]["table_versions"]
    assert _json("select", "--replay", "sel-pf", ws=ws)["identical"] is True
    for engine in ("local", "ray"):   # a selection replays identically on either engine
        rep = _json("select", "--replay", "sel-ray", "--engine", engine, "--ray-address", ray_cluster, ws=ws)
        assert rep["identical"] is True, engine
    assert _json("show", "sel-ray", ws=ws)
    diff = _json("diff", "sel-local", "sel-ray", ws=ws)
    assert diff
    out = tmp_path / "sel.jsonl"
    cli(ws, "export", "sel-ray", "--format", "jsonl", "--output", out)
    assert len(out.read_text().splitlines()) == 6
    rows = json.loads(run_cli("sql", "SELECT count(*) AS n FROM candidates", "--json", workspace=ws).stdout)
    assert rows == [{"n": N_GOOD}]         # one real subprocess: a fresh process finds the S3 tables alone
    cli(ws, "report", "sel-ray", "--output", tmp_path / "report.html")
    assert (tmp_path / "report.html").stat().st_size > 1000

    # secrets: nowhere in the workspace's files, nor in Lance transaction properties, nor in job rows
    secret = CREDS["AWS_SECRET_ACCESS_KEY"].encode()
    for path in Path(ws).rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes() and b"testing-key-id" not in path.read_bytes(), path
    import lance

    ds = lance.dataset(f"{prefix}/{feat['lance_table']}.lance")
    for v in range(1, ds.latest_version + 1):
        t = ds.read_transaction(v)
        assert t is None or "s3cr3t" not in json.dumps(t.transaction_properties or {})
    for key in keys:
        body = client.get_object(Bucket=s3["bucket"], Key=key)["Body"].read()
        assert secret not in body, key


def _recorded_inputs(provenance: dict) -> dict:
    """What produced a selection: its provenance less its own id and the select stage's measured wall time
    (`params.compute`, issue 22), which differs between any two runs and is a cost, not an input."""
    out = {k: v for k, v in provenance.items() if k != "selection_id"}
    out["params"] = {k: v for k, v in provenance["params"].items() if k != "compute"}
    return out
