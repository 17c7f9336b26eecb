"""The one conversation form every input format is normalised to, its content hash, and its text and words."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Conversation:
    """Messages as [{"role": "system"|"user"|"assistant", "content": str}, ...]: the assistant turns are
    the completion (the only tokens with a loss); everything else is the prompt."""

    messages: tuple[tuple[str, str], ...]
    source_dataset: str | None = None
    source_id: str | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def id(self) -> str:
        return content_hash(self.messages)

    def message_dicts(self) -> list[dict]:
        return [{"role": r, "content": c} for r, c in self.messages]

    @property
    def n_turns(self) -> int:
        return len(self.messages)

    @property
    def prompt_chars(self) -> int:
        return sum(len(c) for r, c in self.messages if r != "assistant")

    @property
    def completion_chars(self) -> int:
        return sum(len(c) for r, c in self.messages if r == "assistant")


# json.dumps(pairs, ensure_ascii=False, separators=(",", ":")), without building an encoder per call
_CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def content_hash(messages) -> str:
    """Stable id of a conversation: sha256 over its (role, content) pairs, 24 hex digits (96 bits)."""
    if not isinstance(messages, tuple):   # a Conversation's tuples encode as JSON arrays as they are
        messages = [[m["role"], m["content"]] if isinstance(m, dict) else list(m) for m in messages]
    return hashlib.sha256(_CANONICAL(messages).encode("utf-8")).hexdigest()[:24]


# -- the text of a conversation, as the text methods (BM25, DSIR, MinHash) see it ---------------------------------
_WORD = re.compile(r"\w+", re.UNICODE)


def conversation_text(messages: list[dict]) -> str:
    """All turns' text, as BM25, DSIR and MinHash see an example."""
    return "\n\n".join(m["content"] for m in messages)


def words(text: str) -> list[str]:
    """Lowercase \\w+ words."""
    return _WORD.findall(text.lower())
