"""Never a silently wrong answer (issue 23, "Wrong answers, escapes, data loss"), each through the real CLI on a
real workspace (tiny Llama, LanceDB, DuckDB):

1. a selection never scores a partial feature set without saying so (killed featurize, shards, --prefilter);
2. every name that becomes a path is checked, and output paths never hit the workspace's own files or replace a
   non-regular file; `-` is standard output where it makes sense;
3. one row per candidate: duplicates older ingests wrote are reported, removed by `verify --repair` (crash-safe),
   and the audit views count k members;
4. selections record a digest of their members, and export refuses a changed selection;
5. a workspace can be copied and moved, and each copy reads only its own files.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_cli, write_jsonl
from lessdb import Workspace
from lessdb.featurize import FeaturizeConfig, featurize_run
from lessdb.ingest.pipeline import ingest_files
from lessdb.runs.config import build_warmup_config
from lessdb.runs.warmup import run_warmup
from lessdb.selection import SelectConfig, select
from lessdb.storage import meta_pools, meta_runs, meta_selections
from lessdb.storage.candidates import candidates_version, select_candidate_ids
from lessdb.storage.lance_tables import CANDIDATE_SCHEMA, CANDIDATES
from lessdb.storage.member_digest import backfill_digest, digest_status, member_digest, recorded_digest
from lessdb.tasks.catalog import add_tasks
from test_featurize_jobs import LONG, _records

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_POOL = 70                     # > 64, the featurize read chunk: a kill after the first commit leaves a partial epoch
DIM = 32
ENV = {"OMP_NUM_THREADS": "1", "LESSDB_PROGRESS": "0"}
WARMUP = dict(model="tiny", percentage=0.5, lora_r=4, lora_alpha=16, max_seq_length=128, epochs=2, batch_size=4,
              micro_batch_size=2, device="cpu")
FEAT = ["--dim", str(DIM), "--dtype", "float32", "--batch-size", "4", "--device", "cpu"]
TASK = [{"subtask": "a", "prompt": "alpha beta gamma", "completion": "delta epsilon"},
        {"subtask": "a", "prompt": "zeta eta", "completion": "theta iota kappa"},
        {"subtask": "b", "prompt": "lambda mu nu", "completion": "xi omicron"}]


def cli(ws_root, *args, expect: int = 0, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = run_cli(*args, workspace=ws_root, check=False, env={**ENV, **(env or {})})
    assert proc.returncode == expect, f"lessdb {' '.join(map(str, args))} -> {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr and "Internal error" not in proc.stderr, proc.stderr[-3000:]
    return proc


def cli_json(ws_root, *args, **kw):
    return json.loads(cli(ws_root, *args, "--json", **kw).stdout)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A pool (N_POOL + one that keeps no completion token), a tiny warmup `r` and a task; beside it a copy
    featurized without interruption, with a reference selection."""
    root = tmp_path_factory.mktemp("integrity")
    ws = Workspace.init(root / "plain")
    ingest_files(ws, [write_jsonl(root / "pool.jsonl", _records(3, N_POOL) + [LONG])], pool="p", progress=False)
    run_warmup(ws, build_warmup_config("p", run_id="r", **WARMUP), progress=False, count_tokens=False)
    add_tasks(ws, "toy", file=write_jsonl(root / "task.jsonl", TASK))
    shutil.copytree(ws.root, root / "featurized")
    ref = Workspace.open(root / "featurized")
    featurize_run(ref, FeaturizeConfig(run_id="r", dim=DIM, dtype="float32", batch_size=4, progress=False))
    sel = select(ref, SelectConfig(task="toy", run="r", count=5, name="ref", progress=False))
    return {"root": root, "members": [m.candidate_id for m in sel.members], "n_scored": sel.n_scored}


def copy_of(template, tmp_path, which: str = "plain") -> Path:
    shutil.copytree(template["root"] / which, tmp_path / "ws")
    return tmp_path / "ws"


