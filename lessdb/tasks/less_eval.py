"""Tasks from a LESS `data/eval` folder (`lessdb task add --less-eval-dir DIR`): the validation sets LESS builds
from it, read into lessdb task specs (bbh-less, mmlu-less, tydiqa) with LESS's prompt formats (`less_formats.py`).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..jsontext import unicode_problem
from .. import jsontext
from .less_formats import (TYDIQA_TEMPLATES, less_bbh_examples, less_mmlu_example, less_tydiqa_example,
                           split_less_bbh_prompt)

ORIGIN_LESS_EVAL = "less-eval-dir"
# Names `add_tasks(less_eval_dir=...)` gives the tasks it finds in a LESS data/eval folder.
LESS_EVAL_TASK_NAMES = {"bbh": "bbh-less", "mmlu": "mmlu-less", "tydiqa": "tydiqa"}
MMLU_DEV_SHOTS = 5  # LESS takes the first 5 rows of each dev CSV


@dataclass(frozen=True)
class TaskSpec:
    """A task before it is registered: its name, subtasks (name -> examples' messages) and where it came from."""
    name: str
    subtasks: dict[str, list[list[dict]]]
    origin: str
    source: str | None
    description: str | None


def load_less_eval_dir(directory: Path | str) -> list[TaskSpec]:
    """The validation sets LESS builds from its `data/eval` layout, as lessdb tasks: bbh/bbh-three-shot.json ->
    bbh-less, mmlu/dev/*_dev.csv -> mmlu-less, tydiqa/tydiqa-one-shot.json -> tydiqa (whichever exist)."""
    root = Path(directory)
    if not root.is_dir():
        raise InputError("not a directory", file=str(root))
    specs = []
    bbh = root / "bbh" / "bbh-three-shot.json"
    if bbh.exists():
        specs.append(TaskSpec(LESS_EVAL_TASK_NAMES["bbh"], _less_bbh_file(bbh), ORIGIN_LESS_EVAL, str(bbh.resolve()),
                               "BBH 3-shot CoT validation examples from a LESS data/eval folder"))
    mmlu_dev = root / "mmlu" / "dev"
    if mmlu_dev.is_dir():
        specs.append(TaskSpec(LESS_EVAL_TASK_NAMES["mmlu"], _less_mmlu_dir(mmlu_dev), ORIGIN_LESS_EVAL,
                               str(mmlu_dev.resolve()),
                               "MMLU dev (5 per subject, zero-shot) from a LESS data/eval folder"))
    tydiqa = root / "tydiqa" / "tydiqa-one-shot.json"
    if tydiqa.exists():
        specs.append(TaskSpec(LESS_EVAL_TASK_NAMES["tydiqa"], _less_tydiqa_file(tydiqa), ORIGIN_LESS_EVAL,
                               str(tydiqa.resolve()), "TyDiQA one-shot (gold passage) per language, from LESS"))
    if not specs:
        raise InputError("no LESS eval data found: expected bbh/bbh-three-shot.json, mmlu/dev/*_dev.csv or "
                         "tydiqa/tydiqa-one-shot.json under it", file=str(root))
    for spec in specs:
        _check_unicode(spec)
    return specs


def _check_unicode(spec: TaskSpec) -> None:
    """Text that cannot be stored as UTF-8 (a lone surrogate from a JSON escape), named by subtask and turn."""
    for subtask, examples in spec.subtasks.items():
        if unicode_problem(subtask):
            raise InputError(unicode_problem(subtask), file=spec.source, field=f"subtask {subtask!r}")
        for i, messages in enumerate(examples):
            for j, m in enumerate(messages):
                if unicode_problem(m["content"]):
                    raise InputError(unicode_problem(m["content"]), file=spec.source,
                                     field=f"{subtask}[{i}].messages[{j}].content")


def _read_json(path: Path):
    try:
        return jsontext.loads(path.read_bytes().decode("utf-8"))
    except jsontext.JSONLimitError as exc:
        raise InputError(str(exc), file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"invalid UTF-8 at byte {exc.start}", file=str(path)) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON ({exc.msg} at column {exc.colno})", file=str(path), line=exc.lineno) from None


def _less_bbh_file(path: Path) -> dict[str, list[list[dict]]]:
    data = _read_json(path)
    if not isinstance(data, dict) or not data:
        raise InputError("expected a JSON object {subtask: three-shot prompt}", file=str(path))
    out = {}
    for subtask, text in data.items():
        if not isinstance(text, str):
            raise InputError("must be a string (the subtask's 3-shot CoT prompt)", file=str(path), field=subtask)
        task_prompt, exemplars = split_less_bbh_prompt(text)
        try:
            out[subtask] = less_bbh_examples(task_prompt, exemplars)
        except ValueError as exc:
            raise InputError(str(exc), file=str(path), field=subtask) from None
    return out


def _less_mmlu_dir(dev_dir: Path) -> dict[str, list[list[dict]]]:
    files = sorted(dev_dir.glob("*_dev.csv"))
    if not files:
        raise InputError("no *_dev.csv files", file=str(dev_dir))
    out = {}
    for f in files:
        subject = f.name[: -len("_dev.csv")]
        examples = []
        try:
            with open(f, newline="", encoding="utf-8") as fh:
                reader = csv.reader(fh)
                for row in reader:
                    if len(examples) == MMLU_DEV_SHOTS:
                        break
                    if len(row) != 6:
                        raise InputError(f"expected 6 columns (question, 4 options, answer), got {len(row)}",
                                         file=str(f), line=reader.line_num)
                    if row[5] not in ("A", "B", "C", "D"):
                        raise InputError(f"answer must be A, B, C or D, got {row[5]!r}", file=str(f),
                                         line=reader.line_num, field="answer")
                    examples.append(less_mmlu_example(subject, row[0], row[1:5], row[5]))
        except UnicodeDecodeError as exc:
            raise InputError(f"invalid UTF-8 at byte {exc.start}", file=str(f)) from None
        if not examples:
            raise InputError("no rows", file=str(f))
        out[subject] = examples
    return out


def _less_tydiqa_file(path: Path) -> dict[str, list[list[dict]]]:
    data = _read_json(path)
    if not isinstance(data, dict) or not data:
        raise InputError("expected a JSON object {language: [example, ...]}", file=str(path))
    out = {}
    for lang, examples in data.items():
        if lang not in TYDIQA_TEMPLATES:
            raise InputError(f"unknown language (LESS has templates for {', '.join(TYDIQA_TEMPLATES)})",
                             file=str(path), field=lang)
        try:  # LESS uses the first example of each language
            ex = examples[0]
            out[lang] = [less_tydiqa_example(lang, ex["context"], ex["question"], ex["answers"][0]["text"])]
        except (TypeError, KeyError, IndexError):
            raise InputError("expected [{\"context\", \"question\", \"answers\": [{\"text\"}]}]", file=str(path),
                             field=lang) from None
    return out
