"""Conversations to token ids and loss labels (SPEC §1: loss on assistant tokens only).

Two formats:
- the tokenizer's own chat template, when it has one. Each assistant turn's span is found by rendering
  prefixes of the conversation: the text of `messages[:i]` with the generation prompt ends where turn i's
  content starts, and the text of `messages[:i+1]` ends after its end-of-turn marker. The whole conversation
  is tokenised once (so ids equal what the model sees at inference) and each token is labelled when its
  first character falls in an assistant span — the content and the end-of-turn token(s) after it.
- otherwise the Tulu format of open-instruct (`encode_with_messages_format`): `<|system|>\\n…\\n`,
  `<|user|>\\n…\\n`, `<|assistant|>\\n…` + EOS + `\\n`, the whole text stripped; labels on each assistant
  content plus its EOS (and the newline after it, as open-instruct labels it).

All assistant turns of a multi-turn conversation carry labels; everything else is -100. Sequences are
truncated on the right to `max_seq_length`; an example left with no labelled token is to be excluded by the
caller (`completion_tokens == 0`), never trained on (its mean loss would be 0/0 = NaN).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch

from ..choices import TRUNCATION_SIDES
from ..errors import LessdbError

IGNORE_INDEX = -100
FORMAT_CHAT_TEMPLATE = "chat_template"
FORMAT_TULU = "tulu"


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    labels: list[int]
    prompt_tokens: int        # unlabelled tokens kept after truncation
    completion_tokens: int    # labelled tokens kept after truncation (0: exclude the example)
    truncated: bool
    full_length: int          # tokens before truncation

    @property
    def total_tokens(self) -> int:
        return len(self.input_ids)


def conversation_format(tokenizer) -> str:
    return FORMAT_CHAT_TEMPLATE if getattr(tokenizer, "chat_template", None) else FORMAT_TULU


def tokenizer_id(tokenizer) -> str:
    """A stable id of everything that decides the tokens: vocabulary/merges/normaliser, chat template (or
    the Tulu format), and the special tokens. 24 hex digits of a sha256."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode("utf-8"))
    else:  # slow tokenizer: the vocabulary is what we can see
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode("utf-8"))
    h.update(b"\0" + conversation_format(tokenizer).encode())
    h.update(b"\0" + (getattr(tokenizer, "chat_template", None) or "").encode("utf-8"))
    specials = {k: str(getattr(tokenizer, k, None)) for k in ("bos_token", "eos_token", "pad_token")}
    h.update(b"\0" + json.dumps(specials, sort_keys=True).encode("utf-8"))
    return h.hexdigest()[:24]


