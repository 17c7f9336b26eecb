"""Bad input, table-driven (issue 12, item 8): every case runs the real `lessdb` entry point (`cli.main.main`,
the function the console script calls, in-process to keep ~100 cases fast; one case per kind also runs as a
subprocess below) against one shared real workspace, and asserts

- the documented exit code (cli/main.py: 1 user error, 2 bad input/usage; never 0, never 70 = internal error),
- a message naming the file, line and field where there is one,
- no traceback (an exception escaping `main` fails the test the same way a traceback would),
- nothing written: LanceDB table versions, DuckDB row counts of every table and the files of the scratch
  folder are the same before and after.

The count of inputs tried and refused cleanly is printed at the end (`-s` shows it; bench/RESULTS.md has it).
"""
from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field

import pytest

import suite_tally
from conftest import run_cli, write_jsonl
from lessdb import Workspace
from lessdb.cli.main import EXIT_INTERNAL, main
from lessdb.ingest import ingest_files
from lessdb.selection import SelectConfig, select
from lessdb.tasks.catalog import add_tasks

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
SURROGATE = "bad \\ud800 text"          # as it appears in a JSON file: a lone-surrogate escape
DEEP = 50_000                          # levels of nesting: far past Python's recursion limit
TALLY = {"tried": 0, "refused_cleanly": 0}


def j(obj) -> str:
    return json.dumps(obj)


def lines(*records) -> bytes:
    return "".join((r if isinstance(r, str) else j(r)) + "\n" for r in records).encode("utf-8")


def msgs(user="q", assistant="a", **extra) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}], **extra}


@dataclass
class Case:
    name: str
    args: tuple                 # "{d}" is the scratch folder, "{ws}" the workspace
    code: int = 2
    expect: tuple = ()          # substrings of stderr (file, line, field, reason)
    files: dict = field(default_factory=dict)   # name under {d} -> bytes

    def __str__(self):
        return self.name


def ingest(name: str, content: bytes, *expect: str, extra: tuple = (), code: int = 2) -> Case:
    return Case(f"ingest-{name}", ("ingest", "{d}/" + name, "--pool", "bad", *extra), code,
                (name, *expect), {name: content})


def task_add(name: str, content: bytes, *expect: str, code: int = 2) -> Case:
    return Case(f"task-{name}", ("task", "add", "t-bad", "--file", "{d}/" + name), code, (name, *expect),
                {name: content})


def where(label: str, text: str, *expect: str, code: int = 2) -> Case:
    return Case(f"where-{label}", ("select", "--task", "toy", "--pool", "p1", "--method", "random", "--count", "2",
                                   "--where", text), code, ("--where", *expect))


def sql(label: str, query: str, *expect: str) -> Case:
    return Case(f"sql-{label}", ("sql", query), 1, ("SQL error", *expect))


def export(label: str, output: str, *expect: str, extra: tuple = (), code: int = 2) -> Case:
    return Case(f"export-{label}", ("export", "sel", "--output", output, *extra), code, expect)


BBH_SURROGATE = ('{"boolean_expressions": "Evaluate.\\n\\nQ: 1\\nA: So the answer is True.\\n\\nQ: 2\\nA: So the '
                 'answer is False.\\n\\nQ: 3\\nA: ' + SURROGATE + ' So the answer is True."}').encode()