# -- 1. a selection never silently scores a partial store -------------------------------------------------------------
@pytest.mark.faults   # featurize killed after its first commit, then select, featurize again, select: ~30 CPU s
def test_select_refuses_a_partial_feature_set_and_allow_partial_records_it(template, tmp_path):
    ws_root = copy_of(template, tmp_path)
    # the reproduction: featurize killed after its first commit (64 of checkpoint 1's vectors, none of 2's)
    cli(ws_root, "featurize", "--run", "r", *FEAT, expect=137, env={"LESSDB_FAULT": "featurize.after_lance_write:1"})
    refused = cli(ws_root, "select", "--task", "toy", "--count", "5", expect=1)
    err = refused.stderr
    assert "is incomplete" in err and f"of the {N_POOL + 1} candidates of pool 'p'" in err and "--allow-partial" in err
    assert "1 featurize job of it is not complete" in err
    assert meta_selections.list_selections(Workspace.open(ws_root)) == []          # nothing recorded
    # the same with the two-stage prefilter
    refused_pf = cli(ws_root, "select", "--task", "toy", "--count", "5", "--prefilter", f"{DIM // 2}x2", expect=1)
    assert "is incomplete" in refused_pf.stderr

    # --allow-partial: proceeds, says so, records it; k counts the filtered pool, not what happened to be scored
    out = cli_json(ws_root, "select", "--task", "toy", "--checkpoints", "1", "--percentage", "0.1", "--allow-partial",
                   "--name", "part")
    partial = out["partial"]
    ws = Workspace.open(ws_root)
    n_excluded = len(_excluded_ids(ws, 1))
    assert partial["n_candidates"] == N_POOL + 1
    assert partial["n_missing"] == N_POOL + 1 - len(_stored_ids(ws, 1)) - n_excluded > 0
    row = meta_selections.get_selection(ws, "part")
    assert row["params"]["allow_partial"] is True and row["params"]["partial"] == partial
    assert out["k"] == int(0.1 * (N_POOL + 1)) == 7                   # of the 71 filtered, not of the ~64 scored
    stored = {r for r in _stored_ids(ws, 1)}
    members = meta_selections.selection_members(ws, row["selection_id"]).column("candidate_id").to_pylist()
    assert len(members) == 7 and set(members) <= stored
    assert any("PARTIAL" in n for n in out["notes"])
    text = cli(ws_root, "select", "--replay", "part").stdout
    assert "identical members, ranks and scores" in text and "PARTIAL" in text

    # the command the refusal named completes the same feature set; then the selection is the uninterrupted one
    command = re.search(r"`(lessdb featurize [^`]+)`", err).group(1)
    cli(ws_root, *command.split()[1:], "--batch-size", "4", "--device", "cpu")
    full = cli_json(ws_root, "select", "--task", "toy", "--count", "5")
    assert full["partial"] is None and full["provenance"]["feature_set_id"] == row["feature_set_id"]
    assert [m["candidate_id"] for m in full["members_head"]] == template["members"]
    assert full["n_scored"] == template["n_scored"]


def _stored_ids(ws, epoch: int) -> list[str]:
    from lessdb.storage.features import list_feature_sets, present_example_ids

    [fs] = list_feature_sets(ws)
    return sorted(present_example_ids(ws, fs["feature_set_id"], epoch))


def _excluded_ids(ws, epoch: int) -> list[str]:
    from lessdb.storage import meta_features
    from lessdb.storage.features import list_feature_sets

    [fs] = list_feature_sets(ws)
    return sorted(meta_features.excluded_ids(ws, fs["feature_set_id"], "candidate", epoch))


@pytest.mark.slow   # featurize shard by shard, embed, and selections between them: ~20 CPU s
def test_select_refuses_shards_still_missing_and_rds_embeds_what_is_missing(template, tmp_path):
    """Shards: only shard 0 of 2 featurized (the other still to run) is refused the same way. RDS+ embeddings are
    completed by the selection itself, so it is never partial."""
    ws_root = copy_of(template, tmp_path)
    cli(ws_root, "featurize", "--run", "r", *FEAT, "--shard", "0/2")
    err = cli(ws_root, "select", "--task", "toy", "--count", "3", expect=1).stderr
    assert "have no stored vector" in err and "lessdb featurize --run r --dim 32" in err
    cli(ws_root, "embed", "--run", "r", "--pooling", "mean", "--shard", "0/2")
    out = cli_json(ws_root, "select", "--task", "toy", "--method", "rds+", "--count", "3")
    assert out["partial"] is None and out["n_scored"] == N_POOL          # all but the one without a completion token


