"""A benchmark's test items as `lessdb eval` scores them: `EvalItem`, `TestSet` (items with the demonstrations
that shape their prompts, and their hash), the fixed subset `--limit` takes, and what every reader shares (JSON
with a clear error, the folder hints an error names). The readers are bbh.py, mmlu.py, tydiqa.py and shipped.py;
sources.py picks one."""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import jsontext
from ..choices import DEFAULT_SAMPLE_SEED
from ..errors import InputError
from ..settings import SettingError, ref
from .config import EvalConfig


@dataclass(frozen=True)
class EvalItem:
    item_id: str                   # "<subtask>/<position in the source file>"
    subtask: str
    fields: dict[str, Any]         # task-specific inputs (input | question+options | context+question)
    answers: tuple[str, ...]       # gold answer(s): BBH target, MMLU letter, TyDiQA spans

    def canonical(self) -> dict:
        return {"id": self.item_id, "subtask": self.subtask, "fields": self.fields, "answers": list(self.answers)}


@dataclass
class TestSet:
    __test__ = False  # not a pytest class, despite the name
    task: str
    split: str
    source: str
    items: list[EvalItem]
    shots: dict[str, Any] = field(default_factory=dict)   # per subtask: what the prompt puts before the item
    limit: int | None = None
    sample_seed: int = DEFAULT_SAMPLE_SEED
    n_available: int = 0                                  # items before --limit

    @property
    def items_sha256(self) -> str:
        return items_hash(self.items, self.shots)

    @property
    def subtasks(self) -> list[str]:
        return sorted({it.subtask for it in self.items})


def items_hash(items: list[EvalItem], shots: dict[str, Any]) -> str:
    payload = json.dumps({"items": [it.canonical() for it in items], "shots": shots},
                         sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def take_subset(items: list[EvalItem], limit: int | None, seed: int) -> list[EvalItem]:
    """At most `limit` items per subtask: a seeded sample per subtask (independent of the order in which
    subtasks are read), returned in source order."""
    if limit is None:
        return list(items)
    if limit < 1:
        raise SettingError(EvalConfig, [("limit", f"must be at least 1, got {limit}")])
    by_subtask: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_subtask.setdefault(it.subtask, []).append(i)
    keep: set[int] = set()
    for subtask, idx in by_subtask.items():
        if len(idx) <= limit:
            keep.update(idx)
        else:
            # str seeds hash with sha512 inside `random`, stable across processes and PYTHONHASHSEED
            keep.update(random.Random(f"{seed}:{subtask}").sample(idx, limit))
    return [it for i, it in enumerate(items) if i in keep]


_DATA_DIR = ref("data_dir")   # shown as --data-dir by the CLI


DATA_DIR_HINTS = {
    "bbh": f"pass {_DATA_DIR} DIR, a LESS data/eval folder holding bbh/test/<subtask>.json and "
           f"bbh/cot-prompts/<subtask>.txt, or leave {_DATA_DIR} out for the items shipped with lessdb",
    "mmlu": f"pass {_DATA_DIR} DIR holding mmlu/test/<subject>_test.csv and mmlu/dev/<subject>_dev.csv "
            f"(LESS's data/eval layout), or leave {_DATA_DIR} out for the items shipped with lessdb",
    "tydiqa": f"pass {_DATA_DIR} DIR holding tydiqa-goldp-v1.1-dev.json (SQuAD format) and, for the one-shot "
              "demonstrations, tydiqa-one-shot.json or tydiqa-goldp-v1.1-train.json (or a path to the dev file)",
}


def require_dir(data_dir: Path | None, task: str) -> Path:
    if data_dir is None:
        raise SettingError(EvalConfig, f"{task} test items are not installed with lessdb: {DATA_DIR_HINTS[task]}")
    if not data_dir.exists():
        raise SettingError(EvalConfig, f"{data_dir}: no such file or directory; {DATA_DIR_HINTS[task]}")
    return data_dir


def first_dir(candidates: list[Path], pattern: str) -> Path | None:
    for d in candidates:
        if d.is_dir() and any(d.glob(pattern)):
            return d
    return None


def read_json(path: Path):
    try:
        return jsontext.loads(path.read_bytes().decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg})", file=str(path), line=exc.lineno) from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"invalid UTF-8 at byte {exc.start}", file=str(path)) from None
    except jsontext.JSONLimitError as exc:
        raise InputError(str(exc), file=str(path)) from None
