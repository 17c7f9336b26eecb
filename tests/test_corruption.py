"""The corruption suite (issue 23): each kind of damage a disk, a careless `rm` or a hand edit can do to a workspace,
made on a fresh copy of one real workspace (tiny Llama, LanceDB, DuckDB), then

- `lessdb verify --json` finds it: the finding's check, severity and words, its exit code, `repairable` only where
  `--repair` fixes it, and never a crash (no exit 70, no traceback, no "check stopped" finding);
- `select`, `select --replay` and `export` (and `featurize` for checkpoint files) either work or exit 1 with one line
  pointing to `lessdb verify` when they read the damaged file: never 70;
- where the finding's fix is a command, that command is run and fixes it.

The tally (kinds made, found, crashes) is printed at the end of the run (conftest's terminal summary).
"""
from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

import suite_tally
from conftest import write_jsonl
from lessdb import Workspace
from lessdb.cli.main import EXIT_INTERNAL, main
from lessdb.runs.config import build_warmup_config
from lessdb.featurize import FeaturizeConfig, featurize_run
from lessdb.ingest.pipeline import ingest_files
from lessdb.selection import SelectConfig, select
from lessdb.storage import meta_features, meta_runs, meta_selections
from lessdb.tasks.catalog import add_tasks
from lessdb.runs.warmup import run_warmup
from test_faults import _records

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SELECT = ("select", "--task", "toy", "--run", "ref", "--count", "3")
REPLAY = ("select", "--replay", "ref")
FEATURIZE = ("featurize", "--run", "ref", "--dim", "64", "--dtype", "float32", "--batch-size", "4", "--device", "cpu")
POINTER = "run `lessdb verify`"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """One workspace with a pool, a 2-epoch warmup run, its features, a task and a selection `ref`."""
    root = tmp_path_factory.mktemp("corruption")
    ws = Workspace.init(root / "base")
    pool_file = write_jsonl(root / "pool.jsonl", _records(23, 24))
    ingest_files(ws, [pool_file], pool="p", progress=False)
    run_warmup(ws, build_warmup_config("p", run_id="ref", model="tiny", percentage=0.5, lora_r=4, lora_alpha=16,
                                       max_seq_length=128, epochs=2, batch_size=4, micro_batch_size=2,
                                       device="cpu"), progress=False)
    add_tasks(ws, "toy", file=write_jsonl(root / "task.jsonl", [
        {"subtask": "a", "prompt": "alpha beta gamma", "completion": "delta epsilon"},
        {"subtask": "b", "prompt": "lambda mu nu", "completion": "xi omicron"}]))
    featurize_run(ws, FeaturizeConfig(run_id="ref", dim=64, dtype="float32", batch_size=4, device="cpu",
                                      progress=False))
    sel = select(ws, SelectConfig(task="toy", run="ref", count=3, name="ref", progress=False))
    return {"root": ws.root, "pool_file": pool_file, "members": [m.candidate_id for m in sel.members]}


def copy_of(base, tmp_path) -> Workspace:
    target = tmp_path / "ws"
    shutil.copytree(base["root"], target)
    ws = Workspace.open(target)
    # until stored paths are relative to the workspace (issue 23's relocatable workspaces), point the copy's
    # checkpoint paths at its own files, so damaging them damages this copy and nothing else
    with ws.duck.connect() as con:
        con.execute("UPDATE checkpoints SET path = replace(path, ?, ?)", [str(base["root"]), str(ws.root)])
    return ws