# -- 2. names and output paths ----------------------------------------------------------------------------------------
def test_the_name_rule():
    from lessdb.names import name_problem

    for good in ("r", "warmup-20260101-120000-abc123", "bbh-5pct", "quickstart-bbh-rds+-abc123", "v1.2_x", "Ä1",
                 "less-ckpt1--same--skill@ckpt1+2"):
        assert name_problem(good) is None, good
    for bad in ("", "..", ".", "a/b", "../x", "/abs", "-x", ".hidden", "random:0.05", "a b", "x\x00", "é" * 129,
                "tab\there"):
        assert name_problem(bad), bad


@pytest.mark.parametrize("bad", ["../../escaped", "/tmp/lessdb-absolute-run", "-x"])
def test_run_ids_and_selection_names_that_would_be_paths_are_refused_before_anything_is_written(template, tmp_path,
                                                                                                  bad):
    ws_root = copy_of(template, tmp_path)
    before = _catalogue_counts(ws_root)
    listing = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    warm = cli(ws_root, "warmup", "--pool", "p", "--model", "tiny", "--run-id", bad, "--device", "cpu", expect=1)
    assert "--run-id" in warm.stderr
    train = cli(ws_root, "train", "--selection", "random:0.5", "--pool", "p", "--model", "tiny", "--run-id", bad,
                "--device", "cpu", expect=1)
    assert "--run-id" in train.stderr
    sel = cli(ws_root, "select", "--task", "toy", "--method", "random", "--count", "2", "--name", bad, expect=1)
    assert "--name" in sel.stderr
    assert _catalogue_counts(ws_root) == before
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == listing
    assert not Path("/tmp/lessdb-absolute-run").exists()


def _catalogue_counts(ws_root) -> dict:
    with duckdb.connect(str(ws_root / "lessdb.duckdb"), read_only=True) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("runs", "checkpoints", "selections", "token_counts", "run_examples")}


