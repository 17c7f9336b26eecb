"""Target tasks: built-ins equal LESS's reference validation sets, user task files, LESS folders, storage, CLI."""
from __future__ import annotations

import csv
import hashlib
import json
from importlib import resources

import pytest

from lessdb.tasks import catalog as tasks
from lessdb.cli.main import main as cli_main
from lessdb.conversation import content_hash
from lessdb.errors import InputError, LessdbError
from lessdb.storage import meta_tasks

from conftest import LESS_EVAL, needs_less_eval, run_cli, write_jsonl


# -- an independent re-implementation of LESS's get_validation_dataset.py (Tulu branch), as strings -----------
def less_reference_bbh() -> dict[str, list[tuple[str, str]]]:
    """subtask -> [(query between '<|user|>\\n' and '\\n<|assistant|>\\n', completion)] as LESS builds them."""
    data = json.loads((LESS_EVAL / "bbh" / "bbh-three-shot.json").read_text(encoding="utf-8"))
    out = {}
    for task, few_shot in data.items():
        stuff = few_shot.split("\n\n")
        exes, task_prompt = stuff[-3:], "\n\n".join(stuff[:-3])
        items = []
        for i, target in enumerate(exes):
            icl = ""
            for ex in exes[:i] + exes[i + 1:]:
                q, a = ex.split("\nA:")
                icl += q + "\nA:" + a + "\n\n"
            question, answer = target.split("\nA:")
            items.append((task_prompt.strip() + "\n\n" + icl + question, answer))
        out[task] = items
    return out


def less_reference_mmlu() -> dict[str, list[tuple[str, str]]]:
    out = {}
    for path in sorted((LESS_EVAL / "mmlu" / "dev").glob("*_dev.csv")):
        subject = path.name[:-len("_dev.csv")]
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))[:5]
        items = []
        for row in rows:
            prompt = "The following are multiple choice questions (with answers) about {}.\n\n".format(
                "".join(" " + w for w in subject.split("_")))
            prompt += row[0] + "".join(f"\n{c}. {o}" for c, o in zip("ABCD", row[1:5])) + "\nAnswer:"
            items.append((prompt, " " + row[5]))
        out[subject] = items
    return out


def as_pairs(task: tasks.Task) -> dict[str, list[tuple[str, str]]]:
    return {s: [(ex.messages[0]["content"], ex.messages[1]["content"]) for ex in exs]
            for s, exs in task.subtasks.items()}


# -- built-in bbh ---------------------------------------------------------------------------------------------
@needs_less_eval
def test_builtin_bbh_equals_less_reference_except_sports_whitespace():
    builtin = as_pairs(tasks.builtin_task("bbh"))
    reference = less_reference_bbh()
    assert sorted(builtin) == sorted(reference) and len(builtin) == 27
    assert all(len(v) == 3 for v in builtin.values())
    # LESS's prompt ends in "\n<|assistant|>\nA:" and its completion is " " + reasoning: lessdb's user turn ends
    # with the cue "A:" on its own line and the assistant turn is the completion itself.
    expected = {s: [(q + "\nA:", a.strip()) for q, a in items] for s, items in reference.items()}
    differing = sorted(s for s in builtin if builtin[s] != expected[s])
    assert differing == ["sports_understanding"]
    # ... and there only by lm-eval's newline where LESS's file has a space after "step by step."
    newline, space = "Let's think step by step.\n", "Let's think step by step. "
    for (user, completion), (ref_user, ref_completion) in zip(builtin["sports_understanding"],
                                                              expected["sports_understanding"]):
        assert user.count(newline) == 2 and completion.count(newline) == 1  # two demonstrations + the answer
        assert space not in user and space not in completion
        assert user.replace(newline, space) == ref_user
        assert completion.replace(newline, space) == ref_completion


def test_builtin_bbh_shape_and_format():
    bbh = tasks.builtin_task("bbh")
    assert bbh.n_subtasks == 27 and bbh.n_examples == 81
    assert {"logical_deduction_three_objects", "logical_deduction_five_objects", "logical_deduction_seven_objects",
            "tracking_shuffled_objects_three_objects", "tracking_shuffled_objects_five_objects",
            "tracking_shuffled_objects_seven_objects"} <= set(bbh.subtasks)
    for exs in bbh.subtasks.values():
        questions = []
        for ex in exs:
            user, assistant = ex.messages
            assert (user["role"], assistant["role"]) == ("user", "assistant")
            assert assistant["content"].startswith("Let's think step by step.")
            assert "So the answer is " in assistant["content"]
            assert user["content"].endswith("\nA:")
            question = user["content"].rsplit("\n\nQ: ", 1)[1]
            questions.append(question)
            # exactly the other two exemplars are in the prompt as demonstrations
            assert user["content"].count("\nA: Let's think step by step.") == 2
            assert assistant["content"] not in user["content"]
            assert ex.example_id == content_hash(ex.messages)
        assert len(set(questions)) == 3
        for i, ex in enumerate(exs):  # each exemplar's reasoning appears in the other two prompts
            for j, other in enumerate(exs):
                inside = ex.messages[1]["content"] in other.messages[0]["content"]
                assert inside == (i != j)


