"""Data of the task-recovery benchmark (`python -m bench.recovery`): which BIG-bench tasks, how pool and validation
examples are drawn and rendered, and how lexically close the validation examples are to their pool.

Each *skill* has a pool source (a BIG-bench task or subtask) and a sibling source that exercises the same skill
in another surface form. The pool holds `per_task` examples of every pool source (+ ShareGPT distractors);
each skill gets two target tasks of `n_val` held-out examples:

  same   drawn from the pool source itself (not in the pool), rendered exactly like the pool examples;
  cross  drawn from the sibling source, rendered differently: the BIG-bench task prefix is replaced by our own
         instruction wording (CROSS_INSTRUCTIONS, written once, before any result), multiple-choice options are
         listed on one line as "Choices: a | b | c" instead of a "- option" list, and the answer is
         "The answer is: X" instead of the bare X. For siblings whose files are aligned item by item (ALIGNED:
         cause_and_effect's one/two-sentence files hold the same events at the same index, elementary_math_qa's
         the same problems), no index used by a pool or same-surface example is drawn.

No source of BBH's 27 subtasks is used (quality.py's BBH_SOURCES), so this pool can also serve BBH runs.
"""
from __future__ import annotations

import json
import random
import re
import tarfile
from pathlib import Path

# skill -> (pool source, sibling source, our instruction for the cross-surface rewrite)
SKILLS: dict[str, tuple[str, str, str]] = {
    "color": ("color/rgb", "color/hex", "Name the basic colour that this web colour code is closest to."),
    "math_word": ("elementary_math_qa/question_only", "elementary_math_qa/mathematical_hint_only",
                  "Work out the value of this nested formula."),
    "past_tense": ("linguistic_mappings/past_tense_regular_json", "linguistic_mappings/de_past_tense_regular_json",
                   "Conjugate the verb into its simple past (third person singular)."),
    "pig_latin": ("language_games/pig_latin_encode", "language_games/pig_latin_decode",
                  "Decode this sentence from the children's word game back into normal English."),
    "units": ("unit_conversion/si_conversion", "unit_conversion/unit_conversion_with_relative_error",
              "Convert the measurement and reply with the number only."),
    "cause_effect": ("cause_and_effect/two_sentences", "cause_and_effect/one_sentence",
                     "Pick the statement whose 'because' clause gets the direction of causality right."),
    "wikihow": ("goal_step_wikihow/goal_inference", "goal_step_wikihow/step_inference",
                "Pick the action that best helps accomplish the given how-to title."),
    "metaphor": ("metaphor_boolean", "metaphor_understanding/met2lit",
                 "Rewrite the figurative phrase literally: choose the paraphrase that keeps its meaning."),
    "entailment": ("analytic_entailment", "entailed_polarity",
                   "Read the premise and decide whether the question's claim follows from it."),
    "proverbs": ("english_proverbs", "swahili_english_proverbs",
                 "Find the saying in English with the same lesson as this Swahili one."),
    "arithmetic": ("simple_arithmetic_json", "arithmetic/2_digit_addition",
                   "Mental maths: reply with the sum only."),
    "unit_reasoning": ("unit_interpretation/lv1", "unit_interpretation/lv2",
                       "Fill the gap marked () with the right quantity."),
    "concepts": ("conceptual_combinations/emergent_properties", "conceptual_combinations/invented_words",
                 "Given the made-up words, which description fits the combined phrase best?"),
}

ALIGNED = {"cause_effect", "math_word"}   # sibling file = the same items as the pool source, index by index

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


# -- BIG-bench sources ---------------------------------------------------------------------------------------------
def load_sources(sdist: Path, sources: list[str], cache: Path) -> dict[str, dict]:
    """{source: task.json} read once from the bigbench sdist tarball (`benchmark_tasks/<source>/task.json`) and
    cached as JSON under `cache`, so later runs do not reread the 358 MB archive."""
    cache.mkdir(parents=True, exist_ok=True)
    path_of = {s: cache / (s.replace("/", "__") + ".json") for s in sources}
    missing = {s for s, p in path_of.items() if not p.exists()}
    if missing:
        with tarfile.open(sdist) as tar:
            for member in tar:
                if not member.name.endswith("/task.json") or "benchmark_tasks/" not in member.name:
                    continue
                rel = member.name.split("benchmark_tasks/", 1)[1][: -len("/task.json")]
                if rel in missing:
                    path_of[rel].write_text(json.dumps(json.load(tar.extractfile(member))))
                    missing.discard(rel)
                    if not missing:
                        break
    if missing:
        raise SystemExit(f"{sdist}: no benchmark_tasks/<name>/task.json for {sorted(missing)}")
    return {s: json.loads(p.read_text()) for s, p in path_of.items()}


def _answer_and_options(ex: dict) -> tuple[str | None, list[str]]:
    scores = ex.get("target_scores")
    if scores:
        return max(scores, key=lambda o: scores[o]), list(scores)
    target = ex.get("target")
    target = target[0] if isinstance(target, list) and target else target
    return (target if isinstance(target, str) else None), []