@pytest.mark.slow   # ~25 CLI calls: ~24 CPU s
def test_outputs_never_hit_workspace_files_or_special_files_and_dash_is_stdout(template, tmp_path):
    ws_root = copy_of(template, tmp_path)
    cli(ws_root, "select", "--task", "toy", "--method", "random", "--count", "4", "--name", "s")
    link = tmp_path / "link-to-ws"
    link.symlink_to(ws_root)
    for target in (ws_root / "lessdb.duckdb", ws_root / "tables.json", ws_root / "lance" / "x.jsonl",
                   ws_root / "checkpoints" / "r" / "x.jsonl", ws_root / "models" / "m.jsonl",
                   ws_root / "locks" / "candidates.lock", link / "lessdb.duckdb", ws_root / "exports" / ".." / "lance"
                   / "y.jsonl"):
        proc = cli(ws_root, "export", "s", "--output", target, "--force", expect=2)
        assert "would damage the workspace" in proc.stderr, (target, proc.stderr)
    proc = cli(ws_root, "report", "s", "--output", ws_root / "lance" / "r.html", expect=2)
    assert "would damage the workspace" in proc.stderr
    proc = cli(ws_root, "select", "--task", "toy", "--method", "random", "--count", "2", "--output",
               ws_root / "lessdb.duckdb", "--force", expect=2)
    assert "would damage the workspace" in proc.stderr
    assert _catalogue_counts(ws_root)["selections"] == 1       # the catalogue is intact and unchanged
    # existing non-regular files are never replaced, --force or not
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    regular = tmp_path / "regular.jsonl"
    regular.write_text("keep me\n")
    symlink = tmp_path / "symlink.jsonl"
    symlink.symlink_to(regular)
    for target, kind in ((Path("/dev/null"), "character device"), (fifo, "FIFO"), (symlink, "symbolic link"),
                         (tmp_path, "folder")):
        proc = cli(ws_root, "export", "s", "--output", target, "--force", expect=2)
        assert kind in proc.stderr, (target, proc.stderr)
    assert Path("/dev/null").is_char_device() and fifo.is_fifo() and symlink.is_symlink()
    assert regular.read_text() == "keep me\n"
    # an hf export (a folder) follows the same rules: never inside the workspace, never over a special file, no `-`
    for target, words in ((ws_root / "lance" / "s.hf", "would damage the workspace"),
                          (ws_root / "checkpoints", "would damage the workspace"), (fifo, "FIFO"),
                          (symlink, "symbolic link"), (regular, "is not a folder"), ("-", "standard output (-)")):
        proc = cli(ws_root, "export", "s", "--format", "hf", "--output", target, "--force", expect=2)
        assert words in proc.stderr, (target, proc.stderr)
    assert regular.read_text() == "keep me\n" and not (ws_root / "lance" / "s.hf").exists()
    # exports/ is lessdb's own place; `-` is standard output (jsonl, and parquet into a pipe), never a file `-`
    cli(ws_root, "export", "s", "--output", ws_root / "exports" / "s.jsonl")
    cli(ws_root, "export", "s", "--output", tmp_path / "s.parquet")
    jsonl = cli(ws_root, "export", "s", "--output", "-")
    assert jsonl.stdout == (ws_root / "exports" / "s.jsonl").read_text() and "standard output" in jsonl.stderr
    parquet = subprocess.run([sys.executable, "-m", "lessdb.cli.main", "export", "s", "--output", "-", "--format",
                              "parquet"], capture_output=True,
                             env={**os.environ, **ENV, "LESSDB_WORKSPACE": str(ws_root)})
    assert parquet.returncode == 0, parquet.stderr
    assert pq.read_table(pa.BufferReader(parquet.stdout)).equals(pq.read_table(tmp_path / "s.parquet"))
    page = cli(ws_root, "report", "s", "--output", "-")
    assert page.stdout.startswith("<!DOCTYPE html>")
    assert "standard output" in cli(ws_root, "select", "--task", "toy", "--method", "random", "--count", "2",
                                    "--output", "-", expect=2).stderr
    assert not (Path.cwd() / "-").exists() and not (ws_root / "-").exists()
    assert cli_json(ws_root, "verify")["clean"]


# -- 3. one row per candidate -----------------------------------------------------------------------------------------
def _append_duplicates(ws_root, n: int) -> int:
    """What older ingests did: the same candidate rows stored again as a recorded ingest (the storage layer only)."""
    ws = Workspace.open(ws_root)
    rows = ws.lance.dataset(CANDIDATES, candidates_version(ws)).to_table().slice(0, n)
    ingest_id = meta_pools.next_ingest_id(ws)
    rows = rows.set_column(rows.schema.get_field_index("ingest_id"), CANDIDATE_SCHEMA.field("ingest_id"),
                           pa.array([ingest_id] * n, pa.int64()))
    version = ws.lance.append(CANDIDATES, rows, CANDIDATE_SCHEMA)
    meta_pools.record_ingests(ws, "p", [dict(ingest_id=ingest_id, source="old.json", file_name="old.json",
                                             file_size=0, file_sha256="", format="alpaca", n_records=n, n_added=n,
                                             n_invalid=0, n_dup_within=0, n_dup_in_pool=0, n_dup_other_pools=0,
                                             n_truncated_tail=0)], CANDIDATES, version, "0.old", [])
    return ingest_id


def _sql(ws_root, query: str) -> list[dict]:
    return cli_json(ws_root, "sql", query)


