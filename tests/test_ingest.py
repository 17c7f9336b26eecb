"""Ingest: formats, duplicates, provenance, every bad-input case (nothing written), the real ShareGPT file."""
from __future__ import annotations

import json

import pytest

from lessdb.errors import InputError
from lessdb.ingest import builtin_source_path, ingest_builtin, ingest_files
from lessdb.ingest.records import ReadStats, iter_records
from lessdb.storage.candidates import read_candidates
from lessdb.storage.user_sql import run_readonly_sql

from conftest import run_cli, write_jsonl

MESSAGES = {"dataset": "tulu", "id": "m1", "messages": [
    {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And Italy?"},
    {"role": "assistant", "content": "Rome."}]}
SHAREGPT = {"id": "s1", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}
ALPACA = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}
PROMPT_COMPLETION = {"prompt": "Say yes.", "completion": "Yes."}


def state(ws):
    """Everything an ingest could have written: candidates version and rows, metadata rows."""
    rows = run_readonly_sql(ws, "SELECT (SELECT count(*) FROM candidates), (SELECT count(*) FROM ingests), "
                                "(SELECT count(*) FROM pools), (SELECT count(*) FROM ingest_skipped)").rows[0]
    return ws.lance.version("candidates"), rows


def test_all_four_formats_normalise_to_one_conversation_form(workspace, tmp_path):
    path = write_jsonl(tmp_path / "mix.jsonl", [MESSAGES, SHAREGPT, ALPACA, PROMPT_COMPLETION])
    report = ingest_files(workspace, [path], pool="mix", progress=False)
    assert report.total("n_added") == 4 and report.files[0].format == "mixed"
    table = read_candidates(workspace, pool="mix").to_pylist()
    by_source = {r["source_id"]: r for r in table}
    assert by_source["m1"]["messages"] == MESSAGES["messages"] and by_source["m1"]["source_dataset"] == "tulu"
    assert by_source["m1"]["n_turns"] == 5 and by_source["m1"]["completion_chars"] == len("Paris.Rome.")
    assert by_source["s1"]["messages"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    alpaca = next(r for r in table if r["messages"][-1]["content"] == "5")
    assert alpaca["messages"][0]["content"] == "Add the numbers.\n\n2 and 3"
    assert alpaca["source_dataset"] == "mix"  # no dataset field: the file's stem
    assert {r["pool"] for r in table} == {"mix"}
    assert all(r["key"] == f"mix/{r['id']}" for r in table)


def test_json_array_files_and_line_numbers(workspace, tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([ALPACA, PROMPT_COMPLETION], indent=2))
    report = ingest_files(workspace, [path], pool="p", progress=False)
    assert report.total("n_added") == 2
    bad = tmp_path / "bad.json"
    bad.write_text('[\n  {"prompt": "a", "completion": "b"},\n  {"prompt": "c", "completion": 7}\n]\n')
    with pytest.raises(InputError) as err:
        ingest_files(workspace, [bad], pool="p", progress=False)
    assert (err.value.line, err.value.field) == (3, "completion")


def test_stable_ids_and_duplicates_within_and_across_pools(workspace, tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [ALPACA, ALPACA, SHAREGPT])
    r1 = ingest_files(workspace, [a], pool="one", progress=False)
    assert (r1.total("n_added"), r1.total("n_dup_within")) == (2, 1)
    r2 = ingest_files(workspace, [a], pool="one", progress=False)
    assert (r2.total("n_added"), r2.total("n_dup_in_pool"), r2.lance_version) == (0, 3, None)
    r3 = ingest_files(workspace, [a], pool="two", progress=False)
    assert (r3.total("n_added"), r3.total("n_dup_other_pools")) == (2, 2)
    ids_one = sorted(r["id"] for r in read_candidates(workspace, pool="one").to_pylist())
    ids_two = sorted(r["id"] for r in read_candidates(workspace, pool="two").to_pylist())
    assert ids_one == ids_two  # content hash: the same conversation has the same id everywhere


def test_each_ingest_is_one_version_recorded_with_file_identity(workspace, tmp_path):
    import hashlib
    path = write_jsonl(tmp_path / "a.jsonl", [ALPACA, SHAREGPT])
    before = workspace.lance.version("candidates")
    report = ingest_files(workspace, [path], pool="p", progress=False)
    assert report.lance_version == before + 1 == workspace.lance.version("candidates")
    row = run_readonly_sql(workspace, "SELECT file_name, file_size, file_sha256, n_added, lance_version, pool "
                                      "FROM ingests").as_dicts()[0]
    assert row == {"file_name": "a.jsonl", "file_size": path.stat().st_size,
                   "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "n_added": 2,
                   "lance_version": report.lance_version, "pool": "p"}


BAD_INPUTS = [
    # (file content, expected line, expected field, expected reason fragment)
    ('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": \n', 2, None, "invalid JSON"),
    ('{"prompt": "a", "completion": "b"}\n{"instruction": "x"}\n', 2, None, "unknown record shape"),
    ('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": ["b"]}\n', 2, "completion", "expected a string"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}\n', 1, "messages[1].role", "unknown role"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "  "}]}\n', 1, "messages[1]", "empty assistant turn"),
    ('{"messages": [{"role": "user", "content": "a"}]}\n', 1, "messages", "no assistant turn"),
    ('{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt"}]}\n', 1, "conversations[1].value", "missing"),
    ('{"instruction": "a", "output": ""}\n', 1, "output", "empty assistant turn"),
    ('[1, 2]\n', 1, None, "expected a JSON object"),
]


