"""Task metrics as LESS reports them (its `evaluation/eval/*/run_eval.py`, from open-instruct), as small pure
functions. Everything a model does is elsewhere (`inference.py`); these take strings and numbers.

- BBH: the answer is the text after the first "So the answer is" up to the next period on that line; without
  one, the first paragraph of the output. Exact match after lower-casing and deleting ASCII punctuation, as
  HF `evaluate`'s exact_match(ignore_case=True, ignore_punctuation=True) does (no other normalisation: "(A)"
  and "a" match, "A " and "A" do not). Averaged per subtask, then over subtasks (macro).
- MMLU: the predicted letter is the option whose letter token has the highest next-token logit after
  "Answer:"; accuracy over all items (micro), as LESS's `average_acc`.
- TyDiQA: SQuAD v1.1 F1 and exact match (lower-case, drop punctuation and English articles, squash
  whitespace; token-overlap F1; maximum over the gold answers), per language, then averaged over languages.
- Target loss: the mean token cross-entropy over completion tokens of one example (SPEC §1's l(z)).
Task metrics are percentages (as the paper prints them); losses are in nats.
"""
from __future__ import annotations

import math
import re
import string
from collections import Counter
from typing import Iterable, Mapping, Sequence

import torch

IGNORE_INDEX = -100

# -- BBH -------------------------------------------------------------------------------------------------
# Non-greedy up to the first period; `.` does not cross a newline, so an answer line without a period is
# skipped and a later "So the answer is" is tried (re.search semantics, exactly as the reference).
BBH_ANSWER_RE = re.compile(r"So the answer is (.*?)\.")
_PUNCT_TABLE = str.maketrans("", "", string.punctuation)


def extract_bbh_answer(output: str) -> str:
    """The prediction LESS scores for one generated output."""
    found = BBH_ANSWER_RE.search(output)
    if found:
        return found.group(1).strip()
    # no marker: keep the first paragraph (how LESS scores plain language models)
    return output.strip().split("\n\n")[0].strip()


def normalize_exact_match(text: str) -> str:
    """HF evaluate exact_match with ignore_case and ignore_punctuation: lower, then delete punctuation."""
    return text.lower().translate(_PUNCT_TABLE)


def bbh_exact_match(prediction: str, target: str) -> float:
    return 1.0 if normalize_exact_match(prediction) == normalize_exact_match(target) else 0.0


# -- MMLU ------------------------------------------------------------------------------------------------
def predict_choice(option_logits: Sequence[float]) -> int:
    """Index of the highest logit; ties go to the first option (torch.argmax does the same)."""
    if not len(option_logits):
        raise ValueError("no options to choose from")
    best = 0
    for i, value in enumerate(option_logits):
        if value > option_logits[best]:
            best = i
    return best


def choice_correct(option_logits: Sequence[float], letters: Sequence[str], answer: str) -> float:
    return 1.0 if letters[predict_choice(option_logits)] == answer else 0.0


# -- TyDiQA (SQuAD v1.1 official evaluation) ---------------------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT_SET = set(string.punctuation)


def squad_normalize(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT_SET)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def squad_f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 in [0, 1]; 0 when either side normalises to nothing (SQuAD v1.1, not v2)."""
    pred_tokens = squad_normalize(prediction).split()
    gold_tokens = squad_normalize(gold).split()
    common = Counter(pred_tokens) & Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_exact(prediction: str, gold: str) -> float:
    return 1.0 if squad_normalize(prediction) == squad_normalize(gold) else 0.0


def best_over_answers(metric, prediction: str, answers: Iterable[str]) -> float:
    answers = list(answers)
    if not answers:
        raise ValueError("an item with no gold answer cannot be scored")
    return max(metric(prediction, a) for a in answers)


# -- aggregation -------------------------------------------------------------------------------------------
def mean(values: Sequence[float]) -> float:
    if not len(values):
        raise ValueError("mean of nothing")
    return math.fsum(values) / len(values)


def macro_mean(per_subtask: Mapping[str, Sequence[float]]) -> float:
    """Mean of the per-subtask means (BBH, TyDiQA)."""
    return mean([mean(v) for v in per_subtask.values()])


def micro_mean(per_subtask: Mapping[str, Sequence[float]]) -> float:
    """Mean over all items, whatever their subtask (MMLU's average_acc)."""
    return mean([x for v in per_subtask.values() for x in v])


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n-1); None for a single value."""
    m = mean(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


# -- target loss -------------------------------------------------------------------------------------------
def completion_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example mean cross-entropy over labelled (completion) tokens, next-token shifted.

    logits [b, T, V], labels [b, T] with -100 on everything not scored. Returns [b] float64; NaN for a row
    with no labelled token (callers exclude those examples before, never average a NaN in).
    """
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    token_ce = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="none").view(shift_labels.shape).double()
    counts = (shift_labels != IGNORE_INDEX).sum(dim=1)
    return token_ce.sum(dim=1) / counts
