"""The held-out items a validation scores: the target's test items, never the validation examples the selection
scored against. BBH and MMLU: the shipped test items (a seeded sample per subtask; the few whose question repeats
a validation example are dropped and counted). A custom task: `--test-file`, where any overlap is refused."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..evaluate import heldout as H
from .config import refuse

SHIPPED = ("bbh", "mmlu")


@dataclass
class HeldoutSet:
    task: str
    items: list                 # [HeldoutItem]
    source: str                 # "lessdb:bbh (4 per subtask, seed 42)" or the test file
    items_hash: str             # what the evals are cached under: prompt format + every item
    dropped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"task": self.task, "source": self.source, "items_hash": self.items_hash, "n_items": len(self.items),
                "n_choice_items": sum(it.choices is not None for it in self.items), "dropped": self.dropped,
                "prompt_format": H.PROMPT_FORMAT["name"]}


def items_hash(items) -> str:
    h = hashlib.sha256(H.PROMPT_FORMAT["name"].encode())
    for it in items:
        h.update(json.dumps([it.item_id, it.user, it.answer, list(it.choices or ())]).encode())
    return h.hexdigest()[:16]


def validation_texts(task) -> list[str]:
    """The user turns of a task's validation examples (what the selection scored against)."""
    return [m["content"] for exs in task.subtasks.values() for ex in exs for m in ex.messages if m["role"] == "user"]


def shipped_heldout(task, per_subtask: int | None, seed: int) -> HeldoutSet:
    from ..evaluate.sources import load_test_set

    whole = load_test_set(task.name)
    sample = load_test_set(task.name, limit=per_subtask, seed=seed) if per_subtask else whole
    items = H.heldout_items(sample, whole.items)
    dropped = set(H.validation_overlap(items, validation_texts(task)))
    kept = [it for it in items if it.item_id not in dropped]
    how = f"{per_subtask} per subtask, seed {seed}" if per_subtask else "all"
    return HeldoutSet(task.name, kept, f"lessdb:{task.name} test items ({how})", items_hash(kept), sorted(dropped))


def read_test_file(path: Path) -> list:
    """Held-out items from JSONL: {"id", "prompt", "answer", "choices"?}; errors name the file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise refuse("test_file", f"{path}: no such file")
    items, seen = [], set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected an object with id, prompt, answer")
        for key in ("id", "prompt", "answer"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise InputError(f"{where}: field {key!r} must be a non-empty string")
        if row["id"] in seen:
            raise InputError(f"{where}: field 'id' {row['id']!r} repeats an earlier item")
        seen.add(row["id"])
        choices = row.get("choices")
        if choices is not None:
            if (not isinstance(choices, list) or len(choices) < 2
                    or not all(isinstance(c, str) and c for c in choices) or len(set(choices)) != len(choices)):
                raise InputError(f"{where}: field 'choices' must be a list of at least 2 distinct non-empty strings")
            if row["answer"] not in choices:
                raise InputError(f"{where}: field 'answer' {row['answer']!r} is not one of its choices")
        items.append(H.HeldoutItem(row["id"], str(row.get("subtask") or "test"), row["prompt"], row["answer"],
                                   tuple(choices) if choices else None, row["prompt"]))
    if not items:
        raise refuse("test_file", f"{path}: has no test items")
    return items


def file_heldout(task, path: Path) -> HeldoutSet:
    items = read_test_file(path)
    overlap = H.validation_overlap(items, validation_texts(task))
    if overlap:
        raise refuse("test_file", f"{path}: {len(overlap)} of its {len(items)} test items repeat a validation example "
                                  f"of task {task.name!r} (e.g. {overlap[0]!r}); held-out items must be new to the "
                                  "selection")
    return HeldoutSet(task.name, items, str(path), items_hash(items))


def heldout_for(task, test_file: Path | None, per_subtask: int | None, seed: int) -> HeldoutSet:
    if test_file is not None:
        return file_heldout(task, test_file)
    if task.name in SHIPPED:
        return shipped_heldout(task, per_subtask, seed)
    raise refuse("test_file", f"task {task.name!r} is a custom task: give its held-out test items with "
                              "--test-file (BBH and MMLU test items ship with lessdb)")
