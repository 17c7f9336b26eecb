"""The BBH and MMLU test items shipped inside lessdb (`lessdb/data/*_test.jsonl.gz`, MIT licences beside them),
used by `lessdb eval --task bbh|mmlu` when no `--data-dir` is given.

They were extracted from LESS's `data/eval` layout by `lessdb/data/extract_eval_items.py` and keep its file
order, so items, ids, demonstrations and the test set's hash equal those read from such a folder (a test
checks this against ../shared/data/less-eval).
"""
from __future__ import annotations

import gzip
import json
from importlib import resources

from .bbh import bbh_items, strip_cot_header
from .items import TestSet
from .mmlu import mmlu_rows, mmlu_test_set

MANIFEST = "eval_items.json"


def _lines(benchmark: str) -> tuple[str, list[dict]]:
    data = resources.files("lessdb.data")
    manifest = json.loads(data.joinpath(MANIFEST).read_text(encoding="utf-8"))
    name = manifest[benchmark]["file"]
    with gzip.open(data.joinpath(name).open("rb"), "rt", encoding="utf-8") as fh:
        return f"lessdb:{name}", [json.loads(line) for line in fh]


def shipped_bbh() -> TestSet:
    source, lines = _lines("bbh")
    items, shots = [], {}
    for line in lines:
        subtask = line["subtask"]
        shots[subtask] = strip_cot_header(line["cot_prompt"])
        items.extend(bbh_items(subtask, line["examples"], f"{source}:{subtask}"))
    return TestSet("bbh", "test", source, items, shots)


def shipped_mmlu(n_shot: int = 5) -> TestSet:
    source, lines = _lines("mmlu")
    test_dev = {line["subject"]: (mmlu_rows(line["test"], f"{source}:{line['subject']}/test"),
                                  mmlu_rows(line["dev"], f"{source}:{line['subject']}/dev")) for line in lines}
    return mmlu_test_set(test_dev, source, n_shot)
