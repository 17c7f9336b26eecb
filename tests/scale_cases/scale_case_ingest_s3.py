"""Ingest from s3:// (issue 24), against moto's S3 server on 127.0.0.1 inside `unshare -n` (tests/test_scale.py
starts it): a Parquet object, a zstd JSONL object, a prefix of Parquet shards, a glob, a Hugging Face
save_to_disk folder; the same candidates as the local files; missing and unreadable URIs refused with exit 2
and nothing written; an ingest killed (injected point and SIGKILL) stays invisible and reruns exactly; and a
workspace whose tables are on S3 too. Credentials live only in the environment and are never recorded."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq

from scale_fixtures import CREDS, cli, cli_json

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()


def _records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"messages": [{"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(3, 12)))},
                          {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=rng.randint(2, 9)))}],
             "source": f"s{i % 4}", "n": i} for i in range(n)]


def _client(s3):
    return boto3.client("s3", endpoint_url=s3["endpoint"], region_name="us-east-1",
                        aws_access_key_id=CREDS["AWS_ACCESS_KEY_ID"], aws_secret_access_key=CREDS["AWS_SECRET_ACCESS_KEY"])


def _upload(client, bucket: str, prefix: str, folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")


def _inputs(tmp_path: Path, recs: list[dict]) -> Path:
    root = tmp_path / "objects"
    table = pa.Table.from_pylist(recs)
    (root / "shards").mkdir(parents=True)
    pq.write_table(table, root / "pool.parquet", row_group_size=100)
    for i in range(3):
        pq.write_table(table.slice(i * 100, 100), root / "shards" / f"train-{i:05d}-of-00003.parquet")
    with pa.output_stream(str(root / "pool.jsonl.zst"), compression="zstd") as out:
        out.write("".join(json.dumps(r) + "\n" for r in recs).encode())
    (root / "hf").mkdir()
    with pa.OSFile(str(root / "hf" / "data-00000-of-00001.arrow"), "wb") as sink, \
            pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=64)
    (root / "hf" / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (root / "hf" / "dataset_info.json").write_text(json.dumps({"features": None}))
    return root


def _count(ws, pool: str) -> tuple[int, int]:
    row = cli_json(ws, "sql", f"SELECT count(*) AS n, count(DISTINCT id) AS d FROM candidates WHERE pool = '{pool}'")[0]
    return row["n"], row["d"]


def _spawn(ws: Path, *args, fault: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, LESSDB_WORKSPACE=str(ws), LESSDB_PROGRESS="0")
    env.pop("LESSDB_FAULT", None)
    if fault:
        env["LESSDB_FAULT"] = fault
    return subprocess.Popen([sys.executable, "-m", "lessdb.cli.main", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@contextmanager
def _moto_auth():
    """moto's own switch (what its /moto-api/reset-auth sets): authenticate every request while inside."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    before = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
    try:
        yield
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = before


def _refused(ws, *args):
    """The in-process CLI refused the command with bad input (what `lessdb` exits 2 for); returns the error."""
    res = cli(ws, *args, ok=False)
    assert res.exit_code != 0 and getattr(res.exception, "exit_code", None) == 2, repr(res.exception)
    return res.exception


