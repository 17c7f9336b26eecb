"""Shared fixtures: real LanceDB + DuckDB workspaces in temporary directories; the skips for what a plain clone
may lack (reference data, optional components), each with its reason, counted at the end of every run."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

# Tiny models are all overhead: with 2 intra-op threads on a shared 2-core machine a batch took 40x longer
# (helper C: 29 s vs 0.7 s for one featurize run; a tiny warmup test here: 15.4 vs 2.7 CPU seconds). So every
# test process, and every CLI child it starts (they inherit the environment), computes with one thread unless
# OMP_NUM_THREADS says otherwise. Set before anything imports torch, which reads it once.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from lessdb import Workspace  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# A skip for something this checkout or machine lacks starts its reason with one of these, then "<what>; <how to
# provide it>": pytest_terminal_summary counts them, so a partial run never passes for a full one.
MISSING_DATA = "missing data"
MISSING_COMPONENT = "missing optional component"


def missing(kind: str, what: str, how: str) -> str:
    """A skip reason: `kind: what[: detail]; how to provide it` (the summary groups by `what`)."""
    return f"{kind}: {what}; {how}"


# LESS's reference `data/eval` folder (BBH, MMLU, TyDiQA as the LESS repository lays them out; see
# ../shared/data/README.md). Its validation files may not be copied into this project, so the tests that compare
# lessdb's built-in tasks and loaders with them read it from outside: $LESS_EVAL_DIR, else
# ../shared/data/less-eval beside the repository.
LESS_EVAL = Path(os.environ.get("LESS_EVAL_DIR") or REPO.parent / "shared" / "data" / "less-eval")


def _less_eval_missing() -> str | None:
    if LESS_EVAL.is_dir():
        return None
    where = (f"LESS_EVAL_DIR={os.environ['LESS_EVAL_DIR']} is not a folder" if os.environ.get("LESS_EVAL_DIR")
             else f"LESS_EVAL_DIR is unset and {LESS_EVAL} does not exist")
    return missing(MISSING_DATA, f"the LESS reference eval folder: {where} (it holds bbh/bbh-three-shot.json, "
                   "bbh/test/, bbh/cot-prompts/, mmlu/dev/, mmlu/test/, tydiqa/tydiqa-one-shot.json)",
                   "set LESS_EVAL_DIR to a copy of LESS's data/eval folder to run this test")


needs_less_eval = pytest.mark.skipif(_less_eval_missing() is not None, reason=_less_eval_missing() or "")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """After every run: the robustness suites' counts, then how many tests did not run and why."""
    _robustness_counts(terminalreporter)
    _not_a_full_run(terminalreporter, config)


def _not_a_full_run(terminalreporter, config) -> None:
    """How many tests did not run and why, in one visible block (nothing skips silently)."""
    by_kind: dict[str, Counter] = {MISSING_DATA: Counter(), MISSING_COMPONENT: Counter(), "other": Counter()}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        kind = next((k for k in (MISSING_DATA, MISSING_COMPONENT) if reason.startswith(k + ": ")), "other")
        what = re.split(r": |; | \(", reason[len(kind) + 2:])[0] if kind != "other" else reason
        by_kind[kind][what] += 1
    # under pytest-xdist the workers deselect (each the same items) and the controller only hears their number
    deselected = max(len(terminalreporter.stats.get("deselected", [])), _WORKERS_DESELECTED[0])
    if not any(by_kind.values()) and not deselected:
        return
    terminalreporter.section("not a full run", sep="=", yellow=True, bold=True)
    for kind, label in ((MISSING_DATA, "for missing data"), (MISSING_COMPONENT, "for missing optional components"),
                        ("other", "for other reasons")):
        if by_kind[kind]:
            parts = ", ".join(f"{what} ({n})" for what, n in by_kind[kind].most_common())
            terminalreporter.line(f"{sum(by_kind[kind].values())} skipped {label}: {parts}", yellow=True)
    if by_kind[MISSING_DATA] or by_kind[MISSING_COMPONENT]:
        terminalreporter.line("  (-rs lists each skip with what is missing and how to provide it; README "
                              "\"Development\")")
    if deselected:
        how = " ".join(f"{flag} {value!r}" for flag, value in (("-m", config.getoption("markexpr")),
                                                              ("-k", config.getoption("keyword"))) if value)
        terminalreporter.line(f"{deselected} deselected by {how}: the full suite is `python -m pytest` "
                              "(what .ci/run runs)", yellow=True)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for the module even where OMP_NUM_THREADS asks for more (see the top of this file).
    Restored after the module."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    return Workspace.init(tmp_path / "ws")


def write_jsonl(path: Path, records) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write((rec if isinstance(rec, str) else json.dumps(rec)) + "\n")
    return path


def run_cli(*args, workspace: Path | None = None, check: bool = True, env=None) -> subprocess.CompletedProcess:
    """Run the real `lessdb` console script in a subprocess, as a user would."""
    cmd = [sys.executable, "-m", "lessdb.cli.main", *map(str, args)]
    full_env = dict(os.environ, **(env or {}))
    if workspace is not None:
        full_env["LESSDB_WORKSPACE"] = str(workspace)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"lessdb {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


_DESELECTED = [0]           # items this process deselected
_WORKERS_DESELECTED = [0]   # (controller) the most any xdist worker deselected


def pytest_deselected(items):
    _DESELECTED[0] += len(items)


def pytest_sessionfinish(session):
    """Under pytest-xdist each worker counts its own tests: it hands its counts to the controller."""
    import suite_tally

    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["suite_tally"] = dict(suite_tally.COUNTS)
        session.config.workeroutput["deselected"] = _DESELECTED[0]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """The controller adds up the counts of each worker as it finishes (an xdist hook; absent without xdist)."""
    import suite_tally

    output = getattr(node, "workeroutput", None) or {}
    for what, n in output.get("suite_tally", {}).items():
        suite_tally.add(what, n)
    _WORKERS_DESELECTED[0] = max(_WORKERS_DESELECTED[0], output.get("deselected", 0))


def _robustness_counts(terminalreporter) -> None:
    """The robustness suites' counts (tests/suite_tally.py), when any test added to them (all workers' under xdist)."""
    import suite_tally

    if suite_tally.COUNTS:
        terminalreporter.section("robustness counts")
        for line in suite_tally.lines():
            terminalreporter.write_line(line)