CASES = [
    # -- ingest: broken JSON, wrong types, missing fields, empty turns, surrogates, nesting, BOM, binary, sizes
    ingest("broken.jsonl", lines(GOOD, '{"messages": ['), "line 2", "invalid JSON"),
    ingest("truncated.json", ("[" + j(GOOD) + ', {"messages": [').encode(), "line 1", "invalid JSON"),
    ingest("trailing.json", (j(GOOD) + " garbage").encode(), "line 1"),
    ingest("msgs-string.jsonl", lines({"messages": "hi"}), "line 1", "field 'messages'"),
    ingest("content-int.jsonl", lines(msgs(assistant=5)), "field 'messages[1].content'", "expected a string"),
    ingest("role-unknown.jsonl", lines({"messages": [{"role": "robot", "content": "x"}]}), "messages[0].role"),
    ingest("role-missing.jsonl", lines({"messages": [{"content": "x"}]}), "field 'messages[0].role'", "missing"),
    ingest("turn-not-object.jsonl", lines({"messages": ["hi", "there"]}), "field 'messages[0]'"),
    ingest("shape-unknown.jsonl", lines({"text": "x"}), "line 1", "unknown record shape"),
    ingest("turns-empty.jsonl", lines({"messages": []}), "field 'messages'"),
    ingest("assistant-empty.jsonl", lines(msgs(assistant="  ")), "field 'messages[1]'", "empty assistant turn"),
    ingest("no-assistant.jsonl", lines({"messages": [{"role": "user", "content": "q"}]}), "field 'messages'"),
    ingest("no-user.jsonl", lines({"messages": [{"role": "assistant", "content": "a"}]}), "no user turn"),
    ingest("surrogate-content.jsonl", lines(GOOD, j(msgs()).replace('"a"', f'"{SURROGATE}"')),
           "line 2", "field 'messages[1].content'", "surrogate"),
    ingest("surrogate-role.jsonl", lines(j(msgs()).replace('"user"', '"\\udfff"')), "messages[0].role", "surrogate"),
    ingest("surrogate-id.jsonl", lines(j(msgs(id="x")).replace('"x"', '"\\ud801"')), "field 'id'", "surrogate"),
    ingest("surrogate-dataset.jsonl", lines(j(msgs(dataset="x")).replace('"x"', '"\\udc00"')), "field 'dataset'"),
    ingest("surrogate-sharegpt.json", ('[{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", '
                                       f'"value": "{SURROGATE}"}}]}}]').encode(), "conversations[1].value",
           "surrogate"),
    ingest("deep.jsonl", lines(GOOD, '{"messages": ' + "[" * DEEP + "]" * DEEP + "}"), "line 2", "nested too deeply"),
    ingest("deep-array.json", ("[\n" + j(GOOD) + ",\n" + "[" * DEEP + "]" * DEEP + "]").encode(), "line 3",
           "nested too deeply"),
    ingest("deep-object.jsonl", lines('{"a":' * DEEP + "1" + "}" * DEEP), "line 1", "nested too deeply"),
    ingest("deep-skip-only.jsonl", lines('{"messages": ' + "[" * DEEP + "]" * DEEP + "}"), "no valid record",
           extra=("--skip-invalid",)),
    ingest("huge-int.jsonl", lines(GOOD, '{"id": 1' + "0" * 5000 + ', "prompt": "q", "completion": "a"}'), "line 2",
           "4300 digits"),
    ingest("huge-int-array.json", ('[{"id": 1' + "0" * 5000 + ', "prompt": "q", "completion": "a"}]').encode(),
           "line 1", "4300 digits"),
    ingest("utf16-bom.jsonl", lines(GOOD).decode().encode("utf-16"), "line 1", "invalid UTF-8"),
    ingest("bom-mid-file.jsonl", lines(GOOD, "\ufeff" + j(GOOD)), "line 2", "invalid JSON"),
    ingest("binary.jsonl", bytes(range(255, -1, -1)) * 8, "line 1", "invalid UTF-8"),
    ingest("png.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), "invalid UTF-8"),
    ingest("bad-utf8-line3.jsonl", lines(GOOD, msgs("x")) + b'{"messages": "\xff\xfe"}\n', "line 3", "UTF-8"),
    ingest("empty.jsonl", b"", "file is empty"),
    ingest("blank.jsonl", b"\n \n\t\n", "only whitespace"),
    ingest("huge-line.jsonl", b'{"messages": "' + b"x" * 4_000_000 + b"\n", "line 1", "invalid JSON"),
    ingest("record-list.jsonl", lines([1, 2]), "line 1", "expected a JSON object"),
    ingest("record-null.jsonl", lines("null"), "line 1", "expected a JSON object"),
    ingest("record-number.jsonl", lines("42"), "line 1", "expected a JSON object"),
    ingest("sharegpt-speaker.jsonl", lines({"conversations": [{"from": "alien", "value": "x"}]}),
           "conversations[0].from", "unknown speaker"),
    ingest("sharegpt-not-list.jsonl", lines({"conversations": {"from": "human"}}), "field 'conversations'"),
    ingest("pc-empty.jsonl", lines({"prompt": "q", "completion": "   "}), "field 'completion'"),
    ingest("alpaca-int.jsonl", lines({"instruction": 3, "output": "x"}), "field 'instruction'"),
    ingest("id-object.jsonl", lines(msgs(id={"a": 1})), "field 'id'"),
    ingest("id-bool.jsonl", lines(msgs(id=True)), "field 'id'"),
    ingest("dataset-list.jsonl", lines(msgs(dataset=[1])), "field 'dataset'"),
    ingest("nan.jsonl", lines('{"prompt": NaN, "completion": "x"}'), "field 'prompt'"),
    ingest("forced-format.jsonl", lines(GOOD), "field 'instruction'", extra=("--format", "alpaca")),
    Case("ingest-second-file-bad", ("ingest", "{d}/good.jsonl", "{d}/broken.jsonl", "--pool", "bad"), 2,
         ("broken.jsonl, line 2",)),
    Case("ingest-missing-file", ("ingest", "{d}/nope.jsonl", "--pool", "bad"), 2, ("nope.jsonl", "not found")),
    Case("ingest-directory", ("ingest", "{d}/adir", "--pool", "bad"), 2, ("adir", "folder holds no data files")),
    Case("ingest-pool-name", ("ingest", "{d}/good.jsonl", "--pool", "a b; DROP"), 1, ("pool name",)),
    Case("ingest-pool-invalid-utf8", ("ingest", "{d}/good.jsonl", "--pool", "p\udcff"), 2,
         ("field '--pool'", "UTF-8")),
    Case("ingest-format-unknown", ("ingest", "{d}/good.jsonl", "--pool", "bad", "--format", "xml"), 2,
         ("--format",)),
    Case("ingest-limit-zero", ("ingest", "{d}/good.jsonl", "--pool", "bad", "--limit", "0"), 1, ("--limit",)),
    # -- task add
    task_add("t-broken.jsonl", lines({"subtask": "a", "prompt": "q", "completion": "a"}, "{"), "line 2",
             "invalid JSON"),
    task_add("t-no-subtask.jsonl", lines({"prompt": "q", "completion": "a"}), "line 1", "field 'subtask'"),
    task_add("t-surrogate-content.jsonl", lines(j(msgs(subtask="a")).replace('"a"}]', f'"{SURROGATE}"}}]')),
             "line 1", "field 'messages[1].content'", "surrogate"),
    task_add("t-surrogate-subtask.jsonl", lines(j(msgs(subtask="s")).replace('"s"', '"\\ud800"')),
             "field 'subtask'", "surrogate"),
    task_add("t-surrogate-prompt.jsonl", lines(j({"subtask": "a", "prompt": "x", "completion": "a"})
                                               .replace('"x"', f'"{SURROGATE}"')), "field 'prompt'", "surrogate"),
    task_add("t-deep.jsonl", lines("[" * DEEP + "]" * DEEP), "line 1", "nested too deeply"),
    task_add("t-huge-int.jsonl", lines('{"subtask": "a", "n": 9' + "9" * 5000 + ', "prompt": "q", "completion": "a"}'),
             "line 1", "4300 digits"),
    task_add("t-array.jsonl", lines([{"subtask": "a", "prompt": "q", "completion": "a"}]), "line 1", "JSON array"),
    task_add("t-empty.jsonl", b"", "empty"),
    task_add("t-prompt-int.jsonl", lines({"subtask": "a", "prompt": 1, "completion": "a"}), "field 'prompt'"),
    task_add("t-no-assistant.jsonl", lines({"subtask": "a", "messages": [{"role": "user", "content": "q"}]}),
             "field 'messages'"),
    task_add("t-bad-utf8.jsonl", b'{"subtask": "\xc3"}\n', "line 1", "UTF-8"),
    task_add("t-binary.jsonl", bytes(range(128, 256)), "line 1", "UTF-8"),
    Case("task-name-invalid", ("task", "add", "bad name!", "--file", "{d}/good-task.jsonl"), 1, ("task name",)),
    Case("task-name-builtin", ("task", "add", "bbh", "--file", "{d}/good-task.jsonl"), 1, ("built-in",)),
    Case("task-file-and-dir", ("task", "add", "x", "--file", "{d}/good-task.jsonl", "--less-eval-dir", "{d}/adir"),
         1, ("exactly one",)),
    Case("task-less-eval-surrogate", ("task", "add", "--less-eval-dir", "{d}/less-sur"), 2,
         ("bbh-three-shot.json", "boolean_expressions", "surrogate"),
         {"less-sur/bbh/bbh-three-shot.json": BBH_SURROGATE}),
    Case("task-less-eval-deep", ("task", "add", "--less-eval-dir", "{d}/less-deep"), 2,
         ("bbh-three-shot.json", "nested too deeply"),
         {"less-deep/bbh/bbh-three-shot.json": ("[" * DEEP + "]" * DEEP).encode()}),
    Case("task-less-eval-not-dir", ("task", "add", "--less-eval-dir", "{d}/good-task.jsonl"), 2,
         ("good-task.jsonl", "not a directory")),
    # -- select --where: injection attempts, unknown columns, statements, comments
    where("escape", "1=1) OR (1=1", "not a valid SQL expression"),
    where("escape-pool", "1=1) OR pool = 'p2' OR (1=1", "not a valid SQL expression"),
    where("escape-double", "TRUE)) OR ((TRUE", "not a valid SQL expression"),
    where("drop", "1=1; DROP TABLE selections", "2 SQL statements"),
    where("second-select", "n_turns = 2; SELECT * FROM candidates", "2 SQL statements"),
    where("line-comment", "pool = 'p1' -- ) OR (1=1", "comment"),
    where("block-comment", "n_turns = 2 /* ) OR (1=1 */", "comment"),
    where("unterminated-comment", "n_turns = 2 /*", "not a valid SQL expression"),
    where("order-by", "n_turns = 2 ORDER BY id", "ORDER BY"),
    where("limit", "TRUE LIMIT 1", "LIMIT"),
    where("union", "TRUE UNION SELECT * FROM candidates", "not a single expression"),
    where("subquery", "id IN (SELECT candidate_id FROM selection_members)", "subquery"),
    where("unknown-column", "no_such_column = 1", "unknown column 'no_such_column'"),
    where("other-table", "selections.k > 0", "unknown column 'selections.k'"),
    where("parameter", "n_turns > ?", "query parameter"),
    where("window", "row_number() OVER () < 2", "window"),
    where("table-function", "(SELECT count(*) FROM read_csv('/etc/passwd')) > 0", "subquery"),
    where("unbalanced", "((n_turns = 2)", "not a valid SQL expression"),
    where("quote", "source_dataset = 'x", "not a valid SQL expression"),
    where("type-error", "pool + 1 > 0", "Binder Error"),
    where("empty", "", "empty"),
    where("invalid-utf8", "n_turns = \udcff", "UTF-8"),
    Case("featurize-where-escape", ("featurize", "--run", "no-such-run", "--where", "1=1) OR (1=1"), 2,
         ("--where", "not a valid SQL expression")),
    Case("select-output-exists", ("select", "--task", "toy", "--pool", "p1", "--method", "random", "--count", "2",
                                  "--output", "{d}/exists.jsonl"), 2, ("exists.jsonl", "--force")),
    # -- sql: the read-only sandbox
    sql("create", "CREATE TABLE x (a INTEGER)"),
    sql("insert", "INSERT INTO pools (name) VALUES ('evil')"),
    sql("update", "UPDATE tasks SET name = 'evil'"),
    sql("delete", "DELETE FROM selections"),
    sql("drop", "DROP TABLE selections"),
    sql("attach", "ATTACH '{d}/other.duckdb' AS other"),
    sql("copy-to", "COPY (SELECT 1) TO '{d}/leak.csv'"),
    sql("copy-from", "COPY pools FROM '{d}/good.jsonl'"),
    sql("read-csv", "SELECT * FROM read_csv('/etc/passwd')"),
    sql("read-text", "SELECT * FROM read_text('/etc/hostname')"),
    sql("file-scan", "SELECT * FROM '{d}/good.jsonl'"),
    sql("install", "INSTALL httpfs"),
    sql("load", "LOAD httpfs"),
    sql("set-access", "SET enable_external_access = true"),
    sql("multi", "SELECT 1; DROP TABLE selections"),
    sql("export-db", "EXPORT DATABASE '{d}/dump'"),
    sql("unknown-table", "SELECT * FROM no_such_table"),
    sql("syntax", "SELEC 1"),
    # -- export paths
    export("dir", "{d}/adir", "adir", "folder"),
    export("trailing-slash", "{d}/newdir/", "newdir", "folder"),
    export("under-file", "{d}/afile.txt/x.jsonl", "afile.txt", "is a file"),
    export("under-file-deep", "{d}/afile.txt/a/b/x.jsonl", "afile.txt", "is a file"),
    export("empty-name", "", "--output", "empty path"),
    export("long-name", "{d}/" + "x" * 300 + ".jsonl", "--output", "file system allows"),
    export("long-path", "{d}/" + "a/" * 3000 + "x.jsonl", "--output", "File name too long"),
    export("exists", "{d}/exists.jsonl", "exists.jsonl", "--force"),
    export("parquet-as-jsonl", "{d}/new.jsonl", "new.jsonl", "means jsonl", extra=("--format", "parquet")),
    export("jsonl-as-parquet", "{d}/new.parquet", "new.parquet", "means parquet", extra=("--format", "jsonl")),
    export("format-unknown", "{d}/new.csv", "--format", extra=("--format", "csv")),
    Case("report-output-dir", ("report", "sel", "--output", "{d}/adir"), 2, ("adir", "folder")),
    Case("report-output-under-file", ("report", "sel", "--output", "{d}/afile.txt/r.html"), 2, ("is a file",)),
    # -- other flags and a damaged workspace
    Case("show-top-negative", ("show", "sel", "--top", "-1"), 2, ("--top",)),
    Case("sql-empty", ("sql", "  "), 1, ("empty query",)),
    Case("sql-limit-negative", ("sql", "SELECT 1", "--limit", "-1"), 2, ("--limit",)),
    Case("workspace-corrupt", ("pools", "-w", "{d}/corrupt"), 1, ("lessdb.duckdb", "not a valid DuckDB"),
         {"corrupt/lessdb.duckdb": bytes(range(256)) * 64, "corrupt/lance/.keep": b""}),
    Case("export-no-selection", ("export", "no-such-selection", "--output", "{d}/n.jsonl"), 1,
         ("no-such-selection",)),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One workspace with two pools, a custom task and a random selection `sel`; a scratch folder {d}."""
    root = tmp_path_factory.mktemp("bad-input")
    d = root / "in"
    d.mkdir()
    ws = Workspace.init(root / "ws")
    for pool in ("p1", "p2"):
        write_jsonl(d / f"{pool}.jsonl", [msgs(f"{pool} question {i}", f"answer {i}") for i in range(8)])
        ingest_files(ws, [d / f"{pool}.jsonl"], pool=pool, progress=False)
    write_jsonl(d / "good.jsonl", [msgs("good", "fine")])
    write_jsonl(d / "good-task.jsonl", [{"subtask": "a", "prompt": "q", "completion": "a"}])
    add_tasks(ws, name="toy", file=d / "good-task.jsonl")
    select(ws, SelectConfig(task="toy", pool="p1", method="random", count=3, name="sel", progress=False))
    (d / "adir").mkdir()
    (d / "afile.txt").write_text("a regular file\n")
    (d / "exists.jsonl").write_text("keep me\n")
    for case in CASES:
        for name, content in case.files.items():
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_bytes(content)
    return {"ws": ws, "root": ws.root, "d": d}


def lessdb(env, *args) -> tuple[int, str, str]:
    """The console script's `main` in-process: (exit code, stdout, stderr)."""
    argv = ["--workspace", str(env["root"]), *(a.replace("{d}", str(env["d"])) for a in args)]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def snapshot(env) -> dict:
    """What a refused command must not change: LanceDB versions, DuckDB row counts, the scratch files."""
    ws = Workspace(env["root"])
    lance = {t: ws.lance.version(t) for t in ws.lance.table_names()}
    with ws.duck.connect(read_only=True) as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                            "WHERE table_type = 'BASE TABLE' ORDER BY 1").fetchall()]
        counts = con.execute(" UNION ALL ".join(f"SELECT '{t}', count(*) FROM \"{t}\"" for t in tables)).fetchall()
    files = {str(p.relative_to(env["d"])): (p.stat().st_size, p.stat().st_mtime_ns) for p in env["d"].rglob("*")}
    exports = sorted(p.name for p in (env["root"] / "exports").iterdir())
    return {"lance": lance, "duck": dict(counts), "files": files, "exports": exports}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_is_refused_cleanly(env, case, monkeypatch):
    monkeypatch.delenv("LESSDB_DEBUG", raising=False)
    monkeypatch.setenv("LESSDB_PROGRESS", "0")
    TALLY["tried"] += 1
    before = snapshot(env)
    code, out, err = lessdb(env, *case.args)
    suite_tally.add("hostile inputs tried")
    suite_tally.add(f"hostile inputs: exit {code}")
    assert "Traceback" not in err and "Traceback" not in out
    assert code == case.code and code not in (0, EXIT_INTERNAL), f"exit {code}: {err}"
    for text in case.expect:
        assert text.replace("{d}", str(env["d"])) in err, f"{text!r} not in: {err}"
    assert snapshot(env) == before, "a refused command changed the workspace or the scratch folder"
    TALLY["refused_cleanly"] += 1
    suite_tally.add("hostile inputs refused cleanly")