# -- built-in mmlu --------------------------------------------------------------------------------------------
@needs_less_eval
def test_builtin_mmlu_equals_less_dev_csvs():
    builtin = as_pairs(tasks.builtin_task("mmlu"))
    reference = less_reference_mmlu()
    assert len(reference) == 57 and sum(len(v) for v in reference.values()) == 285
    assert list(builtin) == list(reference)  # sorted subjects, as LESS iterates them
    expected = {s: [(p + "\nThe answer is:", a.strip()) for p, a in items] for s, items in reference.items()}
    assert builtin == expected
    assert all(a in "ABCD" and len(a) == 1 for items in builtin.values() for _, a in items)


def test_builtin_data_files_match_manifest():
    manifest = json.loads(resources.files("lessdb.data").joinpath("builtin_tasks.json").read_text())
    assert sorted(manifest) == ["bbh", "mmlu"] == tasks.builtin_task_names()
    for name, info in manifest.items():
        data = resources.files("lessdb.data").joinpath(info["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info["file_sha256"]
        task = tasks.builtin_task(name)
        assert task.task_hash == info["task_hash"]
        assert (task.n_subtasks, task.n_examples) == (info["n_subtasks"], info["n_examples"])


# -- storage: lazy registration, content addressing -----------------------------------------------------------
def test_builtins_register_lazily_and_once(workspace):
    assert meta_tasks.task_pointers(workspace) == {}
    bbh = tasks.load_task(workspace, "bbh")
    assert set(meta_tasks.task_pointers(workspace)) == {"bbh"}  # only what was used
    assert bbh.task_hash == tasks.builtin_task("bbh").task_hash
    assert bbh.subtasks == tasks.builtin_task("bbh").subtasks
    listed = {r["name"]: r for r in tasks.list_tasks(workspace)}
    assert set(listed) == {"bbh", "mmlu"}
    assert listed["mmlu"]["n_subtasks"] == 57 and listed["mmlu"]["n_examples"] == 285
    assert listed["bbh"]["subtasks"]["sports_understanding"] == 3 and len(listed["bbh"]["subtasks"]) == 27
    assert list(listed["bbh"]["subtasks"]) == list(bbh.subtasks)  # task order survives storage
    tasks.list_tasks(workspace)
    tasks.load_task(workspace, "mmlu")
    assert len(meta_tasks.task_history(workspace, "bbh")) == 1
    with workspace.duck.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM task_versions").fetchone()[0] == 2
        assert con.execute("SELECT count(*) FROM task_examples").fetchone()[0] == 81 + 285


def test_builtin_reregistered_when_shipped_data_changes(workspace):
    # A workspace registered by an older lessdb whose built-in bbh differed: the name moves to the shipped
    # version, and the old version stays loadable by hash.
    old = {"boolean_expressions": [[{"role": "user", "content": "Q: True is\nA:"},
                                    {"role": "assistant", "content": "So the answer is True."}]]}
    old_hash = tasks.task_hash(old)
    rows = [(0, "boolean_expressions", 0, content_hash(old["boolean_expressions"][0]), old["boolean_expressions"][0])]
    meta_tasks.register_task_versions(workspace, [meta_tasks.TaskVersionRows(
        "bbh", old_hash, tasks.ORIGIN_BUILTIN, "older lessdb", None, 1, rows)])
    assert tasks.load_task(workspace, "bbh").task_hash == tasks.builtin_task("bbh").task_hash != old_hash
    assert [h["task_hash"] for h in meta_tasks.task_history(workspace, "bbh")] == [
        old_hash, tasks.builtin_task("bbh").task_hash]
    assert tasks.load_task_version(workspace, old_hash).n_examples == 1


@needs_less_eval
def test_less_eval_dir_loads_bbh_mmlu_tydiqa(workspace):
    added = {a["name"]: a for a in tasks.add_tasks(workspace, less_eval_dir=LESS_EVAL)}
    assert set(added) == {"bbh-less", "mmlu-less", "tydiqa"}
    assert all(a["status"] == "created" for a in added.values())
    # mmlu from the package and from LESS's CSVs are the same content, hence the same stored version
    assert added["mmlu-less"]["task_hash"] == tasks.load_task(workspace, "mmlu").task_hash
    bbh, bbh_less = tasks.load_task(workspace, "bbh"), tasks.load_task(workspace, "bbh-less")
    assert as_pairs(bbh_less) == {s: [(q + "\nA:", a.strip()) for q, a in v] for s, v in less_reference_bbh().items()}
    same = [s for s in bbh.subtasks if bbh.subtasks[s] == bbh_less.subtasks[s]]
    assert len(same) == 26 and "sports_understanding" not in same

    tydiqa = tasks.load_task(workspace, "tydiqa")
    raw = json.loads((LESS_EVAL / "tydiqa" / "tydiqa-one-shot.json").read_text(encoding="utf-8"))
    assert list(tydiqa.subtasks) == list(raw) and tydiqa.n_examples == 9
    english = tydiqa.subtasks["english"][0].messages
    ex = raw["english"][0]
    assert english[0]["content"] == ("Answer the following question based on the information in the given "
                                     "passage.Passage: " + ex["context"] + "\nQuestion: " + ex["question"] +
                                     "\nAnswer:")
    assert english[1] == {"role": "assistant", "content": "Home Box Office"}
    for lang, exs in tydiqa.subtasks.items():
        assert exs[0].messages[1]["content"] == raw[lang][0]["answers"][0]["text"].strip()
        assert raw[lang][0]["context"] in exs[0].messages[0]["content"]

    again = tasks.add_tasks(workspace, less_eval_dir=LESS_EVAL)
    assert [a["status"] for a in again] == ["unchanged"] * 3


def test_less_eval_dir_without_data_is_an_error(workspace, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no LESS eval data"):
        tasks.add_tasks(workspace, less_eval_dir=tmp_path / "empty")


def test_less_eval_dir_bad_csv_writes_nothing(workspace, tmp_path):
    root = tmp_path / "eval"
    (root / "mmlu" / "dev").mkdir(parents=True)
    (root / "tydiqa").mkdir()
    (root / "tydiqa" / "tydiqa-one-shot.json").write_text(json.dumps(
        {"english": [{"context": "Paris is in France.", "question": "Where is Paris?",
                      "answers": [{"text": "France"}]}]}))
    (root / "mmlu" / "dev" / "anatomy_dev.csv").write_text("q1,a,b,c,d,A\nq2,a,b,c,d,E\n")
    with pytest.raises(InputError) as err:
        tasks.add_tasks(workspace, less_eval_dir=root)
    assert (err.value.file, err.value.line, err.value.field) == (str(root / "mmlu" / "dev" / "anatomy_dev.csv"), 2,
                                                                 "answer")
    assert meta_tasks.task_pointers(workspace) == {}  # tydiqa was fine, but nothing is written


# -- user task files ------------------------------------------------------------------------------------------
GOOD = [
    {"subtask": "add", "messages": [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Q: 3+4?\nA:"},
                                    {"role": "assistant", "content": "So the answer is 7."}]},
    {"subtask": "sub", "prompt": "Q: 5-2?\nA:", "completion": "So the answer is 3.", "id": "ignored"},
    {"subtask": "add", "prompt": "Q: 1+1?\nA:", "completion": "So the answer is 2."},
]


def test_add_task_from_file_and_load(workspace, tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", GOOD)
    [added] = tasks.add_tasks(workspace, "arith", file=path, description="toy")
    assert added["status"] == "created" and added["subtasks"] == {"add": 2, "sub": 1}
    task = tasks.load_task(workspace, "arith")
    assert list(task.subtasks) == ["add", "sub"]
    assert task.subtasks["add"][0].messages == GOOD[0]["messages"]
    assert task.subtasks["add"][1].messages == [{"role": "user", "content": "Q: 1+1?\nA:"},
                                                {"role": "assistant", "content": "So the answer is 2."}]
    assert all(ex.example_id == content_hash(ex.messages) for exs in task.subtasks.values() for ex in exs)
    assert (task.origin, task.description, task.source) == ("file", "toy", str(path.resolve()))
    assert task.task_hash == added["task_hash"] == tasks.task_hash(
        {s: [ex.messages for ex in exs] for s, exs in task.subtasks.items()})
    assert [e for e, _ in task.examples()] == [ex.example_id for exs in task.subtasks.values() for ex in exs]

    # same content again: nothing changes; different content needs --replace and keeps the old version
    assert tasks.add_tasks(workspace, "arith", file=path)[0]["status"] == "unchanged"
    path2 = write_jsonl(tmp_path / "t2.jsonl", GOOD[:2])
    with pytest.raises(LessdbError, match="pass replace to point"):
        tasks.add_tasks(workspace, "arith", file=path2)
    assert tasks.load_task(workspace, "arith").task_hash == task.task_hash
    updated = tasks.add_tasks(workspace, "arith", file=path2, replace=True)[0]
    assert updated["status"] == "updated" and updated["task_hash"] != task.task_hash
    assert tasks.load_task(workspace, "arith").n_examples == 2
    old = tasks.load_task_version(workspace, task.task_hash)
    assert old.subtasks == task.subtasks
    assert [h["task_hash"] for h in meta_tasks.task_history(workspace, "arith")] == [task.task_hash,
                                                                                     updated["task_hash"]]


def test_task_hash_depends_on_order_and_content():
    a = {"s": [[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]],
         "t": [[{"role": "user", "content": "u"}, {"role": "assistant", "content": "v"}]]}
    b = dict(reversed(list(a.items())))
    c = {"s": a["s"], "t": [[{"role": "user", "content": "u"}, {"role": "assistant", "content": "v "}]]}
    assert len({tasks.task_hash(a), tasks.task_hash(b), tasks.task_hash(c)}) == 3
    assert tasks.task_hash(a) == tasks.task_hash(json.loads(json.dumps(a)))


def test_user_names_are_checked(workspace, tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", GOOD)
    with pytest.raises(LessdbError, match="built-in"):
        tasks.add_tasks(workspace, "bbh", file=path)
    with pytest.raises(LessdbError, match="invalid task name"):
        tasks.add_tasks(workspace, "no spaces", file=path)
    with pytest.raises(LessdbError, match="exactly one"):
        tasks.add_tasks(workspace, "x")
    with pytest.raises(LessdbError, match="needs a name"):
        tasks.add_tasks(workspace, file=path)
    with pytest.raises(LessdbError, match="no task named"):
        tasks.load_task(workspace, "missing")


OK_LINE = json.dumps(GOOD[1])
BAD_CASES = [
    ("invalid-json", '{"subtask": "a", "prompt": ', 2, None, "invalid JSON"),
    ("json-array", '[{"subtask": "a"}]', 2, None, "not a JSON array"),
    ("not-object", '"just a string"', 2, None, "expected a JSON object"),
    ("no-subtask", {"prompt": "p", "completion": "c"}, 2, "subtask", "missing"),
    ("empty-subtask", {"subtask": " ", "prompt": "p", "completion": "c"}, 2, "subtask", "non-empty"),
    ("subtask-not-string", {"subtask": 3, "prompt": "p", "completion": "c"}, 2, "subtask", "non-empty string"),
    ("no-content-fields", {"subtask": "a"}, 2, "messages", "missing"),
    ("both-forms", {"subtask": "a", "prompt": "p", "completion": "c", "messages": []}, 2, "messages", "not both"),
    ("missing-completion", {"subtask": "a", "prompt": "p"}, 2, "completion", "missing"),
    ("completion-not-string", {"subtask": "a", "prompt": "p", "completion": 5}, 2, "completion", "string"),
    ("empty-completion", {"subtask": "a", "prompt": "p", "completion": "  "}, 2, "completion", "empty"),
    ("messages-not-list", {"subtask": "a", "messages": "hi"}, 2, "messages", "non-empty list"),
    ("unknown-role", {"subtask": "a", "messages": [{"role": "user", "content": "q"},
                                                   {"role": "bot", "content": "a"}]}, 2, "messages[1].role", "bot"),
    ("content-not-string", {"subtask": "a", "messages": [{"role": "user", "content": ["q"]},
                                                         {"role": "assistant", "content": "a"}]},
     2, "messages[0].content", "string"),
    ("empty-assistant", {"subtask": "a", "messages": [{"role": "user", "content": "q"},
                                                      {"role": "assistant", "content": ""}]},
     2, "messages[1].content", "empty assistant"),
    ("no-assistant", {"subtask": "a", "messages": [{"role": "user", "content": "q"}]}, 2, "messages",
     "no assistant"),
    ("no-user", {"subtask": "a", "messages": [{"role": "assistant", "content": "a"}]}, 2, "messages", "no user"),
]


@pytest.mark.parametrize("bad,line,field,reason", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_bad_task_file_names_line_and_field_and_writes_nothing(workspace, tmp_path, bad, line, field, reason):
    path = write_jsonl(tmp_path / "bad.jsonl", [OK_LINE, bad, OK_LINE])
    with pytest.raises(InputError) as err:
        tasks.add_tasks(workspace, "bad", file=path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), line, field)
    assert reason in err.value.reason
    assert meta_tasks.task_pointers(workspace) == {}
    with workspace.duck.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM task_examples").fetchone()[0] == 0


def test_bad_task_file_encoding_empty_missing(workspace, tmp_path):
    bad_utf8 = tmp_path / "latin1.jsonl"
    bad_utf8.write_bytes((OK_LINE + "\n").encode() + b'{"subtask": "caf\xe9", "prompt": "p", "completion": "c"}\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    cases = [(bad_utf8, 2, "invalid UTF-8"), (empty, None, "empty"), (tmp_path / "nope.jsonl", None, "not found"),
             (tmp_path, None, "directory")]
    for path, line, reason in cases:
        with pytest.raises(InputError) as err:
            tasks.add_tasks(workspace, "bad", file=path)
        assert (err.value.file, err.value.line) == (str(path), line) and reason in err.value.reason
    assert meta_tasks.task_pointers(workspace) == {}


def test_repeated_example_is_kept(tmp_path):
    # MMLU's own college_physics dev set repeats a question; LESS averages over both copies, and so do we.
    path = write_jsonl(tmp_path / "dup.jsonl", [GOOD[1], GOOD[1]])
    assert len(tasks.parse_task_file(path)["sub"]) == 2
    physics = tasks.builtin_task("mmlu").subtasks["college_physics"]
    assert len(physics) == 5 and len({ex.example_id for ex in physics}) == 4


# -- CLI --------------------------------------------------------------------------------------------------------
def test_cli_tasks_add_subprocess(workspace, tmp_path):
    ws = workspace.root
    path = write_jsonl(tmp_path / "t.jsonl", GOOD)
    added = json.loads(run_cli("task", "add", "arith", "--file", path, "--json", workspace=ws).stdout)
    assert added[0]["name"] == "arith" and added[0]["status"] == "created"
    listed = json.loads(run_cli("tasks", "--json", workspace=ws).stdout)
    by_name = {r["name"]: r for r in listed}
    assert set(by_name) == {"arith", "bbh", "mmlu"}
    assert by_name["bbh"]["task_hash"] == tasks.builtin_task("bbh").task_hash
    assert by_name["arith"]["subtasks"] == {"add": 2, "sub": 1}

    bad = write_jsonl(tmp_path / "bad.jsonl", [OK_LINE, {"subtask": "a", "prompt": "p"}])
    proc = run_cli("task", "add", "broken", "--file", bad, workspace=ws, check=False)
    assert proc.returncode == 2
    assert f"{bad}, line 2, field 'completion'" in proc.stderr
    assert "broken" not in meta_tasks.task_pointers(workspace)


def _cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        cli_main([str(a) for a in args])
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def test_cli_in_process(workspace, tmp_path, capsys):
    w = ["--workspace", workspace.root]
    code, out, _ = _cli(capsys, "tasks", "--verbose", *w)
    assert code == 0 and "bbh" in out and "mmlu" in out
    assert "  sports_understanding" in out and "abstract_algebra" in out
    code, out, _ = _cli(capsys, "task", "show", "bbh", "--json", *w)
    shown = json.loads(out)
    assert code == 0 and shown["n_examples"] == 81 and len(shown["examples"]) == 81
    assert shown["examples"][0]["messages"] == tasks.builtin_task("bbh").subtasks["boolean_expressions"][0].messages
    assert len(shown["history"]) == 1
    code, out, _ = _cli(capsys, "task", "show", "mmlu", "--full", *w)
    assert code == 0 and "The answer is:\n--- assistant\nB\n" in out
    code, _, err = _cli(capsys, "task", "show", "nope", *w)
    assert code == 1 and "no task named 'nope'" in err
    code, _, err = _cli(capsys, "task", "add", "x", *w)
    assert code == 1 and "exactly one" in err


@needs_less_eval
def test_cli_less_eval_dir(workspace, capsys):
    code, out, _ = _cli(capsys, "task", "add", "--less-eval-dir", LESS_EVAL, "--workspace", workspace.root)
    assert code == 0
    assert "bbh-less: created (27 subtasks, 81 examples" in out
    assert "mmlu-less: created (57 subtasks, 285 examples" in out
    assert "tydiqa: created (9 subtasks, 9 examples" in out
