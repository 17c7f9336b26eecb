"""`--where` is one boolean expression over candidates' columns and can only narrow the pool (issue 12, item 6).

`lessdb select --pool p1 --where "1=1) OR (1=1"` used to close the parenthesis of `pool = ? AND (<where>)` and
select (and record under p1) members of another pool. Real workspace, two pools, `--method random` (no model).
"""
from __future__ import annotations

import pytest

from conftest import write_jsonl
from lessdb import Workspace
from lessdb.cli.options import setting_error_message
from lessdb.errors import InputError
from lessdb.ingest import ingest_files
from lessdb.selection import SelectConfig, list_selections, select
from lessdb.storage import user_filter
from lessdb.storage.candidates import read_candidates, select_candidate_ids
from lessdb.tasks.catalog import add_tasks

ESCAPES = ["1=1) OR (1=1", "1=1) OR pool <> 'p1' OR (1=1", "TRUE)) OR ((TRUE"]


def _conv(pool: str, i: int) -> dict:
    return {"dataset": f"src{i % 3}", "messages": [{"role": "user", "content": f"{pool} question {i} " + "x" * i},
                                                   {"role": "assistant", "content": f"{pool} answer {i}"}]
            + ([{"role": "user", "content": "more"}, {"role": "assistant", "content": "yes"}] if i % 2 else [])}


@pytest.fixture(scope="module")
def two_pools(tmp_path_factory):
    root = tmp_path_factory.mktemp("where")
    ws = Workspace.init(root / "ws")
    for pool in ("p1", "p2"):
        write_jsonl(root / f"{pool}.jsonl", [_conv(pool, i) for i in range(12)])
        ingest_files(ws, [root / f"{pool}.jsonl"], pool=pool, progress=False)
    write_jsonl(root / "task.jsonl", [{"subtask": s, "prompt": f"q {s} {i}", "completion": "a"}
                                      for s in "ab" for i in range(2)])
    add_tasks(ws, name="toy", file=root / "task.jsonl")
    rows = read_candidates(ws).to_pylist()
    return {"ws": ws, "rows": rows}


@pytest.mark.parametrize("where", ESCAPES)
def test_where_cannot_escape_the_pool(two_pools, where):
    ws = two_pools["ws"]
    before = len(list_selections(ws))
    with pytest.raises(InputError, match="field 'where'") as err:
        select(ws, SelectConfig(task="toy", pool="p1", method="random", percentage=1.0, where=where, progress=False))
    assert "not a valid SQL expression" in str(err.value)
    assert len(list_selections(ws)) == before          # nothing recorded


@pytest.mark.parametrize("where", ESCAPES)
def test_pool_restriction_holds_even_without_the_check(two_pools, where, monkeypatch):
    """Defence in depth: the filter is applied over a subquery that already restricted the pool, so even a
    filter the parser check let through can only fail or narrow p1, never reach p2."""
    monkeypatch.setattr(user_filter, "check_filter", lambda text, field="where", columns=None, **_: text)
    p1 = {r["id"] for r in two_pools["rows"] if r["pool"] == "p1"}
    try:
        got = select_candidate_ids(two_pools["ws"], "p1", where)
    except InputError:
        return
    assert set(got) <= p1


def test_valid_filters_select_what_python_selects(two_pools):
    ws, rows = two_pools["ws"], two_pools["rows"]
    p1 = [r for r in rows if r["pool"] == "p1"]
    cases = {
        "n_turns = 4": lambda r: r["n_turns"] == 4,
        "source_dataset <> 'src0' AND total_chars < 40": lambda r: r["source_dataset"] != "src0"
        and r["total_chars"] < 40,
        "candidates.prompt_chars BETWEEN 20 AND 30": lambda r: 20 <= r["prompt_chars"] <= 30,
        "len(list_filter(messages, lambda m: m.role = 'user')) > 1": lambda r: sum(
            m["role"] == "user" for m in r["messages"]) > 1,
        "messages[1].content LIKE '%question 1%'": lambda r: "question 1" in r["messages"][0]["content"],
        "CAST(n_turns AS VARCHAR) = '2'": lambda r: r["n_turns"] == 2,
        "pool = 'p2'": lambda r: False,                  # the other pool is out of reach, not an error
    }
    for where, keep in cases.items():
        want = sorted(r["id"] for r in p1 if keep(r))
        assert select_candidate_ids(ws, "p1", where) == want, where
    res = select(ws, SelectConfig(task="toy", pool="p1", method="random", percentage=1.0, where="n_turns = 4",
                                  progress=False))
    assert sorted(m.candidate_id for m in res.members) == sorted(r["id"] for r in p1 if r["n_turns"] == 4)
    assert res.provenance["sql_filter"] == "n_turns = 4"


@pytest.mark.parametrize("where, reason", [
    ("1=1; DROP TABLE pools", "2 SQL statements"),
    ("n_turns = 2; SELECT 1", "2 SQL statements"),
    ("pool = 'p1' -- and the rest", "comment"),
    ("n_turns = 2 /* hidden */", "comment"),
    ("1=1 /* unterminated", "not a valid SQL expression"),
    ("n_turns = 2 ORDER BY id", "ORDER BY"),
    ("n_turns = 2 LIMIT 1", "LIMIT"),
    ("n_turns = 2 GROUP BY pool", "GROUP BY"),
    ("TRUE UNION SELECT * FROM candidates", "not a single expression"),
    ("id IN (SELECT candidate_id FROM selection_members)", "subquery"),
    ("EXISTS (SELECT 1)", "subquery"),
    ("no_such_column > 1", "unknown column 'no_such_column'"),
    ("selection_members.rank = 1", "unknown column 'selection_members.rank'"),
    ("n_turns > ?", "query parameter"),
    ("n_turns > $1", "query parameter"),
    ("COLUMNS(*) IS NOT NULL", "'*'"),
    ("row_number() OVER () < 3", "window"),
    ("((n_turns = 2)", "not a valid SQL expression"),
    ("", "empty"),
    ("   ", "empty"),
    ("n_turns = 2 OR source_id = '\udcff'", "surrogate"),
])
def test_check_filter_refuses(where, reason):
    with pytest.raises(InputError) as err:
        user_filter.check_filter(where)
    # the library names the setting (a Python user passes where=...), the CLI shows its flag
    assert reason in str(err.value) and "field 'where'" in str(err.value) and err.value.field == "where"
    assert "field '--where'" in setting_error_message(err.value)


def test_recorded_filter_is_checked_again(two_pools):
    """A selection recorded before the check (its sql_filter escapes) is refused when read back, not run."""
    from lessdb.storage import meta_selections as meta

    sel = {"selection_id": "x", "params": {"pool": "p1"}, "sql_filter": ESCAPES[0], "table_versions": {}}
    with pytest.raises(InputError, match="field 'where'"):
        meta.length_stats(two_pools["ws"], sel)
