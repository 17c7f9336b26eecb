"""The README's "Scale out" block runs top to bottom as written (issue 25), on a two-node Ray cluster on this machine.

The block is read from README.md, so README and test cannot drift. Only what names the user's own world is replaced,
each replacement matching exactly once: the credentials (moto's S3 server on 127.0.0.1), the head's address and the
printed token, the bucket, the model (`--device cuda` → the tiny model on the CPU) and, for the real featurize, the
GPU request. The nodes are two `ray start` processes (1 CPU, 0 GPUs, separate temp dirs; the worker node has its
own HOME, so it has no token file and must take the head's token from RAY_AUTH_TOKEN as a real worker would).
Before the featurize line runs with CPU workers, the README's own line (8 workers × 1 GPU) runs verbatim and must be
refused with the reason and without a job row or feature set.

Everything runs under `unshare -n -p -f --mount-proc`: only `lo` exists (nothing leaves the machine) and the Ray
processes live in their own PID namespace, so `ray start`'s process discovery sees only these nodes and every
process of the test ends with it (no `ray stop` that could reach other Ray users of this machine).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import REPO, write_jsonl
from test_featurize_jobs import N_GOOD, _records

pytestmark = pytest.mark.scale
SECRET = "readme-secret-never-stored"
WORKER_ARGS = "--num-cpus 1 --num-gpus 0 --object-store-memory 200000000"
# (README text, what the test runs instead): the user's own names only
REPLACEMENTS = [
    ("export AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… AWS_REGION=eu-west-1",
     f"export AWS_ACCESS_KEY_ID=readme-key AWS_SECRET_ACCESS_KEY={SECRET} AWS_REGION=us-east-1 "
     "AWS_ENDPOINT=http://127.0.0.1:5077 AWS_ALLOW_HTTP=true"),
    ("ray start --head --port 6379",
     f"ray start --head --port 6379 {WORKER_ARGS} --include-dashboard false --temp-dir $RAYTMP/head"),
    ("TOKEN_PRINTED_IN_STEP_2", "$(ray get-auth-token)"),
    ("ray start --address HEAD:6379",
     f"HOME=$ROOT/worker-home ray start --address 127.0.0.1:6379 {WORKER_ARGS} --temp-dir $RAYTMP/worker"),
    ("s3://my-bucket/lessdb", "s3://readme-bucket/lessdb"),
    ("--device cuda", "--device cpu --model tiny --percentage 0.5 --epochs 2 --lora-r 4 --lora-alpha 16 "
                      "--max-seq-length 128 --batch-size 4 --micro-batch-size 2"),
]
GPU_REQUEST = ("--workers 8 --gpus-per-worker 1", "--workers 2 --gpus-per-worker 0")


def scale_out_block() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Scale out", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert blocks, "the Scale out section has a bash block"
    return blocks[0]


def test_scale_out_block_as_written(tmp_path):
    pytest.importorskip("ray")
    pytest.importorskip("moto")
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("this test needs `unshare` and `ip` (util-linux, iproute2) to confine Ray to loopback")
    block = scale_out_block()
    for readme_text, ours in REPLACEMENTS:
        assert block.count(readme_text) == 1, f"README block no longer has {readme_text!r} exactly once"
        block = block.replace(readme_text, ours)
    lines = block.splitlines()
    (at,) = [i for i, line in enumerate(lines) if line.startswith("lessdb featurize")]
    verbatim = lines[at]
    assert GPU_REQUEST[0] in verbatim
    refusal = [f"if {verbatim} 2> refused.txt; then echo 'a GPU-less cluster ran a GPU job' >&2; exit 97; fi",
               "lessdb sql 'SELECT count(*) AS n FROM feature_jobs' --json > jobs_after_refusal.json",
               "lessdb sql 'SELECT count(*) AS n FROM feature_sets' --json > sets_after_refusal.json"]
    lines[at:at + 1] = refusal + [verbatim.replace(*GPU_REQUEST)]

    root = tmp_path
    (root / "head-home").mkdir()
    (root / "worker-home").mkdir()
    write_jsonl(root / "pool.jsonl", _records(0, N_GOOD))
    bin_dir = Path(sys.executable).parent
    ray_tmp = tempfile.mkdtemp(prefix="lr-", dir="/tmp")   # Ray's socket paths must stay under 108 bytes
    script = "\n".join([
        "set -euo pipefail",
        "ip link set lo up",
        f"export ROOT={root} RAYTMP={ray_tmp} HOME={root}/head-home PATH={bin_dir}:$PATH RAY_USAGE_STATS_ENABLED=0 "
        "LESSDB_PROGRESS=0 OMP_NUM_THREADS=1",
        f"cd {root}",
        # moto's S3 on 127.0.0.1:5077 and the bucket (the user's bucket exists before they start)
        f"{sys.executable} -c \"from moto.server import ThreadedMotoServer; import time; "
        "s = ThreadedMotoServer(ip_address='127.0.0.1', port=5077, verbose=False); s.start(); time.sleep(86400)\" &",
        f"{sys.executable} -c \"import boto3, time\n"
        "for _ in range(100):\n"
        "    try:\n"
        "        boto3.client('s3', endpoint_url='http://127.0.0.1:5077', region_name='us-east-1', "
        f"aws_access_key_id='k', aws_secret_access_key='s').create_bucket(Bucket='readme-bucket'); break\n"
        "    except Exception: time.sleep(0.3)\n"
        "else: raise SystemExit('moto did not start')\"",
        "# ---- the README block ----",
        *lines,
        "# ---- read back ----",
        "lessdb feature-sets --json > feature_sets.json",
        "lessdb selections --json > selections.json",
        "lessdb sql 'SELECT role, engine, status FROM feature_jobs' --json > jobs.json",
    ])
    (root / "readme_block.sh").write_text(script)
    try:
        proc = subprocess.run(["unshare", "-n", "-p", "-f", "--mount-proc", "bash", str(root / "readme_block.sh")],
                              capture_output=True, text=True, cwd=root, timeout=1800)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, f"rc {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"

    refused = (root / "refused.txt").read_text()
    assert "the cluster has 0 GPUs" in refused and "--gpus-per-worker" in refused and "nothing was written" in refused
    assert "Traceback" not in refused
    assert json.loads((root / "jobs_after_refusal.json").read_text()) == [{"n": 0}]
    assert json.loads((root / "sets_after_refusal.json").read_text()) == [{"n": 0}]
    (fs,) = json.loads((root / "feature_sets.json").read_text())
    assert fs["run_id"] == "full-warmup"
    jobs = json.loads((root / "jobs.json").read_text())
    candidate_jobs = [j for j in jobs if j["role"] == "candidate"]   # + select's validation-feature jobs
    assert len(candidate_jobs) == 2 and {(j["engine"], j["status"]) for j in candidate_jobs} == {("ray", "complete")}
    assert {j["status"] for j in jobs} == {"complete"}
    names = {s["name"] for s in json.loads((root / "selections.json").read_text())}
    assert "bbh-5pct" in names
    assert "identical members, ranks and scores" in proc.stdout
    # the workspace is ./ws (LESSDB_WORKSPACE), its tables in the bucket, and no credential anywhere in it
    assert (root / "ws" / "lessdb.duckdb").exists() and not (root / "lessdb-workspace").exists()
    assert not list((root / "ws").rglob("*.lance"))
    for path in (root / "ws").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
