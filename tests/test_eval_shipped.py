"""The BBH and MMLU test items shipped with lessdb (package data) equal the LESS reference folder, carry
their licence notices, and let `lessdb eval --task bbh|mmlu` run without --data-dir."""
from __future__ import annotations

import gzip
import json
from importlib import resources

import pytest

from lessdb.evaluate import shipped
from lessdb.evaluate.bbh import bbh_prompt
from lessdb.evaluate.sources import load_test_set
from lessdb.evaluate.mmlu import mmlu_prompt

from conftest import LESS_EVAL, needs_less_eval, run_cli

DATA = resources.files("lessdb.data")


def _manifest() -> dict:
    return json.loads(DATA.joinpath(shipped.MANIFEST).read_text(encoding="utf-8"))


def test_shipped_items_have_their_counts_and_licences():
    manifest = _manifest()
    bbh, mmlu = shipped.shipped_bbh(), shipped.shipped_mmlu()
    assert len(bbh.subtasks) == 27 and len(bbh.items) == 6511 == manifest["bbh"]["n_items"]
    assert len(mmlu.subtasks) == 57 and len(mmlu.items) == manifest["mmlu"]["n_items"]
    assert all(len(v) == 5 for v in mmlu.shots.values())
    for name, who in (("bbh", "suzgunmirac"), ("mmlu", "Dan Hendrycks")):
        notice = DATA.joinpath(manifest[name]["licence"]).read_text(encoding="utf-8")
        assert "MIT License" in notice and f"Copyright (c) 20" in notice and who in notice
    # the BBH canary travels with the items
    with gzip.open(DATA.joinpath(manifest["bbh"]["file"]).open("rb"), "rt", encoding="utf-8") as fh:
        assert all("canary GUID 26b5c67b" in json.loads(line)["canary"] for line in fh)


@needs_less_eval
@pytest.mark.parametrize("task", ["bbh", "mmlu"])
def test_shipped_items_equal_the_reference_folder(task):
    ours, ref = load_test_set(task), load_test_set(task, LESS_EVAL)
    assert ours.source.startswith("lessdb:") and not ref.source.startswith("lessdb:")
    assert ours.items == ref.items and ours.shots == ref.shots
    assert ours.items_sha256 == ref.items_sha256   # an eval with either source records the same test set
    # and so the prompts a model sees are the same
    for it in ours.items[::97]:
        if task == "bbh":
            assert bbh_prompt(ours.shots[it.subtask], it) == bbh_prompt(ref.shots[it.subtask], it)
        else:
            assert mmlu_prompt(it.subtask, ours.shots[it.subtask], it) == mmlu_prompt(it.subtask, ref.shots[it.subtask], it)
    # the extraction recorded the sha256 of every source file it read: they still match the folder
    for rel, digest in _manifest()[task]["source_files_sha256"].items():
        import hashlib

        assert hashlib.sha256((LESS_EVAL / rel).read_bytes()).hexdigest() == digest, rel


@pytest.mark.slow   # 57 MMLU items with 5-shot prompts through the CLI: ~8 CPU s
def test_eval_mmlu_without_data_dir_on_the_tiny_model(workspace):
    proc = run_cli("eval", "--model", "tiny", "--task", "mmlu", "--limit", "1", "--metrics", "task", "--json",
                   workspace=workspace.root)
    summary = json.loads(proc.stdout)
    expected = load_test_set("mmlu", limit=1)
    assert summary["n_items"] == 57 and summary["items_sha256"] == expected.items_sha256
