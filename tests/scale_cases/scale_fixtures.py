"""Fixtures of the scale-out scenarios. They run only inside a private network namespace that has nothing but
`lo` (tests/test_scale.py starts them under `unshare -n`), so Ray and the S3 emulator cannot reach, or be
reached from, any other address. Outside such a namespace every scenario fails loudly instead of running."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/ (conftest helpers, test_featurize_jobs)
# loaded as a plugin (-p scale_fixtures) by tests/test_scale.py, not as a conftest: tests/conftest.py keeps that name

BUCKET = "lessdb-test"
CREDS = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "s3cr3t-never-stored",
         "AWS_REGION": "us-east-1"}


def interfaces() -> list[str]:
    """Interfaces of this process's network namespace (/proc/net/dev follows the namespace; /sys/class/net
    shows whatever namespace sysfs was mounted in)."""
    with open("/proc/net/dev") as fh:
        return sorted(line.split(":")[0].strip() for line in fh.readlines()[2:])


@pytest.fixture(scope="session", autouse=True)
def loopback_only():
    found = interfaces()
    if found != ["lo"]:
        pytest.fail(f"scale scenarios must run in a private network namespace with only `lo`, found {found}; "
                    "run them through tests/test_scale.py (unshare -n)", pytrace=False)


@pytest.fixture(scope="session")
def s3():
    """moto's S3 server on 127.0.0.1 (random port); credentials and endpoint only in the environment."""
    import boto3
    from moto.server import ThreadedMotoServer

    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(CREDS, AWS_ENDPOINT=endpoint, AWS_ALLOW_HTTP="true")
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=CREDS["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=CREDS["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield {"endpoint": endpoint, "bucket": BUCKET}
    srv.stop()


def audit_opens():
    """Ray `worker_process_setup_hook` of the scenarios: every Ray worker process logs each file or directory it
    opens under the test's temp root (Python-level opens: `open`, `os.listdir`, `os.scandir`; the checkpoint hash
    checks and peft's config read go through them) to its own file in $LESSDB_TEST_OPEN_LOG. The two-node test
    reads these logs to show that workers never touch the driver's workspace (outside its tables folder)."""
    log_dir, watch = os.environ.get("LESSDB_TEST_OPEN_LOG"), os.environ.get("LESSDB_TEST_WATCH")
    if not log_dir or not watch:
        return
    fd = os.open(os.path.join(log_dir, f"opens-{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def hook(event, args):
        if event not in ("open", "os.listdir", "os.scandir") or not args or isinstance(args[0], int):
            return
        try:
            path = os.path.abspath(os.fsdecode(args[0]))
        except TypeError:
            return
        if path.startswith(watch):
            os.write(fd, (path + "\n").encode())

    sys.addaudithook(hook)


def worker_opens() -> set[str]:
    """Paths the Ray workers opened so far (audit_opens)."""
    out = set()
    for log in Path(os.environ["LESSDB_TEST_OPEN_LOG"]).glob("opens-*.log"):
        out.update(log.read_text().split("\n"))
    return out - {""}


@pytest.fixture(scope="session")
def ray_cluster(s3, tmp_path_factory):
    """One Ray cluster for every scenario: TWO nodes on this machine (`ray.cluster_utils.Cluster`, a head and a
    worker node, one CPU each, so two actors always land on different nodes); drivers join it with
    --ray-address. Started after the S3 fixture so that its workers inherit the AWS_* environment, as on a real
    cluster. Each node's cache (checkpoints shipped by the driver) is a fresh folder, and every worker logs the
    files it opens (audit_opens)."""
    import ray
    from ray.cluster_utils import Cluster

    os.environ.update(RAY_USAGE_STATS_ENABLED="0", LESSDB_CACHE_DIR=str(tmp_path_factory.mktemp("node-cache")),
                      LESSDB_TEST_OPEN_LOG=str(tmp_path_factory.mktemp("worker-opens")),
                      LESSDB_TEST_WATCH=str(tmp_path_factory.getbasetemp()))
    node = {"num_cpus": 1, "object_store_memory": 150 << 20, "temp_dir": str(tmp_path_factory.mktemp("ray"))}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        cluster.add_node(**node)
        ray.init(address=cluster.address, log_to_driver=False,
                 runtime_env={"worker_process_setup_hook": "scale_fixtures.audit_opens"})
        nodes = [n for n in ray.nodes() if n["Alive"]]
        bound = {cluster.address.rsplit(":", 1)[0], *(n["NodeManagerAddress"] for n in nodes)}
        assert len(nodes) == 2 and bound == {"127.0.0.1"}, f"Ray nodes bound to {bound}, not loopback only"
        yield cluster.address
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="session")
def tiny_template(tmp_path_factory):
    """A local workspace with a real tiny warmup (2 checkpoints) over a 31-example pool."""
    from conftest import write_jsonl
    from lessdb import Workspace
    from lessdb.runs.config import build_warmup_config
    from lessdb.ingest.pipeline import ingest_files
    from lessdb.runs.warmup import run_warmup
    from test_featurize_jobs import LONG, N_GOOD, _records

    root = tmp_path_factory.mktemp("scale-template")
    ws = Workspace.init(root / "ws")
    ingest_files(ws, [write_jsonl(root / "pool.jsonl", _records(0, N_GOOD) + [LONG])], pool="p")
    cfg = build_warmup_config("p", model="tiny", percentage=0.5, lora_r=4, lora_alpha=16, max_seq_length=128,
                              epochs=2, batch_size=4, micro_batch_size=2, device="cpu")
    run_id = run_warmup(ws, cfg, progress=False, count_tokens=False).run_id
    return root / "ws", run_id


@pytest.fixture
def ws_copy(tiny_template, tmp_path):
    src, run_id = tiny_template
    shutil.copytree(src, tmp_path / "ws")
    return tmp_path / "ws", run_id


def cli(ws_root, *args, ok: bool = True):
    """The real click commands in-process (each `lessdb` subprocess re-imports torch: ~10-40 s on a loaded
    2-core box). Returns the click Result; with ok=True asserts success."""
    from click.testing import CliRunner

    from lessdb.cli.main import cli as root

    result = CliRunner().invoke(root, ["--workspace", str(ws_root), *map(str, args)], catch_exceptions=not ok)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def cli_json(ws_root, *args):
    import json

    return json.loads(cli(ws_root, *args, "--json").stdout)