@pytest.mark.faults   # verify --repair killed after its Lance delete, then finished: ~18 CPU s
def test_duplicate_candidates_are_reported_repaired_and_views_keep_one_row(template, tmp_path):
    ws_root = copy_of(template, tmp_path)
    k = N_POOL + 1
    cli(ws_root, "select", "--task", "toy", "--method", "random", "--count", str(k), "--name", "all")
    _append_duplicates(ws_root, 13)
    assert _sql(ws_root, "SELECT count(*) AS n FROM candidates")[0]["n"] == k + 13
    # the audit views count each member once (before the fix: k + 13 rows)
    assert _sql(ws_root, "SELECT count(*) AS n FROM selection_audit WHERE selection_name = 'all'")[0]["n"] == k
    assert sum(r["n"] for r in _sql(ws_root, "SELECT n FROM selection_sources")) == k
    assert _sql(ws_root, "SELECT n_candidates FROM pool_summary")[0]["n_candidates"] == k
    found = cli(ws_root, "verify", "--json", expect=1)
    [dup] = [f for f in json.loads(found.stdout)["findings"] if "more than once" in f["what"]]
    assert "13 candidate keys" in dup["what"] and "--repair" in dup["fix"]
    # killed after the Lance delete, before the record: still the old version for readers; the next write
    # command (an ingest) finishes the repair before it appends
    cli(ws_root, "verify", "--repair", expect=137, env={"LESSDB_FAULT": "repair.after_lance_delete:1"})
    assert _sql(ws_root, "SELECT count(*) AS n FROM candidates")[0]["n"] == k + 13
    cli(ws_root, "ingest", write_jsonl(tmp_path / "more.jsonl", _records(99, 3)), "--pool", "q")
    assert _sql(ws_root, "SELECT pool, count(*) AS n FROM candidates GROUP BY ALL ORDER BY pool") == \
        [{"pool": "p", "n": k}, {"pool": "q", "n": 3}]
    assert cli_json(ws_root, "verify")["clean"]
    assert "repair 1: removed 13 duplicate rows" in cli(ws_root, "versions").stdout


def test_verify_repair_removes_duplicates_keeping_the_earliest(template, tmp_path):
    ws_root = copy_of(template, tmp_path)
    dup_ingest = _append_duplicates(ws_root, 5)
    out = cli_json(ws_root, "verify", "--repair")
    assert out["clean"] and any("deleted 5 duplicate rows" in (f["repaired"] or "") for f in out["findings"])
    assert cli_json(ws_root, "verify")["clean"]
    rows = _sql(ws_root, "SELECT ingest_id, count(*) AS n, count(DISTINCT key) AS keys FROM candidates GROUP BY ALL")
    assert rows == [{"ingest_id": 1, "n": N_POOL + 1, "keys": N_POOL + 1}]       # the later copies went
    ws = Workspace.open(ws_root)
    assert select_candidate_ids(ws, "p") == sorted(select_candidate_ids(ws, "p"))
    pools = cli_json(ws_root, "pools")
    assert pools[0]["candidates"] == N_POOL + 1
    assert dup_ingest == 2