def test_ingest_from_s3(s3, tmp_path):
    client = _client(s3)
    recs = _records(300)
    root = _inputs(tmp_path, recs)
    prefix = f"in-{uuid.uuid4().hex[:8]}"
    _upload(client, s3["bucket"], prefix, root)
    base = f"s3://{s3['bucket']}/{prefix}"
    ws = tmp_path / "ws"
    cli(ws, "init")
    cli(ws, "ingest", root / "pool.parquet", "--pool", "local")
    want = {r["id"] for r in cli_json(ws, "sql", "SELECT id FROM candidates WHERE pool = 'local'")}
    assert len(want) == len({json.dumps(r["messages"]) for r in recs})
    for pool, uri in (("pq", f"{base}/pool.parquet"), ("zst", f"{base}/pool.jsonl.zst"), ("shards", f"{base}/shards"),
                      ("glob", f"{base}/shards/train-*.parquet"), ("hf", f"{base}/hf/")):
        out = cli_json(ws, "ingest", uri, "--pool", pool)
        assert out["n_added"] == len(want), pool
        got = {r["id"] for r in cli_json(ws, "sql", f"SELECT id FROM candidates WHERE pool = '{pool}'")}
        assert got == want, pool
    n = cli_json(ws, "sql", "SELECT count(*) AS n FROM candidates WHERE pool = 'shards' AND metadata->>'source' = 's1'")
    assert n == [{"n": sum(1 for r in recs if r["source"] == "s1")}]
    rows = cli_json(ws, "sql", "SELECT pool, input_uri, file_size, file_sha256, input_format, compression FROM ingests "
                               "WHERE pool IN ('pq', 'zst', 'shards') ORDER BY ingest_id")
    assert rows[0]["input_uri"] == f"{base}/pool.parquet" and rows[0]["file_size"] == (root / "pool.parquet").stat().st_size
    import hashlib
    assert rows[0]["file_sha256"] == hashlib.sha256((root / "pool.parquet").read_bytes()).hexdigest()
    assert rows[1]["compression"] == "zstd" and [r["pool"] for r in rows[2:]] == ["shards"] * 3

    # missing objects, prefixes, buckets and globs: exit 2, named, nothing written
    before = cli_json(ws, "sql", "SELECT (SELECT count(*) FROM candidates) AS c, (SELECT count(*) FROM ingests) AS i")
    for uri, words in ((f"{base}/nope.parquet", "not found"), (f"s3://no-such-bucket-{prefix}/x.parquet", ""),
                       (f"{base}/shards/test-*.parquet", "matches no file")):
        err = _refused(ws, "ingest", f"{base}/pool.parquet", uri, "--pool", "bad")
        assert uri in str(err) and words in str(err), str(err)
    # unreadable: moto (in this process) checks credentials while auth is on, and ours are unknown to its IAM
    with _moto_auth():
        proc = _spawn(ws, "ingest", f"{base}/pool.parquet", "--pool", "bad")   # as a user runs it: exit 2
        _, err = proc.communicate(timeout=600)
    assert proc.returncode == 2 and f"{base}/pool.parquet" in err and "Traceback" not in err, err[-2000:]
    assert "cannot be read" in err or "denied" in err.lower() or "403" in err, err[-2000:]
    assert cli_json(ws, "sql", "SELECT (SELECT count(*) FROM candidates) AS c, (SELECT count(*) FROM ingests) AS i") == before

    # killed: after the Lance write (injected), and by SIGKILL at a random moment while it holds the lock
    uri = f"{base}/pool.parquet"
    proc = _spawn(ws, "ingest", uri, "--pool", "killed", fault="ingest.after_lance_write:1")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 137 and "injected fault" in err, err[-2000:]
    assert _count(ws, "killed") == (0, 0)
    rng = random.Random(24)
    for _ in range(2):
        proc = _spawn(ws, "ingest", uri, "--pool", "killed")
        time.sleep(rng.uniform(1.0, 6.0))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _count(ws, "killed") in ((0, 0), (len(want), len(want)))
    cli(ws, "verify", "--repair")
    out = cli_json(ws, "ingest", uri, "--pool", "killed")
    assert _count(ws, "killed") == (len(want), len(want))
    assert cli_json(ws, "verify")["clean"] is True

    # a workspace whose tables are on S3 reads its input from S3 too
    ws2 = tmp_path / "ws2"
    cli(ws2, "init", "--tables", f"s3://{s3['bucket']}/tables-{prefix}", "--storage-option", "allow_http=true")
    assert cli_json(ws2, "ingest", f"{base}/hf", "--pool", "p")["n_added"] == len(want)
    assert _count(ws2, "p") == (len(want), len(want))

    # credentials: in no file of either workspace
    for folder in (ws, ws2):
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert CREDS["AWS_SECRET_ACCESS_KEY"].encode() not in data and b"testing-key-id" not in data, path