def test_case_count_and_tally(capsys):
    """Runs after the table (pytest keeps file order): at least 60 inputs, each refused cleanly."""
    assert len(CASES) >= 60 and len({c.name for c in CASES}) == len(CASES)
    with capsys.disabled():
        print(f"\nbad input: {TALLY['tried']} inputs tried, {TALLY['refused_cleanly']} refused cleanly "
              f"(of {len(CASES)} cases)")
    if TALLY["tried"]:
        assert TALLY["refused_cleanly"] == TALLY["tried"]


# -- what bad input may still do: skip and record (--skip-invalid), overwrite on request (--force) -------------
def test_skip_invalid_records_surrogate_and_deep_lines(env, monkeypatch):
    monkeypatch.setenv("LESSDB_PROGRESS", "0")
    d = env["d"]
    path = d / "mixed.jsonl"
    path.write_bytes(lines(msgs("fine one"), j(msgs("two")).replace('"a"', f'"{SURROGATE}"'),
                           '{"messages": ' + "[" * DEEP + "]" * DEEP + "}",
                           j(msgs("emoji")).replace('"a"', '"\\ud83d\\ude00 a valid pair"')))
    code, out, err = lessdb(env, "ingest", str(path), "--pool", "mixed", "--skip-invalid", "--json")
    assert code == 0 and "Traceback" not in err, err
    report = json.loads(out)
    assert report["n_added"] == 2 and report["n_invalid"] == 2
    code, out, _ = lessdb(env, "sql", "SELECT line, field, reason FROM ingest_skipped WHERE file LIKE '%mixed.jsonl' "
                                      "ORDER BY line", "--json")
    skipped = json.loads(out)
    assert [(r["line"], r["field"]) for r in skipped] == [(2, "messages[1].content"), (3, None)]
    assert "surrogate" in skipped[0]["reason"] and "nested too deeply" in skipped[1]["reason"]
    code, out, _ = lessdb(env, "sql", "SELECT messages[2].content AS c FROM candidates WHERE pool = 'mixed' "
                                      "ORDER BY c", "--json")
    assert [r["c"] for r in json.loads(out)] == ["a", "\U0001F600 a valid pair"]

    # a JSON array (ShareGPT's shape): an undecodable record is stepped over, the records after it still read
    array = d / "mixed.json"
    array.write_text("[\n" + j(msgs("array one")) + ",\n" + '{"messages": ' + "[" * DEEP + "]" * DEEP + "},\n"
                     + '{"id": 1' + "0" * 5000 + ', "prompt": "q", "completion": "a"},\n' + j(msgs("array two"))
                     + "\n]\n")
    code, out, err = lessdb(env, "ingest", str(array), "--pool", "mixed-array", "--skip-invalid", "--json")
    assert code == 0 and "Traceback" not in err, err
    report = json.loads(out)
    assert report["n_added"] == 2 and report["n_invalid"] == 2
    assert [(r["line"], r["reason"][:24]) for r in report["skipped"]] == [
        (3, "JSON nested too deeply t"), (4, "a JSON value Python cann")]