# -- 4. selection members carry a digest; export refuses a changed selection ------------------------------------------
def test_export_refuses_a_selection_whose_members_were_changed(template, tmp_path):
    ws_root = copy_of(template, tmp_path)
    cli(ws_root, "select", "--task", "toy", "--method", "random", "--count", "5", "--name", "a")
    cli(ws_root, "select", "--task", "toy", "--method", "random", "--count", "5", "--seed", "1", "--name", "b")
    ws = Workspace.open(ws_root)
    sid = meta_selections.get_selection(ws, "a")["selection_id"]
    members = meta_selections.selection_members(ws, sid)
    assert recorded_digest(ws, sid)["members_sha256"] == member_digest(sid, members)
    assert digest_status(ws, sid).state == "match"
    with duckdb.connect(str(ws_root / "lessdb.duckdb")) as con:   # a tampered member row
        con.execute("UPDATE selection_members SET score = score * 21 WHERE selection_id = ? AND rank = 1", [sid])
    out = tmp_path / "a.jsonl"
    proc = cli(ws_root, "export", "a", "--output", out, expect=1)
    assert "no longer match the digest" in proc.stderr and "lessdb verify" in proc.stderr and not out.exists()
    assert digest_status(ws, sid).state == "mismatch"
    cli(ws_root, "export", "b", "--output", tmp_path / "b.jsonl")           # an untouched one exports
    # a selection recorded before digests has none: it exports, and a digest can be recorded for it later
    sid_b = meta_selections.get_selection(ws, "b")["selection_id"]
    with duckdb.connect(str(ws_root / "lessdb.duckdb")) as con:
        con.execute("DELETE FROM selection_digests WHERE selection_id = ?", [sid_b])
    assert digest_status(ws, sid_b).state == "none"
    cli(ws_root, "export", "b", "--output", tmp_path / "b2.jsonl")
    # verify names the changed selection (an error no repair hides) and the undigested one (info); --repair
    # records the undigested one's digest (backfilled) and leaves the changed one an error
    report = cli_json(ws_root, "verify", expect=1)
    assert [f["severity"] for f in report["findings"] if sid in f["what"]] == ["error"], report["findings"]
    info = [f for f in report["findings"] if "before member digests" in f["what"]]
    assert len(info) == 1 and info[0]["severity"] == "info" and sid_b in info[0]["what"], report["findings"]
    repaired = cli_json(ws_root, "verify", "--repair", expect=1)
    assert [f["severity"] for f in repaired["findings"] if sid in f["what"] and not f["repaired"]] == ["error"]
    assert digest_status(ws, sid_b).state == "match" and recorded_digest(ws, sid_b)["origin"] == "backfilled"
    assert backfill_digest(ws, sid_b) is None and digest_status(ws, sid).state == "mismatch"
    assert not [f for f in cli_json(ws_root, "verify", expect=1)["findings"] if "before member digests" in f["what"]]


# -- 5. relocatable workspaces ----------------------------------------------------------------------------------------
def _strings_in_catalogue(ws_root, needle: str) -> list[tuple[str, str]]:
    """(table.column) of every text value in the DuckDB catalogue that contains `needle`."""
    hits = []
    with duckdb.connect(str(ws_root / "lessdb.duckdb"), read_only=True) as con:
        cols = con.execute("SELECT table_name, column_name FROM information_schema.columns c JOIN "
                           "information_schema.tables t USING (table_name) WHERE t.table_type = 'BASE TABLE' AND "
                           "c.data_type IN ('VARCHAR', 'JSON')").fetchall()
        for table, column in cols:
            if con.execute(f'SELECT count(*) FROM "{table}" WHERE contains(CAST("{column}" AS VARCHAR), ?)',
                           [needle]).fetchone()[0]:
                hits.append(f"{table}.{column}")
    return hits


@pytest.mark.slow   # replays and verifies in three places: ~18 CPU s
def test_a_copied_or_moved_workspace_reads_only_its_own_files(template, tmp_path):
    ws_root = copy_of(template, tmp_path, "featurized")     # ingest, warmup, featurize, select (fixture)
    cli(ws_root, "export", "ref")                            # to exports/ (lessdb's own place)
    original = str(template["root"] / "featurized")
    assert _strings_in_catalogue(ws_root, original) == []   # nothing stored points at where it was made
    assert _strings_in_catalogue(ws_root, str(ws_root)) == []
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(ws_root), str(copy)], check=True)
    moved = tmp_path / "moved-away"
    ws_root.rename(moved)
    assert cli_json(copy, "verify")["clean"]
    assert "identical members, ranks and scores" in cli(copy, "select", "--replay", "ref").stdout
    shutil.rmtree(moved)                                      # nothing of the original is left to read
    report = cli_json(copy, "verify")
    assert report["clean"] and report["checked"]["checkpoints"] == 2
    assert "identical members, ranks and scores" in cli(copy, "select", "--replay", "ref").stdout
    ws = Workspace.open(copy)
    assert all(c.path.startswith(str(copy) + os.sep) for c in meta_runs.list_checkpoints(ws, "r"))
    elsewhere = tmp_path / "elsewhere" / "ws"
    elsewhere.parent.mkdir()
    copy.rename(elsewhere)                                    # `mv WS elsewhere`
    assert cli_json(elsewhere, "verify")["clean"]


