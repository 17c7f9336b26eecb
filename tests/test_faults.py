"""Fault injection: the real CLI in subprocesses on a real workspace (tiny Llama, LanceDB, DuckDB), killed at
seeded points of ingest, featurize, warmup and select — `LESSDB_FAULT=<point>:<n>` (lessdb/faults.py: os._exit,
as abrupt as kill -9) and SIGKILL after a seeded random delay — then rerun and `lessdb verify`: clean, every
feature key once, nothing missing, results equal to an uninterrupted run. Also 4 concurrent featurize shards
with a concurrent select and sql, and two concurrent selects filling the same validation cache.

Reproduce a failure with its seed: LESSDB_FAULT_SEED=<seed> pytest -m faults tests/test_faults.py. More random
kills per test: LESSDB_FAULT_ROUNDS=<n> (bench/reliability.py does that and prints the counts)."""
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
from types import SimpleNamespace

import numpy as np
import pytest

import suite_tally
from conftest import write_jsonl
from lessdb import Workspace
from lessdb.runs.config import build_warmup_config
from lessdb.featurize import FeaturizeConfig, featurize_run
from lessdb.ingest.pipeline import ingest_files
from lessdb.selection import SelectConfig, select
from lessdb.storage import meta_features, meta_runs, meta_selections
from lessdb.storage.candidates import candidates_version, select_candidate_ids
from lessdb.storage.features import get_feature_set, list_feature_sets, stored_counts
from lessdb.storage.user_sql import run_readonly_sql
from lessdb.tasks.catalog import add_tasks
from lessdb.verify import verify_workspace
from lessdb.runs.warmup import run_warmup

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("one_torch_thread")]

SEED = int(os.environ.get("LESSDB_FAULT_SEED", "12"))
ROUNDS = int(os.environ.get("LESSDB_FAULT_ROUNDS", "1"))      # random-delay kills per test
ENV = {"OMP_NUM_THREADS": "1", "LESSDB_PROGRESS": "0"}         # same intra-op threads as this process
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron".split()
N_POOL = 24
DIM = 64
WARMUP = dict(model="tiny", percentage=0.5, lora_r=4, lora_alpha=16, max_seq_length=128, epochs=2, batch_size=4,
              micro_batch_size=2, device="cpu")
WARMUP_FLAGS = ["--model", "tiny", "--percentage", "0.5", "--lora-r", "4", "--lora-alpha", "16", "--max-seq-length",
                "128", "--epochs", "2", "--batch-size", "4", "--micro-batch-size", "2", "--device", "cpu"]
FEATURIZE_FLAGS = ["--dim", str(DIM), "--dtype", "float32", "--batch-size", "4", "--device", "cpu"]
LONG = {"messages": [{"role": "user", "content": "x" * 400}, {"role": "assistant", "content": "cut away"}]}
TALLY: dict[str, int] = {}   # counts for bench/RESULTS.md (written to $LESSDB_FAULT_REPORT)


def tally(what: str, n: int = 1) -> None:
    TALLY[what] = TALLY.get(what, 0) + n
    suite_tally.add(f"faults: {what}", n)


@pytest.fixture(scope="module", autouse=True)
def write_tally():
    yield
    path = os.environ.get("LESSDB_FAULT_REPORT")
    if path:
        old = json.loads(Path(path).read_text()) if Path(path).exists() else {}
        for k, v in TALLY.items():
            old[k] = old.get(k, 0) + v
        Path(path).write_text(json.dumps(old, indent=1, sort_keys=True))


def _records(seed: int, n: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"messages": [{"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(3, 14)))},
                          {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=rng.randint(2, 10)))}]}
            for _ in range(n)]


# -- the workspace every test copies: pool, warmup run, task; plus an uninterrupted reference --------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    ws = Workspace.init(root / "plain")
    ingest_files(ws, [write_jsonl(root / "pool.jsonl", _records(SEED, N_POOL) + [LONG])], pool="p", progress=False)
    run_id = run_warmup(ws, build_warmup_config("p", run_id="ref", **WARMUP), progress=False).run_id
    task = write_jsonl(root / "task.jsonl", [
        {"subtask": "a", "prompt": "alpha beta gamma", "completion": "delta epsilon"},
        {"subtask": "a", "prompt": "zeta eta", "completion": "theta iota kappa"},
        {"subtask": "b", "prompt": "lambda mu nu", "completion": "xi omicron"}])
    add_tasks(ws, "toy", file=task)
    shutil.copytree(ws.root, root / "featurized")
    ref = Workspace.open(root / "featurized")
    fsid = featurize_run(ref, FeaturizeConfig(run_id=run_id, dim=DIM, dtype="float32", batch_size=4,
                                              progress=False)).feature_set_id
    sel = select(ref, SelectConfig(task="toy", run=run_id, count=5, name="ref", progress=False))
    return {"root": root, "run_id": run_id, "fsid": fsid, "vectors": _vectors(ref, fsid),
            "members": [(m.candidate_id, m.score) for m in sel.members]}