def lessdb(ws_root: Path, *args) -> tuple[int, str, str]:
    """The console script's `main` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(["--workspace", str(ws_root), *map(str, args)])
            code = 0
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def verify_json(ws_root: Path, *flags) -> tuple[int, dict]:
    code, out, err = lessdb(ws_root, "verify", "--json", *flags)
    assert "Traceback" not in err and code != EXIT_INTERNAL, err
    return code, json.loads(out)


# -- where the files are ----------------------------------------------------------------------------------------
def table_dir(ws, table: str) -> Path:
    return Path(ws.lance.uri(table))


def features_table(ws) -> str:
    return [t for t in ws.lance.table_names() if t.startswith("features_")][0]


def newest_data_file(ws, table: str) -> Path:
    frag = ws.lance.dataset(table).get_fragments()[-1]
    return table_dir(ws, table) / "data" / frag.metadata.files[0].path


def candidate_vectors_file(ws) -> Path:
    """A data file of the newest features version that holds candidate vectors (not the validation cache)."""
    table = features_table(ws)
    for frag in ws.lance.dataset(table).get_fragments():
        if "candidate" in frag.to_table(columns=["role"]).column("role").to_pylist():
            return table_dir(ws, table) / "data" / frag.metadata.files[0].path
    raise AssertionError("no fragment of candidate vectors")


def newest_manifest(ws, table: str) -> Path:
    version = ws.lance.dataset(table).version
    folder = table_dir(ws, table) / "_versions"
    for name in (f"{version}.manifest", f"{2 ** 64 - 1 - version}.manifest"):   # lance's v1 / v2 names
        if (folder / name).exists():
            return folder / name
    raise AssertionError(f"no manifest of version {version} in {folder}")


def checkpoint(ws, epoch: int) -> Path:
    path = Path({c.epoch: c for c in meta_runs.list_checkpoints(ws, "ref")}[epoch].path)
    assert ws.root in path.parents   # the copy's own files (see copy_of)
    return path


def truncate(path: Path, size: int | None = None) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2 if size is None else size)


def overwrite_blocks(path: Path) -> None:
    """Garbage in the middle of every 256 KiB DuckDB block after the header: each fails its checksum."""
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        for offset in range(3 * 262144, size, 262144):
            fh.seek(offset + 4096)
            fh.write(os.urandom(64))


def duck_execute(ws, sql: str, params=None) -> None:
    with ws.duck.connect() as con:
        con.execute(sql, params or [])


def delete_some_candidates(ws) -> None:
    """Rows of ingest 1 deleted from `candidates`, then another ingest records the later version."""
    import lance

    lance.dataset(str(table_dir(ws, "candidates"))).delete("ingest_id = 1 AND total_chars < 40")
    extra = write_jsonl(ws.root.parent / "extra.jsonl", [{"messages": [
        {"role": "user", "content": f"extra {i}"}, {"role": "assistant", "content": "x"}]} for i in range(3)])
    ingest_files(ws, [extra], pool="p", progress=False)


@dataclass
class Damage:
    name: str
    make: Callable
    check: str                     # the finding's check
    severity: str
    words: str                     # a regular expression its `what` matches
    exit: int                      # verify's exit code
    repairable: bool = False
    readers: dict = field(default_factory=dict)   # command -> what its one-line error says (exit 1)

    def __str__(self):
        return self.name


DAMAGED_DUCK = {"select": POINTER, "replay": POINTER, "export": POINTER}
LANCE_FEATURES = {"select": POINTER, "replay": POINTER}
LANCE_CANDIDATES = {"select": POINTER, "replay": POINTER, "export": POINTER}

DAMAGES = [
    Damage("features-data-file-missing", lambda ws: newest_data_file(ws, features_table(ws)).unlink(),
           "tables", "error", r"features_\w+: data/\S+ is missing; .*\(the newest\)", 1, True, LANCE_FEATURES),
    Damage("features-data-file-truncated", lambda ws: truncate(newest_data_file(ws, features_table(ws))),
           "tables", "error", r"features_\w+: data/\S+ holds [\d,]+ bytes, its manifest says", 1, True,
           LANCE_FEATURES),
    Damage("candidates-data-file-missing", lambda ws: newest_data_file(ws, "candidates").unlink(),
           "tables", "error", r"candidates: data/\S+ is missing", 1, False, LANCE_CANDIDATES),
    Damage("candidates-data-file-truncated", lambda ws: truncate(newest_data_file(ws, "candidates")),
           "tables", "error", r"candidates: data/\S+ holds", 1, False, LANCE_CANDIDATES),
    Damage("features-manifest-truncated", lambda ws: truncate(newest_manifest(ws, features_table(ws)), 100),
           "tables", "error", r"its newest manifest cannot be read", 1, False, LANCE_FEATURES),
    Damage("features-manifest-deleted", lambda ws: newest_manifest(ws, features_table(ws)).unlink(),
           "tables", "error", r"version \d+ \(read or written by selection .*\) is missing", 1, False, LANCE_FEATURES),
    Damage("candidates-manifest-deleted", lambda ws: newest_manifest(ws, "candidates").unlink(),
           "tables", "error", r"candidates: version \d+ .* is missing", 1, False, LANCE_CANDIDATES),
    Damage("candidates-manifest-truncated", lambda ws: truncate(newest_manifest(ws, "candidates"), 64),
           "tables", "error", r"candidates: its newest manifest cannot be read", 1, False, LANCE_CANDIDATES),
    Damage("duckdb-truncated", lambda ws: truncate(ws.duck.path), "metadata", "error",
           r"metadata database cannot be read", 1, False, DAMAGED_DUCK),
    Damage("duckdb-blocks-overwritten", lambda ws: overwrite_blocks(ws.duck.path), "metadata", "error",
           r"metadata database cannot be read \(Corrupt database file", 1, False, DAMAGED_DUCK),
    Damage("duckdb-not-a-database", lambda ws: ws.duck.path.write_bytes(os.urandom(1 << 16)), "metadata", "error",
           r"not a valid DuckDB database file", 1, False, DAMAGED_DUCK),
    Damage("checkpoint-adapter-missing", lambda ws: (checkpoint(ws, 1) / "adapter_model.safetensors").unlink(),
           "checkpoints", "error", r"epoch 1: adapter_model.safetensors is missing", 1,
           readers={"featurize": "adapter_model.safetensors is missing; " + POINTER}),
    Damage("checkpoint-optimizer-altered",
           lambda ws: (checkpoint(ws, 2) / "optimizer.safetensors").open("ab").write(b"\0"),
           "checkpoints", "error", r"epoch 2: optimizer.safetensors does not match the sha256", 1),
    Damage("checkpoint-dir-missing", lambda ws: shutil.rmtree(checkpoint(ws, 2)), "checkpoints", "error",
           r"epoch 2: the checkpoint directory is missing", 1),
    Damage("checkpoint-json-missing", lambda ws: (checkpoint(ws, 1) / "checkpoint.json").unlink(), "checkpoints",
           "warning", r"epoch 1: checkpoint.json is missing, so its η̄ .* cannot be checked", 0),
    Damage("mean-lr-altered", lambda ws: duck_execute(ws, "UPDATE checkpoints SET mean_lr = mean_lr * 21 WHERE "
                                                          "epoch = 1"),
           "checkpoints", "error", r"epoch 1: η̄ is .* in the catalogue but .* in checkpoint.json", 1, True),
    Damage("ingest-rows-deleted", delete_some_candidates, "candidates", "error",
           r"ingest 1 \(pool p\) recorded 24 new rows; version \d+ holds \d+", 1),
    Damage("job-counts-altered", lambda ws: meta_features.finish_job(
        ws, meta_features.job_rows(ws)[0]["job_id"], counts={"n_done": 999}), "jobs", "warning",
           r"counts 999 done", 0, True),
    Damage("selection-version-untagged", lambda ws: ws.lance.open(features_table(ws)).tags.delete(
        meta_selections.get_selection(ws, "ref")["selection_id"]), "selections", "warning",
           r"version \d+ is not tagged", 0, True),
]

COMMANDS = {"select": SELECT, "replay": REPLAY, "featurize": FEATURIZE}


@pytest.mark.parametrize("damage", DAMAGES, ids=str)
def test_verify_finds_each_damage_and_nothing_crashes(base, tmp_path, damage, monkeypatch):
    monkeypatch.setenv("LESSDB_PROGRESS", "0")
    monkeypatch.delenv("LESSDB_DEBUG", raising=False)
    ws = copy_of(base, tmp_path)
    assert verify_json(ws.root)[1]["clean"]
    damage.make(ws)
    suite_tally.add("corruption kinds made")

    code, report = verify_json(ws.root)
    found = [f for f in report["findings"] if f["check"] == damage.check and f["severity"] == damage.severity
             and re.search(damage.words, f["what"])]
    assert found, json.dumps(report["findings"], indent=1, ensure_ascii=False)
    assert code == damage.exit == report["exit_code"]
    assert not [f for f in report["findings"] if f["check"] == "verify" or "check stopped" in f["what"]], \
        report["findings"]
    assert found[0]["repairable"] == damage.repairable and found[0]["fix"], found[0]
    summary = lessdb(ws.root, "verify")[1].splitlines()[-1]
    assert ("verify --repair" in summary) == any(f["repairable"] for f in report["findings"]), summary
    suite_tally.add("corruption kinds found by verify")

    for name in ("select", "replay", "export", "featurize"):
        args = COMMANDS.get(name) or ("export", "ref", "--output", tmp_path / "ref.jsonl", "--force")
        if name == "featurize" and name not in damage.readers:
            continue   # a full featurize only for the checkpoint cases that expect it
        code, out, err = lessdb(ws.root, *args)
        assert code != EXIT_INTERNAL and "Traceback" not in err and "Internal error" not in err, (name, err)
        if name in damage.readers:
            assert code == 1 and damage.readers[name] in err and len(err.strip().splitlines()) == 1, (name, code, err)
        suite_tally.add("commands run on damaged workspaces")
    code, report = verify_json(ws.root, "--repair")
    assert not [f for f in report["findings"] if f["check"] == "verify"], report["findings"]
    if damage.repairable:
        assert any(f["repaired"] for f in report["findings"]), report["findings"]


# -- the fixes the findings give, run as given ----------------------------------------------------------------------
def _command_in(fix: str) -> list[str]:
    """The first `lessdb …` command quoted in a finding's fix, as arguments."""
    match = re.search(r"`lessdb ([^`]+)`", fix)
    assert match, fix
    return shlex.split(match.group(1))