def render_pool(spec: dict, ex: dict) -> tuple[str, str] | None:
    """(prompt, completion) as BIG-bench presents it: task prefix + input, "- option" lines, the bare answer."""
    answer, options = _answer_and_options(ex)
    prompt = ((spec.get("task_prefix") or "") + (ex.get("input") or "")).strip()
    if options:
        prompt += "\nOptions:\n" + "\n".join(f"- {o}" for o in options)
    if not answer or not answer.strip() or not prompt:
        return None
    return prompt, answer.strip()


def render_cross(instruction: str, ex: dict) -> tuple[str, str] | None:
    """(prompt, completion) in the rewritten surface: our instruction, options on one line, "The answer is: X"."""
    answer, options = _answer_and_options(ex)
    body = (ex.get("input") or "").strip()
    prompt = instruction + ("\n" + body if body else "")
    if options:
        prompt += "\nChoices: " + " | ".join(options)
    if not answer or not answer.strip():
        return None
    return prompt, f"The answer is: {answer.strip()}"


def build_split(sources: dict[str, dict], skills: dict[str, tuple[str, str, str]], per_task: int, n_val: int,
                seed: int, max_chars: int = 1200) -> dict:
    """{"pool": [record], "same": {skill: [record]}, "cross": {skill: [record]}}; records are
    {"dataset", "prompt", "completion"}; the pool record's dataset is "bigbench/<skill>" (the recovery label)."""
    rng = random.Random(seed)
    pool, same, cross = [], {}, {}
    for skill, (src, sibling, instruction) in skills.items():
        spec = sources[src]
        rendered = [(i, render_pool(spec, ex)) for i, ex in enumerate(spec.get("examples", []))]
        ok = [(i, r) for i, r in rendered if r and len(r[0]) + len(r[1]) <= max_chars]
        rng.shuffle(ok)
        if len(ok) < per_task + n_val:
            raise SystemExit(f"{src}: only {len(ok)} usable examples, need {per_task + n_val}")
        pool += [{"dataset": f"bigbench/{skill}", "prompt": p, "completion": c} for _, (p, c) in ok[:per_task]]
        same[skill] = [{"prompt": p, "completion": c} for _, (p, c) in ok[per_task:per_task + n_val]]
        used = {i for i, _ in ok[:per_task + n_val]} if skill in ALIGNED else set()
        sib = [(i, render_cross(instruction, ex)) for i, ex in enumerate(sources[sibling].get("examples", []))]
        sib = [r for i, r in sib if r and i not in used and len(r[0]) + len(r[1]) <= max_chars]
        rng.shuffle(sib)
        if len(sib) < n_val:
            raise SystemExit(f"{sibling}: only {len(sib)} usable examples, need {n_val}")
        cross[skill] = [{"prompt": p, "completion": c} for p, c in sib[:n_val]]
    return {"pool": pool, "same": same, "cross": cross}


# -- the tiny synthetic stand-in (--smoke) ---------------------------------------------------------------------------
def synthetic_split(n_skills: int, per_task: int, n_val: int, seed: int = 0) -> tuple[dict, dict]:
    """A pool and targets of the same shape from templates (no download): each skill has its own vocabulary;
    the cross surface uses another template and answer format over the same vocabulary."""
    rng = random.Random(seed)
    vocab = ["apple pear plum", "river lake sea", "red blue green", "one two three", "cat dog cow", "sun moon star"]
    skills, sources = {}, {}
    for s in range(n_skills):
        ws_ = vocab[s % len(vocab)].split()
        exs = [{"input": f"Item {rng.randint(0, 99)}: {' '.join(rng.choices(ws_, k=4))}. Which word comes first?",
                "target": ws_[0]} for _ in range(per_task + 2 * n_val + 4)]
        sources[f"synthetic/{s}"] = {"task_prefix": f"Skill {s}. ", "examples": exs}
        skills[f"skill{s}"] = (f"synthetic/{s}", f"synthetic/{s}", f"Quiz on the {ws_[1]} words; say the first one.")
    return sources, skills


# -- lexical overlap ---------------------------------------------------------------------------------------------
def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def lexical_overlap(split: dict, variant: str) -> dict:
    """Mean word-set Jaccard of each target's validation examples with its own skill's pool examples (`own`)
    and with the other skills' BIG-bench pool examples (`other`), per skill and averaged over skills."""
    pool_sets: dict[str, list[set]] = {}
    for r in split["pool"]:
        pool_sets.setdefault(r["dataset"].split("/", 1)[1], []).append(set(words(r["prompt"] + " " + r["completion"])))
    per = {}
    for skill, exs in split[variant].items():
        vs = [set(words(e["prompt"] + " " + e["completion"])) for e in exs]
        own = [jaccard(v, p) for v in vs for p in pool_sets[skill]]
        other = [jaccard(v, p) for v in vs for s, ps in pool_sets.items() if s != skill for p in ps]
        per[skill] = {"own": sum(own) / len(own), "other": sum(other) / max(len(other), 1)}
    n = len(per)
    return {"own": sum(v["own"] for v in per.values()) / n, "other": sum(v["other"] for v in per.values()) / n,
            "per_skill": per}

