"""TyDiQA test items: the user's `tydiqa-goldp-v1.1-dev.json` (SQuAD format); one demonstration per language from
`tydiqa-one-shot.json` (LESS's validation file) or sampled from `tydiqa-goldp-v1.1-train.json`; prompts in the
chat format (the model's template, else Tulu), as LESS evaluates TyDiQA. The per-language prompt labels are
LESS/open-instruct's, one table shared with the validation task (tasks/less_formats.py)."""
from __future__ import annotations

import random
from pathlib import Path

from ..choices import DEFAULT_SAMPLE_SEED
from ..errors import InputError
from ..settings import SettingError
from ..tasks.less_formats import TYDIQA_TEMPLATES
from .config import EvalConfig
from .items import DATA_DIR_HINTS, EvalItem, TestSet, first_dir, read_json


TYDIQA_DEV = "tydiqa-goldp-v1.1-dev.json"


TYDIQA_TRAIN = "tydiqa-goldp-v1.1-train.json"


TYDIQA_ONE_SHOT = "tydiqa-one-shot.json"


def _squad_examples(path: Path) -> list[dict]:
    data = read_json(path)
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
        folder = first_dir([path, path / "tydiqa"], TYDIQA_DEV)
        if folder is None:
            raise SettingError(EvalConfig, f"{path}: no {TYDIQA_DEV}; {DATA_DIR_HINTS['tydiqa']}")
        dev_file = folder / TYDIQA_DEV
    examples = _squad_examples(dev_file)
    langs = sorted({e["lang"] for e in examples})
    unknown = [lang for lang in langs if lang not in TYDIQA_TEMPLATES]
    if unknown:
        raise InputError(f"no prompt template for language(s) {unknown} (ids must start with one of "
                         f"{sorted(TYDIQA_TEMPLATES)})", file=str(dev_file), field="id")
    shots: dict[str, list[dict]] = {lang: [] for lang in langs}
    if (folder / TYDIQA_ONE_SHOT).exists():
        one_shot = read_json(folder / TYDIQA_ONE_SHOT)
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