# -- rendering: text plus the character spans that carry a loss -------------------------------------------
def _render_tulu(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    eos = tokenizer.eos_token or ""
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in messages:
        role, content = m["role"], (m["content"] or "").strip()
        if role == "assistant":
            head = "<|assistant|>\n"
            body = content + eos + "\n"
            spans.append((pos + len(head), pos + len(head) + len(body)))
            text = head + body
        elif role == "system":
            text = "<|system|>\n" + content + "\n"
        else:
            text = "<|user|>\n" + content + "\n"
        parts.append(text)
        pos += len(text)
    full = "".join(parts)
    # open-instruct strips the concatenation; only trailing whitespace can go (the text starts with "<|")
    stripped = full.rstrip()
    spans = [(a, min(b, len(stripped))) for a, b in spans]
    return stripped, spans


def _render_chat_template(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    msgs = [{"role": m["role"], "content": m["content"] or ""} for m in messages]
    full = tokenizer.apply_chat_template(msgs, tokenize=False)
    spans = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        start_text = tokenizer.apply_chat_template(msgs[:i], tokenize=False, add_generation_prompt=True) if i else ""
        end_text = tokenizer.apply_chat_template(msgs[:i + 1], tokenize=False)
        if not (full.startswith(start_text) and full.startswith(end_text) and len(start_text) <= len(end_text)):
            raise LessdbError(
                "this tokenizer's chat template does not render conversations prefix-consistently "
                "(turn %d), so assistant tokens cannot be located; use a model whose template does" % i)
        spans.append((len(start_text), len(end_text)))
    return full, spans


def _leading_special_ids(tokenizer) -> list[int]:
    """Ids the tokenizer itself prepends (e.g. BOS for Llama), as open-instruct's tokenizer() call adds them."""
    with_special = tokenizer("x", add_special_tokens=True).input_ids
    plain = tokenizer("x", add_special_tokens=False).input_ids
    if plain and plain[0] in with_special:
        return list(with_special[:with_special.index(plain[0])])
    return []


HEAD_CHARS_PER_TOKEN = 8  # generous: English BPE averages ~4 characters per token
HEAD_MARGIN_TOKENS = 64   # tokens kept beyond the ones used, so nothing near the cut is ever used


def _tokenize_head(tokenizer, text: str, n_tokens: int) -> tuple[list[int], list[tuple[int, int]], bool]:
    """Token ids and character offsets of `text`, of which only the first `n_tokens` will be kept.

    Long conversations (ShareGPT's run to thousands of tokens) are cut before tokenizing: at a newline that
    follows a non-space character, which is a pre-token boundary for byte-level BPE (words never absorb a
    following newline, and no special token contains one), so the head's tokens equal the first tokens of
    the whole text. When the head holds too few tokens the whole text is tokenized. Returns (ids, offsets,
    cut) where `cut` says the text was cut (so it had more tokens than returned)."""
    limit = HEAD_CHARS_PER_TOKEN * max(n_tokens, 1)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    splits_words = backend is not None and backend.pre_tokenizer is not None  # else BPE may merge across "\n"
    if splits_words and len(text) > 2 * limit:
        pos = text.find("\n", limit)
        while pos != -1 and (pos == 0 or text[pos - 1].isspace()):
            pos = text.find("\n", pos + 1)
        if pos != -1 and pos < len(text) - 1:
            enc = tokenizer(text[:pos], add_special_tokens=False, return_offsets_mapping=True)
            if len(enc["input_ids"]) > n_tokens + HEAD_MARGIN_TOKENS:
                return list(enc["input_ids"]), list(enc["offset_mapping"]), True
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), list(enc["offset_mapping"]), False


def encode_conversation(tokenizer, messages: list[dict], max_seq_length: int) -> EncodedExample:
    """Token ids and labels (-100 except on assistant tokens) of one conversation, truncated on the right."""
    if max_seq_length < 1:
        raise LessdbError(f"max_seq_length must be positive, got {max_seq_length}")
    fmt = conversation_format(tokenizer)
    if fmt == FORMAT_CHAT_TEMPLATE:
        text, spans = _render_chat_template(tokenizer, messages)
        prefix_ids: list[int] = []  # the template writes its own BOS, if any
    else:
        text, spans = _render_tulu(tokenizer, messages)
        prefix_ids = _leading_special_ids(tokenizer)
    ids, offsets, cut = _tokenize_head(tokenizer, text, max_seq_length - len(prefix_ids))
    labels = [IGNORE_INDEX] * len(ids)
    spans = sorted(spans)
    for j, (start, end) in enumerate(offsets[:max_seq_length]):
        if end > start and any(a <= start < b for a, b in spans):
            labels[j] = ids[j]
    ids = prefix_ids + ids
    labels = [IGNORE_INDEX] * len(prefix_ids) + labels
    full_length = len(ids) + (1 if cut else 0)  # a lower bound when only the head was tokenized
    ids, labels = ids[:max_seq_length], labels[:max_seq_length]
    if labels:
        labels[0] = IGNORE_INDEX  # the first token is never predicted (nothing precedes it)
    completion = sum(1 for x in labels if x != IGNORE_INDEX)
    return EncodedExample(input_ids=ids, labels=labels, prompt_tokens=len(ids) - completion,
                          completion_tokens=completion, truncated=full_length > max_seq_length,
                          full_length=full_length)


def keep_tail(example: EncodedExample, max_seq_length: int) -> EncodedExample:
    """Left truncation: the last `max_seq_length` tokens of an encoding (made with a larger limit). Used for
    validation examples whose long few-shot prompt would otherwise push the completion out of the window;
    the earliest prompt tokens go, the completion stays."""
    if len(example.input_ids) <= max_seq_length:
        return example
    ids, labels = example.input_ids[-max_seq_length:], example.labels[-max_seq_length:]
    labels = [IGNORE_INDEX] + labels[1:]
    completion = sum(1 for x in labels if x != IGNORE_INDEX)
    return EncodedExample(input_ids=ids, labels=labels, prompt_tokens=len(ids) - completion,
                          completion_tokens=completion, truncated=True, full_length=example.full_length)


LEFT_TRUNCATION_CEILING = 1 << 15  # encode this much before keeping the tail


def encode_window(tokenizer, messages: list[dict], max_seq_length: int, truncation: str = "right") -> EncodedExample:
    """A conversation in a `max_seq_length`-token window: truncated on the right (the paper), or on the left
    (`keep_tail`: the completion stays, the earliest prompt tokens go)."""
    check_truncation(truncation)
    if truncation == "left":
        return keep_tail(encode_conversation(tokenizer, messages, LEFT_TRUNCATION_CEILING), max_seq_length)
    return encode_conversation(tokenizer, messages, max_seq_length)


def check_truncation(truncation: str) -> None:
    if truncation not in TRUNCATION_SIDES:
        raise LessdbError(f"truncation {truncation!r}: expected one of {', '.join(TRUNCATION_SIDES)}")


def collate(examples: list[EncodedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded LongTensors input_ids, attention_mask, labels (-100 on padding)."""
    if not examples:
        raise ValueError("collate needs at least one example")
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), int(pad_token_id), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[row, :n] = torch.tensor(e.input_ids, dtype=torch.long)
        labels[row, :n] = torch.tensor(e.labels, dtype=torch.long)
        mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def to_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """A collated batch on `device`. To a GPU through pinned memory without blocking (the copy overlaps the
    host's work until the first kernel needs it); on a CPU the tensors are used as they are."""
    device = torch.device(device)
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


def pad_token_id(tokenizer) -> int:
    """The pad id to use: the tokenizer's, else EOS (padding is masked out of both attention and loss)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if tid is not None:
            return int(tid)
    return 0


def encode_rows(tokenizer, table, max_seq_length: int) -> list[tuple[str, EncodedExample]]:
    """(id, encoding) of each row of an Arrow table of candidates (columns `id` and `messages`)."""
    ids = table.column("id").to_pylist()
    messages = table.column("messages").to_pylist()
    return [(cid, encode_conversation(tokenizer, msgs, max_seq_length)) for cid, msgs in zip(ids, messages)]
