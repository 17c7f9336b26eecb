"""Listing and audit commands start without the heavy libraries: `lessdb --help`, `tasks`, `pools`,
`selections`, `show`, `sql` (and the other listings) never import torch, lancedb, transformers or peft.

Each command runs in a fresh interpreter on a real workspace with real selections (the tiny pipeline of
report_workspace.py), through the real entry point; afterwards the child reports which modules it loaded.
Start-up times are measured by bench/cli_start.py, not here."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from report_workspace import built_workspace

HEAVY = ("torch", "lancedb", "transformers", "peft")
CHILD = """
import json, sys
from lessdb.cli.main import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code or 0
print("\\n" + json.dumps({"code": code, "loaded": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return built_workspace(tmp_path_factory.mktemp("light"))


def _run(root, *args) -> tuple[int, list[str], str]:
    proc = subprocess.run([sys.executable, "-c", CHILD, "--workspace", str(root), *args], capture_output=True,
                          text=True)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return report["code"], report["loaded"], proc.stdout + proc.stderr


@pytest.mark.parametrize("args", [
    ("--help",), ("tasks",), ("pools",), ("selections",), ("show", "arith-less"), ("diff", "arith-less", "arith-bm25"),
    ("sql", "SELECT pool, count(*) AS n FROM candidates GROUP BY pool"), ("runs",), ("feature-sets",), ("evals",),
    ("versions",)], ids=lambda a: a[0])
def test_light_command_imports_no_heavy_library(demo, args):
    root, info = demo
    code, loaded, output = _run(root, *args)
    assert code == 0, output
    assert loaded == [], f"lessdb {' '.join(args)} imported {loaded}"
    if args[0] == "show":
        assert info["selections"]["less"] in output and "Source mix" in output
    if args[0] == "sql":
        assert "demo" in output and "90" in output


def test_a_computing_command_still_loads_torch(demo):
    """The check can fail: `select` really needs torch (and records a selection)."""
    root, _ = demo
    code, loaded, output = _run(root, "select", "--task", "arith", "--method", "less", "--count", "3")
    assert code == 0, output
    assert "torch" in loaded


def test_builtin_pool_names_match_the_sources():
    from lessdb.choices import BUILTIN_POOL_NAMES
    from lessdb.ingest.pipeline import BUILTIN_SOURCES

    assert sorted(BUILTIN_POOL_NAMES) == sorted(BUILTIN_SOURCES)