@pytest.mark.parametrize("content,line,field,reason", BAD_INPUTS)
def test_bad_record_names_file_line_field_and_writes_nothing(workspace, tmp_path, content, line, field, reason):
    ingest_files(workspace, [write_jsonl(tmp_path / "ok.jsonl", [ALPACA])], pool="p", progress=False)
    before = state(workspace)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    with pytest.raises(InputError) as err:
        ingest_files(workspace, [bad], pool="p", progress=False)
    assert (err.value.file, err.value.line, err.value.field) == (str(bad), line, field)
    assert reason in err.value.reason
    assert state(workspace) == before


def test_invalid_utf8_empty_and_missing_files(workspace, tmp_path):
    before = state(workspace)
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"prompt": "a", "completion": "b"}\n{"prompt": "caf\xe9", "completion": "b"}\n')
    with pytest.raises(InputError, match="invalid UTF-8") as err:
        ingest_files(workspace, [bad], pool="p", progress=False)
    assert err.value.line == 2
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="file is empty"):
        ingest_files(workspace, [empty], pool="p", progress=False)
    with pytest.raises(InputError, match="file not found"):
        ingest_files(workspace, [tmp_path / "missing.jsonl"], pool="p", progress=False)
    # a good file next to a bad one: still nothing written
    good = write_jsonl(tmp_path / "good.jsonl", [ALPACA])
    with pytest.raises(InputError):
        ingest_files(workspace, [good, bad], pool="p", progress=False)
    assert state(workspace) == before


def test_skip_invalid_reports_and_records_each_bad_line(workspace, tmp_path):
    path = tmp_path / "messy.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": ""}\nnot json\n'
                    '{"messages": [{"role": "user", "content": "q"}]}\n{"prompt": "d", "completion": "e"}\n')
    report = ingest_files(workspace, [path], pool="p", skip_invalid=True, progress=False)
    assert (report.total("n_added"), report.total("n_invalid")) == (2, 3)
    skipped = run_readonly_sql(workspace, "SELECT line, field, reason FROM ingest_skipped ORDER BY line").rows
    assert [(line, field) for line, field, _ in skipped] == [(2, "completion"), (3, None), (4, "messages")]
    assert "invalid JSON" in skipped[1][2] and "no assistant turn" in skipped[2][2]
    assert run_readonly_sql(workspace, "SELECT n_invalid FROM ingests").rows == [(3,)]


def test_uncommitted_rows_from_a_killed_ingest_are_removed_before_the_next(workspace, tmp_path):
    from lessdb.storage.lance_tables import CANDIDATE_SCHEMA
    import pyarrow as pa
    orphan = {"key": "p/deadbeef", "id": "deadbeef", "pool": "p", "ingest_id": 77, "source_dataset": "x",
              "source_id": None, "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
              "n_turns": 2, "prompt_chars": 1, "completion_chars": 1, "total_chars": 2}
    workspace.lance.append("candidates", pa.Table.from_pylist([orphan], schema=CANDIDATE_SCHEMA), CANDIDATE_SCHEMA)
    report = ingest_files(workspace, [write_jsonl(tmp_path / "a.jsonl", [ALPACA])], pool="p", progress=False)
    ids = [r["id"] for r in read_candidates(workspace).to_pylist()]
    assert "deadbeef" not in ids and len(ids) == 1
    assert report.files[0].ingest_id > 77  # ids never reused, even those of lost ingests


def test_truncated_json_array_is_recovered_only_when_tolerated(tmp_path):
    path = tmp_path / "cut.json"
    full = json.dumps([SHAREGPT, ALPACA, SHAREGPT])
    path.write_text(full[: len(full) - 20])
    stats = ReadStats()
    records = list(iter_records(path, stats, tolerate_truncation=True))
    assert len(records) == 2 and stats.truncated_tail_chars > 0
    with pytest.raises(InputError, match="invalid JSON"):
        list(iter_records(path))


def test_real_sharegpt_sample(workspace):
    path = builtin_source_path("sharegpt")
    assert path.stat().st_size > 100_000_000
    report = ingest_builtin(workspace, "sharegpt", limit=300, progress=False)
    assert report.total("n_added") == 300
    # the packaged file is cut off mid-record: the tail is reported, the complete records are all read
    assert report.files[0].n_truncated_tail > 0
    assert report.total("n_records") == 17_671
    stats = run_readonly_sql(workspace, "SELECT count(*), min(n_turns), min(completion_chars) FROM candidates "
                                        "WHERE pool = 'sharegpt' AND source_dataset = 'sharegpt'").rows[0]
    assert stats[0] == 300 and stats[1] >= 2 and stats[2] > 0


def test_cli_ingest_pools_and_versions_in_a_subprocess(tmp_path):
    ws = tmp_path / "ws"
    run_cli("init", workspace=ws)
    data = write_jsonl(tmp_path / "a.jsonl", [ALPACA, SHAREGPT])
    out = run_cli("ingest", data, "--pool", "p", "--json", workspace=ws)
    assert json.loads(out.stdout)["n_added"] == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "completion": 5}\n')
    proc = run_cli("ingest", bad, "--pool", "p", workspace=ws, check=False)
    assert proc.returncode == 2 and f"{bad}, line 1, field 'completion'" in proc.stderr
    pools = json.loads(run_cli("pools", "--json", workspace=ws).stdout)
    assert [(p["pool"], p["candidates"]) for p in pools] == [("p", 2)]
    versions = json.loads(run_cli("versions", "--json", workspace=ws).stdout)
    assert any(v["made_by"].startswith("ingest") for v in versions)