def test_absolute_paths_of_older_workspaces_are_rewritten_on_open(template, tmp_path):
    """A catalogue written before relative paths (absolute, pointing at where it was made, here another folder as
    after a `cp -a` of an old workspace) is migrated to relative paths on open."""
    ws_root = copy_of(template, tmp_path, "featurized")
    with duckdb.connect(str(ws_root / "lessdb.duckdb")) as con:
        con.execute("UPDATE checkpoints SET path = '/old/place/ws/' || path")
        con.execute("INSERT INTO exports VALUES ('x', ?, 'jsonl', 1, 'h', current_timestamp), "
                    "('x', '/old/place/ws/exports/x.jsonl', 'jsonl', 1, 'h', current_timestamp), "
                    "('x', '/home/me/out.jsonl', 'jsonl', 1, 'h', current_timestamp)", [str(ws_root / "mine.jsonl")])
        con.execute("DELETE FROM schema_migrations WHERE name = 'relative_paths'")
    ws = Workspace.open(ws_root)
    with duckdb.connect(str(ws_root / "lessdb.duckdb"), read_only=True) as con:
        assert [r[0] for r in con.execute("SELECT path FROM checkpoints ORDER BY epoch").fetchall()] == \
            ["checkpoints/r/epoch-1", "checkpoints/r/epoch-2"]
        assert [r[0] for r in con.execute("SELECT path FROM exports WHERE selection_id = 'x' ORDER BY path")
                .fetchall()] == ["/home/me/out.jsonl", "exports/x.jsonl", "mine.jsonl"]
    assert all(Path(c.path).is_dir() for c in meta_runs.list_checkpoints(ws, "r"))
    assert cli_json(ws_root, "verify")["clean"]


def test_stored_model_names_tell_a_folder_inside_the_workspace_from_a_name(tmp_path):
    from lessdb.storage.paths import resolved_model_name, stored_model_name, stored_model_source

    root = tmp_path / "ws"
    inside, outside = str(root / "mymodels" / "m"), str(tmp_path / "elsewhere" / "m")
    for name, stored in (("smollm2-135m", "smollm2-135m"), ("tiny", "tiny"), (inside, "./mymodels/m"),
                         (outside, outside)):
        assert stored_model_name(root, name) == stored
        assert resolved_model_name(root, stored) == name
    assert resolved_model_name(tmp_path / "moved", "./mymodels/m") == str(tmp_path / "moved" / "mymodels" / "m")
    assert stored_model_source(root, f"dir:{inside}") == "dir:./mymodels/m"
    assert stored_model_source(root, "gguf:smollm2.gguf sha256:ab") == "gguf:smollm2.gguf sha256:ab"


@pytest.mark.slow   # its own warmup and featurize on a saved tiny model: ~15 CPU s
def test_a_run_on_a_model_folder_inside_the_workspace_moves_with_it(tmp_path):
    """The run records its model folder relative to the workspace: after `mv WS elsewhere` (nothing left where
    it was) featurize loads the model from the moved folder, and `lessdb runs` shows where it is now."""
    from lessdb.models.tiny import tiny_llama, tiny_tokenizer

    ws = Workspace.init(tmp_path / "ws")
    model_dir = ws.root / "mymodels" / "tiny3"
    tiny_llama(3).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    ingest_files(ws, [write_jsonl(tmp_path / "pool.jsonl", _records(5, 12))], pool="p", progress=False)
    run_warmup(ws, build_warmup_config("p", run_id="m", **{**WARMUP, "model": str(model_dir), "epochs": 1}),
               progress=False, count_tokens=False)
    with duckdb.connect(str(ws.root / "lessdb.duckdb"), read_only=True) as con:
        assert con.execute("SELECT model_name FROM runs").fetchall() == [("./mymodels/tiny3",)]
        assert con.execute("SELECT name, source, path FROM models").fetchall() == \
            [("./mymodels/tiny3", "dir:./mymodels/tiny3", "mymodels/tiny3")]
    moved = tmp_path / "elsewhere"
    ws.root.rename(moved)
    assert [r["model_name"] for r in cli_json(moved, "runs")] == [str(moved / "mymodels" / "tiny3")]
    cli(moved, "featurize", "--run", "m", *FEAT)
    assert cli_json(moved, "verify")["clean"]
