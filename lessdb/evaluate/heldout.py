"""Held-out outcome metrics (issue 22): does training on a selection help on the target's *test* items, which the
selection never saw? Two metrics, both from batched forward passes (no generation), both per item:

- answer loss: the teacher-forced mean token NLL (nats) of the gold answer after the prompt — only the answer's
  tokens, not the end-of-turn marker. Lower is better.
- choice accuracy, for multiple-choice items: 1 when the gold choice has the highest summed log-likelihood among
  the item's choices (lm-eval's "acc"), else 0. Higher is better.

Prompt format (PROMPT_FORMAT, recorded with every result): zero-shot, one user turn rendered with the model's
chat template and its generation prompt (Tulu `<|user|>`/`<|assistant|>` for a model without one, as
`lessdb eval` does), followed by the answer's tokens (tokenized on their own and appended, as lm-eval joins
context and continuation).
- MMLU: the user turn of the task's own validation examples (LESS's zero-shot format, `less_mmlu_example`):
  "The following are multiple choice questions (with answers) about  SUBJECT.\\n\\nQ\\nA. ..\\nD. ..\\nAnswer:
  \\nThe answer is:"; the answer is the letter; the choices are A-D.
- BBH: the subtask's instruction (the chain-of-thought prompt's description, without its exemplars), then
  "\\n\\nQ: INPUT\\nA:" — LESS's BBH format without the three demonstrations; the answer is the bare target
  ("(B)", "True", "valid", ...), not a chain of thought (test items have none). Choices (`bbh_choices`): an
  item whose target is a letter option "(X)" chooses among the "(X)" options its input lists; a subtask whose
  targets form a closed set of at most CLOSED_SET_MAX strings (True/False, Yes/No, valid/invalid) chooses
  among that set, derived from all its test items; the others (dyck_languages, multistep_arithmetic_two,
  object_counting, word_sorting, and the few non-letter targets of movie_recommendation and ruin_names) have
  the answer loss only.

Held-out means outside the validation examples the selection scored against: `validation_overlap` counts test
items whose question text appears in a validation example (BBH: the input, against the exemplars of the
chain-of-thought prompts; MMLU: the question with its four options, against the dev questions), and callers
refuse or drop them.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

from ..tasks.less_formats import less_mmlu_example, split_less_bbh_prompt
from .items import EvalItem, TestSet

CLOSED_SET_MAX = 4
PROMPT_FORMAT = {
    "name": "heldout-zero-shot-v1",
    "turn": "one user turn with the model's chat template + generation prompt (Tulu without one); the answer's "
            "tokens appended",
    "mmlu": "LESS's zero-shot MMLU validation format, answer = the letter, choices A-D",
    "bbh": "subtask instruction + '\\n\\nQ: ' + input + '\\nA:', answer = the bare target; choices: listed (X) "
           f"options, or the subtask's closed set of <= {CLOSED_SET_MAX} targets",
    "answer_loss": "mean token NLL of the answer tokens (no end-of-turn), nats",
    "choice_accuracy": "argmax of the choices' summed log-likelihoods (lm-eval acc), ties to the first",
}


@dataclass(frozen=True)
class HeldoutItem:
    item_id: str
    subtask: str
    user: str                                   # the user turn's text
    answer: str                                 # the gold continuation
    choices: tuple[str, ...] | None = None      # multiple choice: every candidate continuation (gold among them)
    question: str = ""                          # the text checked against the validation examples

    @property
    def gold_index(self) -> int | None:
        return None if self.choices is None else self.choices.index(self.answer)


# -- items ------------------------------------------------------------------------------------------------------
_OPTION = re.compile(r"^\(([A-Z])\)", re.MULTILINE)
_LETTER = re.compile(r"^\([A-Z]\)$")


def listed_options(text: str) -> list[str]:
    """The "(X)" options an input lists at line starts, in order, without repeats."""
    out: list[str] = []
    for letter in _OPTION.findall(text):
        if f"({letter})" not in out:
            out.append(f"({letter})")
    return out


def closed_sets(items: Sequence[EvalItem]) -> dict[str, tuple[str, ...]]:
    """{subtask: its targets} for subtasks whose targets form a set of 2..CLOSED_SET_MAX strings, none a letter
    option (sorted, so the order never depends on the items' order)."""
    targets: dict[str, set[str]] = {}
    for it in items:
        targets.setdefault(it.subtask, set()).add(it.answers[0])
    return {s: tuple(sorted(t)) for s, t in targets.items()
            if 2 <= len(t) <= CLOSED_SET_MAX and not any(_LETTER.match(x) for x in t)}


def bbh_choices(item: EvalItem, closed: dict[str, tuple[str, ...]]) -> tuple[str, ...] | None:
    gold = item.answers[0]
    if _LETTER.match(gold):
        listed = listed_options(item.fields["input"])
        return tuple(listed) if gold in listed and len(listed) >= 2 else None
    return closed.get(item.subtask)


def bbh_instruction(cot_prompt: str) -> str:
    """The task description of a chain-of-thought prompt (everything before its three exemplars)."""
    return split_less_bbh_prompt(cot_prompt.strip())[0].strip()


def bbh_exemplar_questions(cot_prompt: str) -> list[str]:
    """The questions of a chain-of-thought prompt's exemplars: what BBH's validation examples ask."""
    return [ex.split("\nA:")[0].removeprefix("Q: ").strip() for ex in split_less_bbh_prompt(cot_prompt.strip())[1]]


def bbh_heldout(ts: TestSet, all_items: Sequence[EvalItem] | None = None) -> list[HeldoutItem]:
    """BBH test items as held-out items; choice sets are derived from `all_items` (default: ts.items), so a
    subset gets the same choices as the whole test set."""
    closed = closed_sets(all_items if all_items is not None else ts.items)
    out = []
    for it in ts.items:
        user = bbh_instruction(ts.shots[it.subtask]) + "\n\nQ: " + it.fields["input"] + "\nA:"
        out.append(HeldoutItem(it.item_id, it.subtask, user, it.answers[0], bbh_choices(it, closed),
                               it.fields["input"]))
    return out


def mmlu_heldout(ts: TestSet) -> list[HeldoutItem]:
    out = []
    for it in ts.items:
        user = less_mmlu_example(it.subtask, it.fields["question"], it.fields["options"], it.answers[0])[0]["content"]
        # the question with its options: a stem alone ("Which of the following is true?") repeats across items
        body = it.fields["question"] + "".join(f"\n{L}. {o}" for L, o in zip("ABCD", it.fields["options"]))
        out.append(HeldoutItem(it.item_id, it.subtask, user, it.answers[0], ("A", "B", "C", "D"), body))
    return out


def heldout_items(ts: TestSet, all_items: Sequence[EvalItem] | None = None) -> list[HeldoutItem]:
    if ts.task == "bbh":
        return bbh_heldout(ts, all_items)
    if ts.task == "mmlu":
        return mmlu_heldout(ts)
    raise ValueError(f"no held-out format for task {ts.task!r} (bbh, mmlu)")


_SPACE = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _SPACE.sub(" ", text).strip().lower()


def validation_overlap(items: Sequence[HeldoutItem], validation_texts: Sequence[str]) -> list[str]:
    """Ids of the items whose question (whitespace- and case-normalised) occurs inside a validation text (the
    user turns of the examples the selection scored against)."""
    texts = [_norm(t) for t in validation_texts]
    # one string, the texts joined by NUL: a question without NUL occurs in it exactly when it occurs inside one
    # text (MMLU's 14,042 items against a validation set in about a second, not 40)
    haystack = "\0".join(texts)

    def occurs(question: str) -> bool:
        q = _norm(question)
        return q in haystack and ("\0" not in q or any(q in t for t in texts))

    return [it.item_id for it in items if it.question and occurs(it.question)]


# -- scoring ----------------------------------------------------------------------------------------------------
def prompt_ids(tokenizer, user: str) -> list[int]:
    """Token ids of a one-turn chat prompt ending where the assistant's answer starts."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                             add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False).input_ids)
    return list(tokenizer("<|user|>\n" + user + "\n<|assistant|>\n", add_special_tokens=True).input_ids)


def continuation_ids(tokenizer, text: str) -> list[int]:
    ids = list(tokenizer(text, add_special_tokens=False).input_ids)
    if not ids:
        raise ValueError(f"continuation {text!r} has no tokens")
    return ids


@dataclass
class ItemScore:
    item_id: str
    subtask: str
    answer_loss: float                      # mean NLL of the gold answer's tokens (nats)
    answer_tokens: int
    choice_logliks: list[float] | None      # summed log-likelihood of each choice
    correct: float | None                   # 1.0 / 0.0 for multiple-choice items


def choose(logliks: Sequence[float]) -> int:
    """Index of the highest summed log-likelihood; ties go to the first choice."""
    best = 0
    for i, v in enumerate(logliks):
        if v > logliks[best]:
            best = i
    return best


def _left_padded(rows: Sequence[list[int]], pad: int):
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return ids, mask


def continuation_logliks(model, prompts: Sequence[list[int]], continuations: Sequence[Sequence[list[int]]], *,
                         pad_token_id: int, batch_size: int = 8, progress=None) -> list[list[float]]:
    """Summed log-probability of each continuation (token ids) after its prompt: `continuations[i]` are prompt i's
    candidates. Each prompt runs once (left-padded batches, positions counted from each row's first real token);
    its last position gives every continuation's first token; the rest of the continuations (choices such as
    "(A)" are 3 tokens) run as one more small batch on the prompts' key/value cache, copied once per
    continuation. The same numbers as one full forward pass per (prompt, continuation), up to float rounding."""
    import torch

    device = next(model.parameters()).device
    out: list[list[float]] = [[0.0] * len(c) for c in continuations]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))   # similar lengths share a batch
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            ids, mask = _left_padded([prompts[i] for i in batch], pad_token_id)
            ids, mask = ids.to(device), mask.to(device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            tails = [(row, c) for row, i in enumerate(batch) for c, cont in enumerate(continuations[i]) if len(cont) > 1]
            res = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=bool(tails),
                        logits_to_keep=1)
            first = torch.log_softmax(res.logits[:, -1, :].float(), dim=-1)
            for row, i in enumerate(batch):
                for c, cont in enumerate(continuations[i]):
                    out[i][c] = float(first[row, cont[0]])
            if tails:
                rows = torch.tensor([row for row, _ in tails], device=device)
                cache = res.past_key_values
                cache.reorder_cache(rows)                       # one copy of a prompt's cache per continuation
                feed = [continuations[batch[row]][c][:-1] for row, c in tails]   # predicts tokens 2..L
                width = max(len(f) for f in feed)
                tail_ids = torch.full((len(feed), width), pad_token_id, dtype=torch.long)
                tail_mask = torch.zeros((len(feed), width), dtype=torch.long)
                for r, f in enumerate(feed):                    # right-padded: pads come after every real token
                    tail_ids[r, :len(f)] = torch.tensor(f)
                    tail_mask[r, :len(f)] = 1
                prompt_len = mask.sum(-1)[rows]
                tail_pos = prompt_len[:, None] + torch.arange(width, device=device)[None, :]
                logits = model(input_ids=tail_ids.to(device),
                               attention_mask=torch.cat([mask[rows], tail_mask.to(device)], dim=1),
                               position_ids=tail_pos, past_key_values=cache, use_cache=True).logits
                logsm = torch.log_softmax(logits.float(), dim=-1)
                for r, (row, c) in enumerate(tails):
                    cont = continuations[batch[row]][c]
                    targets = torch.tensor(cont[1:], device=device)
                    out[batch[row]][c] += float(logsm[r, :len(cont) - 1].gather(1, targets[:, None]).sum())
            if progress is not None:
                progress.update(len(batch))
    return out


def score_heldout(model, tokenizer, items: Sequence[HeldoutItem], *, batch_size: int = 8,
                  progress=None) -> list[ItemScore]:
    """Answer loss and (multiple-choice items) every choice's summed log-likelihood and correctness."""
    prompts, conts = [], []
    for it in items:
        prompts.append(prompt_ids(tokenizer, it.user))
        conts.append([continuation_ids(tokenizer, t) for t in (it.choices if it.choices is not None else [it.answer])])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    logliks = continuation_logliks(model, prompts, conts, pad_token_id=pad, batch_size=batch_size, progress=progress)
    scores = []
    for it, ids, lls in zip(items, conts, logliks):
        mc = it.choices is not None
        g = it.choices.index(it.answer) if mc else 0
        scores.append(ItemScore(it.item_id, it.subtask, -lls[g] / len(ids[g]), len(ids[g]), lls if mc else None,
                                (1.0 if choose(lls) == g else 0.0) if mc else None))
    return scores


def summarize(scores: Sequence[ItemScore]) -> dict:
    """Means over items: answer loss (all items), choice accuracy (multiple-choice items), and the counts."""
    losses = [s.answer_loss for s in scores]
    mc = [s.correct for s in scores if s.correct is not None]
    return {"answer_loss": math.fsum(losses) / len(losses) if losses else None, "n_items": len(losses),
            "choice_accuracy": math.fsum(mc) / len(mc) if mc else None, "n_choice_items": len(mc)}