def test_lost_feature_file_repair_then_the_given_featurize_restores_the_selection(base, tmp_path, monkeypatch):
    monkeypatch.setenv("LESSDB_PROGRESS", "0")
    ws = copy_of(base, tmp_path)
    candidate_vectors_file(ws).unlink()
    code, report = verify_json(ws.root, "--repair")
    assert code == 1 and any(f["repaired"] and f["check"] == "tables" for f in report["findings"])
    [job] = [f for f in report["findings"] if f["check"] == "features" and "neither a vector" in f["what"]]
    code, _, err = lessdb(ws.root, *_command_in(job["fix"]))
    assert code == 0, err
    code, report = verify_json(ws.root)
    # what is left: the selection that read the lost file can no longer be replayed, and says so
    assert code == 1 and [f["check"] for f in report["findings"] if f["severity"] == "error"] == ["tables"]
    assert "read by selection" in report["findings"][0]["what"]
    code, out, err = lessdb(ws.root, *SELECT, "--json")
    assert code == 0, err
    assert [m["candidate_id"] for m in json.loads(out)["members_head"]] == base["members"]


def test_mean_lr_repair_restores_the_selection(base, tmp_path, monkeypatch):
    monkeypatch.setenv("LESSDB_PROGRESS", "0")
    ws = copy_of(base, tmp_path)
    duck_execute(ws, "UPDATE checkpoints SET mean_lr = mean_lr * 21 WHERE epoch = 1")
    code, out, _ = lessdb(ws.root, *SELECT, "--name", "made-while-wrong", "--json")
    assert code == 0
    code, report = verify_json(ws.root)
    whats = [f["what"] for f in report["findings"]]
    assert code == 1 and any("made-while-wrong" in w or json.loads(out)["selection_id"] in w for w in whats), whats
    code, report = verify_json(ws.root, "--repair")
    assert [f["check"] for f in report["findings"] if f["repaired"]] == ["checkpoints"]
    code, out, err = lessdb(ws.root, *SELECT, "--json")
    assert code == 0 and [m["candidate_id"] for m in json.loads(out)["members_head"]] == base["members"], err