def test_export_force_suffix_rule_and_atomic_write(env, monkeypatch):
    d = env["d"] / "exports-ok"
    d.mkdir()
    target = d / "sel.parquet"
    code, out, err = lessdb(env, "export", "sel", "--output", str(target), "--json")   # suffix decides: parquet
    assert code == 0, err
    info = json.loads(out)
    import pyarrow.parquet as pq
    assert info["format"] == "parquet" and pq.read_table(target).num_rows == 3
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)      # not mkstemp's private mode
    code, _, err = lessdb(env, "export", "sel", "--output", str(target))
    assert code == 2 and "--force" in err
    other = d / "plain.out"                                       # an unknown suffix: --format, else jsonl
    assert lessdb(env, "export", "sel", "--output", str(other))[0] == 0
    assert len(other.read_text().splitlines()) == 3
    code, out, err = lessdb(env, "export", "sel", "--output", str(target), "--format", "parquet", "--force",
                            "--json")
    assert code == 0 and json.loads(out)["sha256"] == info["sha256"], err
    # the default path in the workspace is lessdb's own: exporting again rewrites it without --force
    assert lessdb(env, "export", "sel")[0] == 0 and lessdb(env, "export", "sel")[0] == 0
    assert sorted(p.name for p in d.iterdir()) == ["plain.out", "sel.parquet"]   # no temp file left

    # a failure while writing leaves nothing at the destination and no temp file
    from lessdb.selection import export as export_mod

    def broken(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(export_mod.pq, "write_table", broken)
    code, _, err = lessdb(env, "export", "sel", "--output", str(d / "full.parquet"))
    assert code == 2 and "No space left on device" in err and "full.parquet" in err
    assert sorted(p.name for p in d.iterdir()) == ["plain.out", "sel.parquet"]


def test_unexpected_error_is_short_unless_debug(env, monkeypatch):
    """A bug (any exception lessdb did not expect) exits 70 with one line and a hint; LESSDB_DEBUG=1 shows the
    traceback."""
    from lessdb.tasks import catalog as tasks

    def bug(*a, **k):
        raise KeyError("oops")
    monkeypatch.setattr(tasks, "list_tasks", bug)
    monkeypatch.delenv("LESSDB_DEBUG", raising=False)
    code, _, err = lessdb(env, "tasks")
    assert code == EXIT_INTERNAL and "Traceback" not in err
    assert "Internal error: KeyError" in err and "LESSDB_DEBUG=1" in err
    monkeypatch.setenv("LESSDB_DEBUG", "1")
    code, _, err = lessdb(env, "tasks")
    assert code == EXIT_INTERNAL and "Traceback" in err and "KeyError" in err


@pytest.mark.parametrize("args, expect", [
    (("ingest", "{d}/surrogate-content.jsonl", "--pool", "bad"), "field 'messages[1].content'"),
    (("select", "--task", "toy", "--pool", "p1", "--method", "random", "--where", "1=1) OR (1=1"), "--where"),
])
def test_console_script_in_a_subprocess(env, args, expect):
    """The same refusals through the installed entry point in a real process (stderr as a user sees it)."""
    proc = run_cli(*(a.replace("{d}", str(env["d"])) for a in args), workspace=env["root"], check=False,
                   env={"LESSDB_DEBUG": ""})
    assert proc.returncode == 2 and expect in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
