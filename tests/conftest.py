"""Shared fixtures: real LanceDB + DuckDB workspaces in temporary directories."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lessdb import Workspace

REPO = Path(__file__).resolve().parents[1]
LESS_EVAL = Path(os.environ.get("LESS_EVAL_DIR", REPO.parent / "shared" / "data" / "less-eval"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models are all overhead: with 2 intra-op threads on a shared 2-core machine a batch took 40x
    longer (helper C measured 29 s vs 0.7 s for the same featurize run). Restored after the module."""
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


def pytest_terminal_summary(terminalreporter):
    """The robustness suites' counts (tests/suite_tally.py), when any test added to them."""
    import suite_tally

    if suite_tally.COUNTS:
        terminalreporter.section("robustness counts")
        for line in suite_tally.lines():
            terminalreporter.write_line(line)