def test_deleted_rows_fix_command_adds_them_back(base, tmp_path, monkeypatch):
    monkeypatch.setenv("LESSDB_PROGRESS", "0")
    ws = copy_of(base, tmp_path)
    delete_some_candidates(ws)
    code, report = verify_json(ws.root)
    [finding] = [f for f in report["findings"] if f["check"] == "candidates"]
    args = _command_in(finding["fix"])
    assert args[:2] == ["ingest", str(base["pool_file"])]
    code, out, err = lessdb(ws.root, *args, "--json")
    assert code == 0 and json.loads(out)["n_added"] > 0, err
    code, report = verify_json(ws.root)
    assert code == 0 and report["clean"], report["findings"]
    # the fix is not offered again once it would add nothing
    [finding] = [f for f in report["findings"] if f["check"] == "candidates"]
    assert finding["severity"] == "info" and "nothing to do" in finding["fix"]


def test_verify_without_repairable_findings_does_not_offer_repair(base, tmp_path):
    ws = copy_of(base, tmp_path)
    (checkpoint(ws, 2) / "optimizer.safetensors").open("ab").write(b"\0")
    code, out, _ = lessdb(ws.root, "verify")
    assert code == 1 and "--repair" not in out.splitlines()[-1]
    code, report = verify_json(ws.root, "--repair")
    assert code == 1 and not any(f["repaired"] for f in report["findings"])