def _copy(base, tmp_path, which: str) -> Workspace:
    shutil.copytree(base["root"] / which, tmp_path / "ws")
    return Workspace.open(tmp_path / "ws")


def _vectors(ws, fsid) -> dict[str, np.ndarray]:
    info = get_feature_set(ws, fsid)
    t = ws.lance.dataset(info.lance_table).to_table(columns=["key", "vector"])
    vecs = t.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, info.dim)
    return dict(zip(t.column("key").to_pylist(), vecs))


# -- driving the real CLI ---------------------------------------------------------------------------------------------
def _spawn(ws, *args, fault: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, LESSDB_WORKSPACE=str(ws.root), **ENV)
    env.pop("LESSDB_FAULT", None)
    if fault:
        env["LESSDB_FAULT"] = fault
    return subprocess.Popen([sys.executable, "-m", "lessdb.cli.main", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def cli(ws, *args, fault: str | None = None, expect: int = 0) -> subprocess.CompletedProcess:
    proc = _spawn(ws, *args, fault=fault)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == expect, f"lessdb {' '.join(map(str, args))} -> {proc.returncode} (seed {SEED}):\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    if fault:
        assert "injected fault" in err, f"fault {fault} never reached (seed {SEED})"
        tally("kills at injected points")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def kill_when(ws, rng: random.Random, started, *args, max_delay: float = 1.5) -> bool:
    """Run the CLI, wait until `started()` says it is working, SIGKILL it after a seeded random delay.
    Returns True if it was killed (False: it finished first, which is fine, and counted)."""
    proc = _spawn(ws, *args)
    deadline = time.monotonic() + 300
    while not started() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(rng.uniform(0, max_delay))
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        tally("kills at random delays")
        return True
    _, err = proc.communicate()
    assert proc.returncode == 0 and "Traceback" not in err, err[-3000:]
    tally("random kills that came too late (process had finished)")
    return False


def owner_locked(ws, kind: str):
    """True once some process holds an owner lock of this kind (it is past start-up, doing the work)."""
    folder = ws.root / "locks" / "owners" / kind
    return lambda: folder.is_dir() and any(_held(p) for p in folder.iterdir())


def _held(path: Path) -> bool:
    import fcntl

    if not path.exists():
        return False
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def assert_verified_clean(ws, **cli_kw) -> None:
    """`lessdb verify --json` in a subprocess: exit 0 and not a single finding left."""
    out = json.loads(cli(ws, "verify", "--json", **cli_kw).stdout)
    assert out["clean"] and not [f for f in out["findings"] if f["severity"] != "info"], out["findings"]


def assert_keys_once_and_equal_reference(ws, base) -> None:
    got = _vectors(ws, base["fsid"])
    info = get_feature_set(ws, base["fsid"])
    keys = ws.lance.dataset(info.lance_table).to_table(columns=["key"]).column("key").to_pylist()
    tally("feature keys checked", len(keys))
    tally("duplicate feature keys after rerun", len(keys) - len(set(keys)))
    want = {k: v for k, v in base["vectors"].items() if k.startswith("candidate/")}
    have = {k: v for k, v in got.items() if k.startswith("candidate/")}
    tally("missing feature keys after rerun", len(set(want) - set(have)))
    assert len(keys) == len(set(keys)), "duplicate feature rows"
    assert have.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(have[k], want[k], atol=2e-5, err_msg=k)
    tally("vectors bit-identical to the uninterrupted run", sum(bool(np.array_equal(have[k], want[k])) for k in want))
    tally("vectors compared with the uninterrupted run", len(want))


# -- ingest -----------------------------------------------------------------------------------------------------------
def test_killed_ingest_stays_invisible_and_is_rolled_back(base, tmp_path):
    ws = _copy(base, tmp_path, "plain")
    rng = random.Random(SEED)
    before = (candidates_version(ws), select_candidate_ids(ws))
    extra = write_jsonl(tmp_path / "extra.jsonl", _records(SEED + 1, 60))
    # killed between the LanceDB write and the DuckDB record: the rows are there, no reader sees them
    cli(ws, "ingest", extra, "--pool", "q", fault="ingest.after_lance_write:1", expect=137)
    assert ws.lance.dataset("candidates").count_rows() == N_POOL + 1 + 60
    assert (candidates_version(ws), select_candidate_ids(ws)) == before
    assert run_readonly_sql(ws, "SELECT count(*) FROM candidates WHERE pool = 'q'").rows == [(0,)]
    assert run_readonly_sql(ws, "SELECT count(*) FROM pool_summary WHERE pool = 'q'").rows == [(0,)]
    report = verify_workspace(ws)
    assert report.exit_code == 1 and [f.check for f in report.errors] == ["candidates"]
    tally("orphan ingests found by verify", 1)
    # the next write command (here a select) rolls the orphan back, and never sees it
    with pytest.raises(Exception, match="no candidates|pool is required"):
        select(ws, SelectConfig(task="toy", method="random", pool="q", count=3, progress=False))
    assert ws.lance.dataset("candidates").count_rows(filter="pool = 'q'") == 0
    sel = select(ws, SelectConfig(task="toy", method="random", pool="p", count=N_POOL + 1, progress=False))
    assert {m.candidate_id for m in sel.members} == set(before[1])
    # killed again, then `verify --repair` rolls it back
    cli(ws, "ingest", extra, "--pool", "q", fault="ingest.after_lance_write:1", expect=137)
    out = json.loads(cli(ws, "verify", "--repair", "--json", expect=0).stdout)
    assert out["errors"] == 0 and [f["check"] for f in out["findings"] if f["repaired"]] == ["candidates"]
    assert ws.lance.dataset("candidates").count_rows(filter="pool = 'q'") == 0
    # a larger ingest killed at a seeded random moment while it holds the write lock: all or nothing visible
    big = write_jsonl(tmp_path / "big.jsonl", _records(SEED + 2, 3000))
    n_big = len({json.dumps(r, sort_keys=True) for r in _records(SEED + 2, 3000)})
    for _ in range(ROUNDS):
        kill_when(ws, rng, lambda: _held(ws.root / "locks" / "candidates.lock"), "ingest", big, "--pool", "r",
                  max_delay=3.0)
        assert run_readonly_sql(ws, "SELECT count(*) FROM candidates WHERE pool = 'r'").rows[0][0] in (0, n_big)
        verify_workspace(ws, repair=True)
    # rerun: each record exactly once
    ingest_files(ws, [extra], pool="q", progress=False)
    ingest_files(ws, [big], pool="r", progress=False)
    rows = run_readonly_sql(ws, "SELECT pool, count(*), count(DISTINCT id) FROM candidates GROUP BY ALL ORDER BY 1").rows
    distinct = {p: len({json.dumps(r, sort_keys=True) for r in recs}) for p, recs in
                (("q", _records(SEED + 1, 60)), ("r", _records(SEED + 2, 3000)))}
    assert rows == [("p", N_POOL + 1, N_POOL + 1), ("q", distinct["q"], distinct["q"]), ("r", distinct["r"], distinct["r"])]
    assert verify_workspace(ws).clean


def _write_columnar_inputs(tmp_path: Path) -> tuple[Path, Path, int]:
    """A 4,000-record Parquet file (8 row groups, an extra column) and a save_to_disk-style folder of the same
    records (state.json + dataset_info.json + 3 Arrow stream shards, written with pyarrow)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    recs = [dict(r, origin=f"o{i % 5}") for i, r in enumerate(_records(SEED + 7, 4000))]
    table = pa.Table.from_pylist(recs)
    pq.write_table(table, tmp_path / "big.parquet", row_group_size=500)
    folder = tmp_path / "hf"
    folder.mkdir()
    shards = []
    for i, start in enumerate(range(0, 4000, 1400)):
        name = f"data-{i:05d}-of-00003.arrow"
        with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table.slice(start, 1400), max_chunksize=200)
        shards.append({"filename": name})
    (folder / "state.json").write_text(json.dumps({"_data_files": shards}))
    (folder / "dataset_info.json").write_text(json.dumps({"features": None}))
    return tmp_path / "big.parquet", folder, len({json.dumps(r["messages"]) for r in recs})


def test_killed_parquet_and_hf_folder_ingests_stay_invisible_then_rerun_exactly(base, tmp_path):
    """The columnar readers under the same kills as JSONL: at the injected point after the Lance write, and at
    seeded random moments while the ingest holds the write lock (reading, spilling, appending)."""
    ws = _copy(base, tmp_path, "plain")
    rng = random.Random(SEED + 3)
    parquet, folder, n_distinct = _write_columnar_inputs(tmp_path)
    for src, pool in ((parquet, "pq"), (folder, "hf")):
        before = (candidates_version(ws), select_candidate_ids(ws))
        cli(ws, "ingest", src, "--pool", pool, fault="ingest.after_lance_write:1", expect=137)
        assert ws.lance.dataset("candidates").count_rows(filter=f"pool = '{pool}'") == n_distinct  # written...
        assert (candidates_version(ws), select_candidate_ids(ws)) == before                         # ...unseen
        assert [f.check for f in verify_workspace(ws).errors] == ["candidates"]
        verify_workspace(ws, repair=True)
        for _ in range(ROUNDS + 1):
            kill_when(ws, rng, lambda: _held(ws.root / "locks" / "candidates.lock"), "ingest", src, "--pool", pool,
                      max_delay=4.0)
            seen = run_readonly_sql(ws, f"SELECT count(*) FROM candidates WHERE pool = '{pool}'").rows[0][0]
            assert seen in (0, n_distinct)
            tally("columnar ingests killed: all or nothing visible")
            verify_workspace(ws, repair=True)
            assert not list((ws.root / "tmp").glob("ingest-*")), "verify --repair leaves no spill file"
    # rerun: each record exactly once, in both pools, and nothing left to repair
    ingest_files(ws, [parquet], pool="pq", progress=False)
    ingest_files(ws, [folder], pool="hf", progress=False)
    rows = run_readonly_sql(ws, "SELECT pool, count(*), count(DISTINCT id), count(metadata) FROM candidates "
                                "WHERE pool IN ('pq', 'hf') GROUP BY ALL ORDER BY 1").rows
    assert rows == [("hf", n_distinct, n_distinct, n_distinct), ("pq", n_distinct, n_distinct, n_distinct)]
    assert verify_workspace(ws).clean


# -- featurize --------------------------------------------------------------------------------------------------------
def test_featurize_killed_then_rerun_equals_uninterrupted(base, tmp_path):
    ws = _copy(base, tmp_path, "plain")
    rng = random.Random(SEED + 10)
    args = ["featurize", "--run", base["run_id"], *FEATURIZE_FLAGS]
    # killed after checkpoint 1's vectors reached LanceDB, before their progress was recorded
    cli(ws, *args, fault="featurize.after_lance_write:1", expect=137)
    [fs] = list_feature_sets(ws)
    stored = stored_counts(ws, fs["lance_table"])
    assert stored == {("candidate", 1): N_POOL}
    # counts come from the stored rows, not from the progress the kill never recorded
    assert {k: v["done"] for k, v in fs["jobs"].items()} == {"candidate/1": N_POOL}
    assert meta_features.job_rows(ws, base["fsid"])[0]["n_done"] == 0        # what the job row says
    assert fs["jobs"]["candidate/1"]["status"] == "interrupted"
    listed = cli(ws, "feature-sets").stdout
    assert f"candidate/1: {N_POOL} [interrupted]" in listed   # the exclusion was lost with the record
    report = verify_workspace(ws)
    assert {f.check for f in report.warnings} == {"jobs"} and report.exit_code == 0
    tally("wrong job counts found by verify", sum("counts" in f.what for f in report.warnings))
    # then killed at seeded random moments while it holds a job
    for _ in range(ROUNDS):
        kill_when(ws, rng, owner_locked(ws, "featurize"), *args)
    cli(ws, *args, "--json")
    assert ws.lance.temp_files() == []          # the rerun cleared what the kills left
    jobs = meta_features.job_rows(ws, base["fsid"])
    assert jobs and all(j["status"] == "complete" and j["n_done"] + j["n_excluded"] == j["n_total"] for j in jobs)
    assert_keys_once_and_equal_reference(ws, base)
    assert verify_workspace(ws).clean


# -- warmup -----------------------------------------------------------------------------------------------------------
def test_warmup_killed_then_resumed_equals_uninterrupted(base, tmp_path):
    ws = _copy(base, tmp_path, "plain")
    rng = random.Random(SEED + 20)
    # the uninterrupted reference, run the same way (a CLI process: in-process runs may differ in the last bits)
    cli(ws, "warmup", "--pool", "p", *WARMUP_FLAGS, "--run-id", "whole")
    # killed right after checkpoint 1 was renamed into place, before DuckDB registered it
    cli(ws, "warmup", "--pool", "p", *WARMUP_FLAGS, "--run-id", "k1", fault="train.after_checkpoint:1", expect=137)
    [run] = [r for r in meta_runs.list_runs(ws) if r["run_id"] == "k1"]
    assert run["status"] == "interrupted" and run["checkpoints"] == []
    report = verify_workspace(ws)
    assert {f.check for f in report.warnings} == {"runs", "checkpoints"} and report.exit_code == 0
    tally("dead running runs found by verify", 1)
    cli(ws, "warmup", "--resume", "--run-id", "k1")
    assert_same_as_reference(ws, "k1")
    for i in range(ROUNDS):
        run_id = f"k{i + 2}"
        killed = kill_when(ws, rng, owner_locked(ws, "run"), "warmup", "--pool", "p", *WARMUP_FLAGS,
                           "--run-id", run_id, max_delay=3.0)
        if killed and run_id in {r["run_id"] for r in meta_runs.list_runs(ws)}:
            assert meta_runs.list_runs(ws)[-1]["status"] in ("interrupted", "complete")
            cli(ws, "warmup", "--resume", "--run-id", run_id)
        elif killed:   # died before the run was recorded: nothing to resume, start again
            cli(ws, "warmup", "--pool", "p", *WARMUP_FLAGS, "--run-id", run_id)
        assert_same_as_reference(ws, run_id)
    assert verify_workspace(ws).clean


def assert_same_as_reference(ws, run_id: str) -> None:
    """Every checkpoint of the run equals the uninterrupted run's: adapter bytes (sha256), Adam moments tensor
    by tensor (the optimizer file's header lists its metadata in a hash-randomised order, so its bytes vary)."""
    from lessdb.runs.checkpoints import load_optimizer_state

    ca = {c.epoch: c for c in meta_runs.list_checkpoints(ws, "whole")}
    cb = {c.epoch: c for c in meta_runs.list_checkpoints(ws, run_id)}
    assert sorted(ca) == sorted(cb) == [1, 2]
    for e in (1, 2):
        assert (cb[e].adapter_sha256, cb[e].mean_lr, cb[e].optimizer_step) == \
               (ca[e].adapter_sha256, ca[e].mean_lr, ca[e].optimizer_step)
        oa, ob = load_optimizer_state(ca[e].path), load_optimizer_state(cb[e].path)
        for moment in ("exp_avg", "exp_avg_sq"):
            assert oa[moment].keys() == ob[moment].keys()
            assert all(np.array_equal(oa[moment][k].numpy(), ob[moment][k].numpy()) for k in oa[moment])
    assert meta_runs.get_run(ws, run_id)["status"] == "complete"
    tally("resumed runs identical to the uninterrupted run")


# -- select -----------------------------------------------------------------------------------------------------------
def test_select_killed_at_each_point_then_rerun_equals_uninterrupted(base, tmp_path):
    ws = _copy(base, tmp_path, "featurized")
    _drop_validation_cache(ws, base["fsid"])
    args = ["select", "--task", "toy", "--run", base["run_id"], "--count", "5", "--json"]
    # 1. validation vectors of checkpoint 1 stored, the job row not yet updated, nothing recorded
    cli(ws, *args, "--name", "k1", fault="validation.after_lance_write:1", expect=137)
    assert {s["name"] for s in meta_selections.list_selections(ws)} == {"ref"}
    report = verify_workspace(ws)
    assert {f.check for f in report.warnings} == {"jobs"} and report.exit_code == 0   # stale counts, dead job
    # 2. scores computed, the selection not yet recorded
    cli(ws, *args, "--name", "k2", fault="select.before_record:1", expect=137)
    assert {s["name"] for s in meta_selections.list_selections(ws)} == {"ref"}
    _assert_validation_job_counts(ws, base["fsid"])     # the second select settled the killed fill's job row
    # 3. the selection recorded, its Lance versions not yet tagged: verify sees it, the repair tags them
    cli(ws, *args, "--name", "k3", fault="select.before_tag:1", expect=137)
    assert {s["name"] for s in meta_selections.list_selections(ws)} == {"ref", "k3"}
    report = verify_workspace(ws)
    assert {f.check for f in report.warnings} == {"selections"} and report.exit_code == 0
    tally("untagged selection versions found by verify", len(report.warnings))
    assert verify_workspace(ws, repair=True).exit_code == 0 and verify_workspace(ws).clean
    # the rerun selects exactly what the uninterrupted run did
    out = json.loads(cli(ws, *args, "--name", "again").stdout)
    assert [(m["candidate_id"], round(m["score"], 6)) for m in out["members_head"]] == \
           [(c, round(s, 6)) for c, s in base["members"]]
    members = meta_selections.selection_members(ws, meta_selections.get_selection(ws, "k3")["selection_id"])
    assert members.column("candidate_id").to_pylist() == [c for c, _ in base["members"]]   # what k3 recorded
    np.testing.assert_allclose(members.column("score").to_numpy(), [s for _, s in base["members"]], rtol=1e-6)
    _assert_validation_job_counts(ws, base["fsid"])
    assert verify_workspace(ws).clean


def _drop_validation_cache(ws, fsid) -> None:
    """The reference select filled the validation cache; make the next select compute it again."""
    info = get_feature_set(ws, fsid)
    ws.lance.delete(info.lance_table, "role = 'validation'")
    for job in meta_features.job_rows(ws, fsid):
        if job["role"] == "validation":
            meta_features.finish_job(ws, job["job_id"], counts={"n_total": 0, "n_done": 0, "n_excluded": 0})


def _assert_validation_job_counts(ws, fsid) -> None:
    info = get_feature_set(ws, fsid)
    stored = stored_counts(ws, info.lance_table)
    for job in meta_features.job_rows(ws, fsid):
        if job["role"] == "validation":
            assert job["n_done"] == stored[("validation", job["epoch"])] and job["n_done"] <= job["n_total"], job


# -- concurrency ------------------------------------------------------------------------------------------------------
def test_four_shards_with_concurrent_select_and_sql_then_two_selects(base, tmp_path):
    ws = _copy(base, tmp_path, "plain")
    shards = [_spawn(ws, "featurize", "--run", base["run_id"], *FEATURIZE_FLAGS, "--shard", f"{i}/4", "--json")
              for i in range(4)]
    others = [_spawn(ws, "select", "--task", "toy", "--method", "bm25", "--pool", "p", "--count", "5", "--json"),
              _spawn(ws, "sql", "SELECT pool, count(*) AS n FROM candidates GROUP BY ALL", "--json")]
    outs = [p.communicate(timeout=600) for p in shards + others]
    for p, (out, err) in zip(shards + others, outs):
        assert p.returncode == 0 and "Traceback" not in err, err[-3000:]
    tally("concurrent processes", len(shards) + len(others))
    assert sum(json.loads(o)["examples"] for o, _ in outs[:4]) == 2 * N_POOL
    assert json.loads(outs[5][0]) == [{"pool": "p", "n": N_POOL + 1}]
    assert_keys_once_and_equal_reference(ws, base)
    # two selects at once on a cold validation cache: one computes, the other waits and reads it
    sels = [_spawn(ws, "select", "--task", "toy", "--run", base["run_id"], "--count", "5", "--json") for _ in range(2)]
    results = [p.communicate(timeout=600) for p in sels]
    assert all(p.returncode == 0 for p in sels), [e[-2000:] for _, e in results]
    tally("concurrent processes", 2)
    for out, _ in results:
        assert [(m["candidate_id"], round(m["score"], 6)) for m in json.loads(out)["members_head"]] == \
               [(c, round(s, 6)) for c, s in base["members"]]
    _assert_validation_job_counts(ws, base["fsid"])
    val = [k for k in _vectors(ws, base["fsid"]) if k.startswith("validation/")]
    assert len(val) == len(set(val)) == sum(1 for k in base["vectors"] if k.startswith("validation/"))
    assert_verified_clean(ws)


# -- verify on planted damage ------------------------------------------------------------------------------------------
def test_verify_finds_planted_damage_and_repairs_what_is_safe(base, tmp_path):
    ws = _copy(base, tmp_path, "featurized")
    assert verify_workspace(ws).clean
    info = get_feature_set(ws, base["fsid"])
    table = ws.lance.dataset(info.lance_table).to_table()
    ws.lance.append(info.lance_table, table.slice(0, 3), table.schema)          # 3 keys stored twice
    (ws.lance.uri("candidates") / "data" / ".tmpKILLED").write_bytes(b"")      # a Lance write killed mid-file
    (ws.checkpoints_dir / "ref" / ".tmp-epoch-3-abc").mkdir()                  # a checkpoint write killed
    (ws.checkpoints_dir / "ghost").mkdir()                                     # a folder no run refers to
    job = [j for j in meta_features.job_rows(ws, base["fsid"]) if j["role"] == "candidate"][0]
    meta_features.finish_job(ws, job["job_id"], counts={"n_done": 999})        # counts that disagree
    meta_runs.set_run_status(ws, "ref", "running")                             # a run whose process is gone
    sel = meta_selections.get_selection(ws, "ref")
    ws.lance.open(info.lance_table).tags.delete(sel["selection_id"])            # a selection version untagged

    report = verify_workspace(ws)
    found = {(f.severity, f.check) for f in report.findings}
    assert {("error", "features"), ("warning", "files"), ("warning", "jobs"), ("warning", "runs"),
            ("warning", "selections")} <= found, report.lines()
    assert report.exit_code == 1 and not report.repaired
    assert sum(f.check == "files" for f in report.warnings) == 3                # temp file, temp dir, ghost dir
    tally("planted faults found by verify", len(report.errors) + len(report.warnings))

    repaired = verify_workspace(ws, repair=True)
    assert repaired.exit_code == 0 and len(repaired.repaired) >= 6, repaired.lines()
    after = verify_workspace(ws)
    assert [f.where for f in after.warnings] == [str(ws.checkpoints_dir / "ghost")]   # deleted only by the user
    assert not after.errors
    assert not (ws.checkpoints_dir / "ref" / ".tmp-epoch-3-abc").exists() and ws.lance.temp_files() == []
    assert meta_runs.get_run(ws, "ref")["status"] == "interrupted"
    keys = ws.lance.dataset(info.lance_table).to_table(columns=["key"]).column("key").to_pylist()
    assert len(keys) == len(set(keys)) == len(base["vectors"])
    got = _vectors(ws, base["fsid"])
    assert all(np.array_equal(got[k], v) for k, v in base["vectors"].items())
    # a checkpoint file changed after it was recorded: an error no repair can fix
    ckpt = meta_runs.list_checkpoints(ws, "ref")[0]
    adapter = Path(ckpt.path) / "adapter_model.safetensors"
    size = adapter.stat().st_size
    with open(adapter, "ab") as fh:
        fh.write(b"\0")
    try:
        out = cli(ws, "verify", "--repair", expect=1).stdout
        assert "does not match the sha256 recorded" in out and "ERROR" in out
    finally:   # a copied workspace may still name the template's checkpoint files (absolute paths): restore it
        with open(adapter, "r+b") as fh:
            fh.truncate(size)


# -- issue 23: more kill points, each followed by verify and a rerun equal to the uninterrupted run ----------------
TRAIN_FLAGS = ["--model", "tiny", "--lora-r", "4", "--lora-alpha", "16", "--max-seq-length", "128", "--epochs", "2",
               "--batch-size", "2", "--micro-batch-size", "2", "--device", "cpu"]


def _members(out: str) -> list[tuple[str, float]]:
    return [(m["candidate_id"], round(m["score"], 6)) for m in json.loads(out)["members_head"]]


def test_select_killed_during_its_validation_pass_then_rerun_equals_uninterrupted(base, tmp_path):
    ws = _copy(base, tmp_path, "featurized")
    rng = random.Random(SEED + 30)
    args = ["select", "--task", "toy", "--run", base["run_id"], "--count", "5", "--json"]
    for i in range(ROUNDS):
        _drop_validation_cache(ws, base["fsid"])
        kill_when(ws, rng, owner_locked(ws, "validation"), *args, "--name", f"v{i}", max_delay=0.5)
        assert {s["name"] for s in meta_selections.list_selections(ws)} <= {"ref", f"v{i}"}
        verify_workspace(ws, repair=True)
        out = cli(ws, *args).stdout
        assert _members(out) == [(c, round(s, 6)) for c, s in base["members"]]
        _assert_validation_job_counts(ws, base["fsid"])
        val = [k for k in _vectors(ws, base["fsid"]) if k.startswith("validation/")]
        tally("duplicate feature keys after rerun", len(val) - len(set(val)))
        assert len(val) == len(set(val)) == sum(1 for k in base["vectors"] if k.startswith("validation/"))
        tally("kill points with answers equal to the uninterrupted run")
    assert_verified_clean(ws)


def test_train_killed_then_resumed_equals_uninterrupted(base, tmp_path):
    ws = _copy(base, tmp_path, "featurized")
    cli(ws, "train", "--selection", "ref", *TRAIN_FLAGS, "--run-id", "whole")
    cli(ws, "train", "--selection", "ref", *TRAIN_FLAGS, "--run-id", "k1", fault="train.after_checkpoint:1",
        expect=137)
    report = verify_workspace(ws)
    assert {f.check for f in report.warnings} == {"runs", "checkpoints"} and report.exit_code == 0
    cli(ws, "train", "--resume", "--run-id", "k1")
    assert_same_as_reference(ws, "k1")
    tally("kill points with answers equal to the uninterrupted run")
    assert_verified_clean(ws)


def test_export_killed_then_rerun_equals_uninterrupted(base, tmp_path):
    ws = _copy(base, tmp_path, "featurized")
    whole = json.loads(cli(ws, "export", "ref", "--output", tmp_path / "whole.jsonl", "--json").stdout)
    out = tmp_path / "out" / "ref.jsonl"
    cli(ws, "export", "ref", "--output", out, fault="export.mid_write:1", expect=137)
    assert not out.exists() and len(list(out.parent.glob(".lessdb-*.tmp"))) == 1   # half a file, never at `out`
    cli(ws, "export", "ref", "--output", out, fault="export.before_record:1", expect=137)
    assert out.exists() and not list(out.parent.glob(".lessdb-*.tmp"))   # the rerun cleared the killed one's file
    assert_verified_clean(ws)
    again = json.loads(cli(ws, "export", "ref", "--output", out, "--force", "--json").stdout)
    assert again["sha256"] == whole["sha256"] and again["n_rows"] == whole["n_rows"] == len(base["members"])
    recorded = run_readonly_sql(ws, "SELECT count(*) FROM exports WHERE path = ?", params=[str(out)]).rows
    assert recorded == [(1,)]                   # the killed export was never recorded; the rerun once
    tally("kill points with answers equal to the uninterrupted run", 2)
    assert_verified_clean(ws)


def test_verify_repair_killed_then_rerun_is_clean_and_loses_nothing(base, tmp_path):
    ws = _copy(base, tmp_path, "featurized")
    extra = write_jsonl(tmp_path / "extra.jsonl", _records(SEED + 3, 20))
    cli(ws, "ingest", extra, "--pool", "q", fault="ingest.after_lance_write:1", expect=137)   # orphan rows
    info = get_feature_set(ws, base["fsid"])
    table = ws.lance.dataset(info.lance_table).to_table()
    ws.lance.append(info.lance_table, table.slice(0, 3), table.schema)                         # duplicate keys
    job = [j for j in meta_features.job_rows(ws, base["fsid"]) if j["role"] == "candidate"][0]
    meta_features.finish_job(ws, job["job_id"], counts={"n_done": 999})                       # wrong counts
    meta_runs.set_run_status(ws, "ref", "running")                                             # a dead run
    before = verify_workspace(ws)
    assert len(before.errors) + len(before.warnings) >= 4
    for n in (1, 3):   # killed after the first check's repairs, then after the third's
        cli(ws, "verify", "--repair", fault=f"verify.after_check:{n}", expect=137)
    out = json.loads(cli(ws, "verify", "--repair", "--json").stdout)
    assert out["errors"] == 0 and out["warnings"] == 0, out["findings"]
    assert_verified_clean(ws)
    assert_keys_once_and_equal_reference(ws, base)
    assert ws.lance.dataset("candidates").count_rows(filter="pool = 'q'") == 0
    tally("kill points with answers equal to the uninterrupted run", 2)


@pytest.mark.parametrize("fault", ["init.after_migration:2", "init.after_migration:5", "init.before_tables:1"])
def test_init_killed_then_rerun_gives_a_whole_workspace(tmp_path, fault):
    whole = Workspace.init(tmp_path / "whole")
    target = SimpleNamespace(root=tmp_path / "ws")        # `cli` needs only the folder
    cli(target, "init", fault=fault, expect=137)
    cli(target, "init")
    ws = Workspace.open(target.root)
    assert ws.duck.applied_migrations() == whole.duck.applied_migrations()
    assert ws.lance.table_names() == whole.lance.table_names() == ["candidates"]
    assert_verified_clean(ws)
    pool = write_jsonl(tmp_path / "pool.jsonl", _records(SEED, 10))
    for w in (whole, ws):
        ingest_files(w, [pool], pool="p", progress=False)
    assert select_candidate_ids(ws, "p") == select_candidate_ids(whole, "p")
    tally("kill points with answers equal to the uninterrupted run")
