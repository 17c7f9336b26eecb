"""Input formats and their normalisation to `Conversation`.

Supported shapes (JSON: detected per record; Parquet/Arrow: from the file's columns):
- messages (Tulu / open-instruct): {"dataset", "id", "messages": [{"role", "content"}, ...]}
- sharegpt: {"id", "conversations": [{"from", "value"}, ...]}
- alpaca: {"instruction", "input"?, "output"}
- prompt-completion: {"prompt", "completion"}
"""
from __future__ import annotations

from typing import Callable

from ..conversation import ROLES, Conversation
from ..jsontext import unicode_problem

FORMATS = ("messages", "sharegpt", "alpaca", "prompt-completion")

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant",
                  "bing": "assistant", "bard": "assistant", "assistant": "assistant", "system": "system"}


class RecordError(Exception):
    """A record that cannot be normalised; `field` is a path like messages[2].role."""

    def __init__(self, field: str | None, reason: str):
        self.field, self.reason = field, reason
        super().__init__(reason)


def detect_format(record: object) -> str:
    if not isinstance(record, dict):
        raise RecordError(None, f"expected a JSON object, got {type(record).__name__}")
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "prompt" in record and "completion" in record:
        return "prompt-completion"
    raise RecordError(None, "unknown record shape: expected 'messages', 'conversations', "
                            "'instruction'+'output' or 'prompt'+'completion' fields")


def normalise(record: object, fmt: str, default_dataset: str) -> Conversation:
    if not isinstance(record, dict):
        raise RecordError(None, f"expected a JSON object, got {type(record).__name__}")
    for required in REQUIRED[fmt]:
        if required not in record:
            raise RecordError(required, f"missing (required by the {fmt} format)")
    return _NORMALISERS[fmt](record, default_dataset)


def _text(record: dict, field: str, required: bool = True, path: str | None = None) -> str | None:
    path = path or field
    if field not in record or record[field] is None:
        if required:
            raise RecordError(path, "missing")
        return None
    value = record[field]
    if not isinstance(value, str):
        raise RecordError(path, f"expected a string, got {type(value).__name__}")
    problem = unicode_problem(value)
    if problem:
        raise RecordError(path, problem)
    return value


def _optional_id(record: dict, field: str = "id") -> str | None:
    value = record.get(field)
    if value is None:
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise RecordError(field, f"expected a string or integer id, got {type(value).__name__}")
    problem = unicode_problem(str(value))
    if problem:
        raise RecordError(field, problem)
    return str(value)


def _finish(messages: list[tuple[str, str]], turns_field: str, dataset: str, source_id: str | None) -> Conversation:
    assistant = [i for i, (role, _) in enumerate(messages) if role == "assistant"]
    if not assistant:
        raise RecordError(turns_field, "conversation has no assistant turn (nothing to learn from)")
    for i in assistant:
        if not messages[i][1].strip():
            raise RecordError(f"{turns_field}[{i}]", "empty assistant turn")
    if not any(role == "user" for role, _ in messages):
        raise RecordError(turns_field, "conversation has no user turn")
    return Conversation(tuple(messages), source_dataset=dataset, source_id=source_id)


def _turns(record: dict, field: str, role_key: str, content_key: str, role_of, unknown: str) -> list[tuple[str, str]]:
    """A list of turn objects -> [(role, content)]. `role_of` maps a turn's role value to a lessdb role
    (None: unknown); `unknown` words the error for an unknown one."""
    turns = record[field]
    if turns is None:
        raise RecordError(field, "missing (null)")
    if isinstance(turns, dict) and isinstance(turns.get(role_key), list) and isinstance(turns.get(content_key), list) \
            and len(turns[role_key]) == len(turns[content_key]):
        # datasets' Sequence-of-dict feature stores the turns as one struct of lists: {role: [...], content: [...]}
        turns = [{role_key: r, content_key: c} for r, c in zip(turns[role_key], turns[content_key])]
    if not isinstance(turns, list) or not turns:
        raise RecordError(field, f"expected a non-empty list of {{{role_key}, {content_key}}} objects")
    messages = []
    for i, turn in enumerate(turns):
        where = f"{field}[{i}]"
        if not isinstance(turn, dict):
            raise RecordError(where, f"expected an object, got {type(turn).__name__}")
        given = _text(turn, role_key, path=f"{where}.{role_key}")
        role = role_of(given)
        if role is None:
            raise RecordError(f"{where}.{role_key}", unknown.format(given=given))
        messages.append((role, _text(turn, content_key, path=f"{where}.{content_key}")))
    return messages


def _from_messages(record: dict, default_dataset: str) -> Conversation:
    messages = _turns(record, "messages", "role", "content", lambda r: r if r in ROLES else None,
                      "unknown role {given!r} (expected one of " + ", ".join(ROLES) + ")")
    dataset = _text(record, "dataset", required=False) or default_dataset
    return _finish(messages, "messages", dataset, _optional_id(record))


def _from_sharegpt(record: dict, default_dataset: str) -> Conversation:
    messages = _turns(record, "conversations", "from", "value", lambda r: SHAREGPT_ROLES.get(r.lower()),
                      "unknown speaker {given!r} (expected one of " + ", ".join(sorted(SHAREGPT_ROLES)) + ")")
    dataset = _text(record, "dataset", required=False) or default_dataset
    return _finish(messages, "conversations", dataset, _optional_id(record))


def _from_alpaca(record: dict, default_dataset: str) -> Conversation:
    instruction = _text(record, "instruction")
    extra_input = _text(record, "input", required=False) or ""
    output = _text(record, "output")
    if not instruction.strip():
        raise RecordError("instruction", "empty instruction")
    if not output.strip():
        raise RecordError("output", "empty assistant turn")
    prompt = instruction if not extra_input.strip() else f"{instruction}\n\n{extra_input}"
    dataset = _text(record, "dataset", required=False) or default_dataset
    return _finish([("user", prompt), ("assistant", output)], "output", dataset, _optional_id(record))


def _from_prompt_completion(record: dict, default_dataset: str) -> Conversation:
    prompt = _text(record, "prompt")
    completion = _text(record, "completion")
    if not completion.strip():
        raise RecordError("completion", "empty assistant turn")
    if not prompt.strip():
        raise RecordError("prompt", "empty prompt")
    dataset = _text(record, "dataset", required=False) or default_dataset
    return _finish([("user", prompt), ("assistant", completion)], "completion", dataset, _optional_id(record))


REQUIRED = {"messages": ("messages",), "sharegpt": ("conversations",), "alpaca": ("instruction", "output"),
             "prompt-completion": ("prompt", "completion")}
# the fields a shape turns into the conversation, id and source dataset; every other field is the metadata
CONSUMED = {"messages": frozenset({"messages", "id", "dataset"}),
            "sharegpt": frozenset({"conversations", "id", "dataset"}),
            "alpaca": frozenset({"instruction", "input", "output", "id", "dataset"}),
            "prompt-completion": frozenset({"prompt", "completion", "id", "dataset"})}
# what `--map FIELD=COLUMN` may name: every field some shape reads
FIELDS = tuple(dict.fromkeys(f for shape in FORMATS for f in sorted(CONSUMED[shape])))

_NORMALISERS: dict[str, Callable[[dict, str], Conversation]] = {
    "messages": _from_messages,
    "sharegpt": _from_sharegpt,
    "alpaca": _from_alpaca,
    "prompt-completion": _from_prompt_completion,
}