def test_tampered_members_are_found_and_the_replay_gives_the_true_ones(base, tmp_path, monkeypatch):
    """Members changed after the selection was recorded no longer match its digest (recorded with the members
    by storage/member_digest.py); the fix the finding gives recomputes the true ones."""
    monkeypatch.setenv("LESSDB_PROGRESS", "0")
    ws = copy_of(base, tmp_path)
    duck_execute(ws, "UPDATE selection_members SET score = score * 21 WHERE rank = 1")
    suite_tally.add("corruption kinds made")
    code, report = verify_json(ws.root)
    [finding] = [f for f in report["findings"] if f["check"] == "selections" and "digest" in f["what"]]
    assert code == 1 and finding["severity"] == "error"
    suite_tally.add("corruption kinds found by verify")
    code, out, err = lessdb(ws.root, *_command_in(finding["fix"]), "--json")
    assert code == 0, err
    assert [m["candidate_id"] for m in json.loads(out)["members_head"]] == base["members"]


def test_errors_that_are_not_damage_stay_what_they_are():
    """Only a file that cannot be read is damage: a user's SQL mistakes (even ones naming `checksum` or a missing
    table) and a lock held by another process are not, so they never point to `lessdb verify`."""
    import duckdb

    from lessdb.storage.damage import damage_of

    con = duckdb.connect()
    for query in ("SELECT checksum(1)", "SELECT * FROM no_such_table", "SELEC 1", "SELECT 'Not found: x.lance'::INT"):
        with pytest.raises(duckdb.Error) as err:
            con.execute(query)
        assert damage_of(err.value) is None, query
    assert damage_of(duckdb.IOException('IO Error: Could not set lock on file "x.duckdb": Conflicting lock')) is None
    assert damage_of(ValueError("a bug in lessdb")) is None
    assert damage_of(OSError("LanceError(IO): file size is too small")) is not None
