"""BBH test items: from a LESS `data/eval` folder (`bbh/test/<subtask>.json` with {"examples": [{input, target}]}
and `bbh/cot-prompts/<subtask>.txt`) or the copy shipped with lessdb (shipped.py); 3-shot chain-of-thought
prompts `<cot prompt>\\n\\nQ: <input>\\nA:`, as LESS evaluates BBH."""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError, LessdbError
from ..settings import SettingError
from .config import EvalConfig
from .items import DATA_DIR_HINTS, EvalItem, TestSet, first_dir, read_json


# -- BBH ----------------------------------------------------------------------------------------------------
def _is_bbh_test_file(path: Path) -> bool:
    try:
        data = read_json(path)
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
                                       f"found; {DATA_DIR_HINTS['bbh']}")
    cot_dir = first_dir([root / "bbh" / "cot-prompts", root / "cot-prompts", test_dir.parent / "cot-prompts"],
                         "*.txt")
    if cot_dir is None:
        raise SettingError(EvalConfig, f"{root}: no cot-prompts/<subtask>.txt folder next to the BBH test "
                                       f"files; {DATA_DIR_HINTS['bbh']}")
    items: list[EvalItem] = []
    shots: dict[str, str] = {}
    for path in sorted(test_dir.glob("*.json")):
        data = read_json(path)
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
