"""Extract the BBH and MMLU *test* items once into compressed data files shipped with lessdb, so that
`lessdb eval --task bbh|mmlu` works on a fresh install (run by a maintainer, not at runtime).

    python -m lessdb.data.extract_eval_items --less-eval-dir ../shared/data/less-eval

Reads a LESS `data/eval` folder and writes, in this folder:
- `bbh_test.jsonl.gz`: one line per subtask (27, sorted): {"subtask", "canary", "cot_prompt" (the
  `bbh/cot-prompts/<subtask>.txt` text as it is, canary header included), "examples": [{"input", "target"}]}
  from `bbh/test/<subtask>.json` (6,511 items). BIG-Bench Hard, MIT licence (LICENSE-BBH.txt).
- `mmlu_test.jsonl.gz`: one line per subject (57, sorted): {"subject", "dev": [[question, A, B, C, D,
  answer]] (the 5 demonstrations), "test": [[...]]}, the rows of `mmlu/dev|test/<subject>_*.csv` as parsed
  by Python's csv module. MMLU, MIT licence (LICENSE-MMLU.txt).
- `eval_items.json`: per benchmark the file, its sha256, counts and the sha256 of every source file read.

Items keep their file order, so an item id ("<subtask>/<position>") and the test set's hash are the same as
when the folder itself is passed with `--data-dir`. gzip is written with mtime 0: the same input gives the
same bytes. TyDiQA stays out (Apache-2.0, and only its one-shot validation file is public here).
"""
from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
MANIFEST = "eval_items.json"
FILES = {"bbh": "bbh_test.jsonl.gz", "mmlu": "mmlu_test.jsonl.gz"}
LICENCES = {"bbh": "LICENSE-BBH.txt", "mmlu": "LICENSE-MMLU.txt"}
BBH_SUBTASKS, BBH_ITEMS = 27, 6511
MMLU_SUBJECTS = 57


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def extract_bbh(root: Path) -> tuple[list[dict], dict[str, str]]:
    test_dir, cot_dir = root / "bbh" / "test", root / "bbh" / "cot-prompts"
    lines, sources = [], {}
    for path in sorted(test_dir.glob("*.json")):
        raw = path.read_bytes()
        data = json.loads(raw)
        prompt = cot_dir / f"{path.stem}.txt"
        prompt_raw = prompt.read_bytes()
        sources[f"bbh/test/{path.name}"] = _sha256(raw)
        sources[f"bbh/cot-prompts/{prompt.name}"] = _sha256(prompt_raw)
        examples = [{"input": ex["input"], "target": ex["target"]} for ex in data["examples"]]
        lines.append({"subtask": path.stem, "canary": data.get("canary"), "cot_prompt": prompt_raw.decode("utf-8"),
                      "examples": examples})
    n_items = sum(len(x["examples"]) for x in lines)
    if len(lines) != BBH_SUBTASKS or n_items != BBH_ITEMS:
        raise SystemExit(f"{test_dir}: expected {BBH_SUBTASKS} subtasks and {BBH_ITEMS} items, got {len(lines)} "
                         f"and {n_items}")
    return lines, sources


def _csv_rows(path: Path) -> tuple[list[list[str]], bytes]:
    raw = path.read_bytes()
    return list(csv.reader(io.StringIO(raw.decode("utf-8"), newline=""))), raw


def extract_mmlu(root: Path) -> tuple[list[dict], dict[str, str]]:
    lines, sources = [], {}
    for test_csv in sorted((root / "mmlu" / "test").glob("*_test.csv")):
        subject = test_csv.name[: -len("_test.csv")]
        dev_csv = root / "mmlu" / "dev" / f"{subject}_dev.csv"
        test_rows, test_raw = _csv_rows(test_csv)
        dev_rows, dev_raw = _csv_rows(dev_csv)
        sources[f"mmlu/test/{test_csv.name}"] = _sha256(test_raw)
        sources[f"mmlu/dev/{dev_csv.name}"] = _sha256(dev_raw)
        lines.append({"subject": subject, "dev": dev_rows, "test": test_rows})
    if len(lines) != MMLU_SUBJECTS:
        raise SystemExit(f"{root / 'mmlu'}: expected {MMLU_SUBJECTS} subjects, got {len(lines)}")
    return lines, sources


def write_jsonl_gz(path: Path, lines: list[dict]) -> bytes:
    body = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(body)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--less-eval-dir", type=Path, required=True, help="a LESS data/eval folder")
    ap.add_argument("--out", type=Path, default=DATA_DIR)
    args = ap.parse_args(argv)
    manifest = {}
    for name, extract in (("bbh", extract_bbh), ("mmlu", extract_mmlu)):
        lines, sources = extract(args.less_eval_dir)
        data = write_jsonl_gz(args.out / FILES[name], lines)
        n_items = sum(len(x.get("examples") or x.get("test")) for x in lines)
        manifest[name] = {"file": FILES[name], "file_sha256": _sha256(data), "licence": LICENCES[name],
                          "n_subtasks": len(lines), "n_items": n_items, "source": "LESS data/eval layout",
                          "source_files_sha256": sources}
        print(f"{name}: {len(lines)} subtasks, {n_items} items -> {args.out / FILES[name]} ({len(data):,} bytes)")
    (args.out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
