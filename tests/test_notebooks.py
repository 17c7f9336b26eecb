"""The analyst notebooks run headless, end to end, against a workspace built by the real pipeline with the tiny
model (tests/report_workspace.py), so they cannot rot. The workspace path reaches them through LESSDB_WORKSPACE,
as it would for a user."""
from __future__ import annotations

import pytest

from conftest import MISSING_COMPONENT, REPO, missing
from report_workspace import built_workspace

nbformat = pytest.importorskip("nbformat", reason=missing(MISSING_COMPONENT, "nbformat", "pip install -e '.[test]'"))
nbclient = pytest.importorskip("nbclient", reason=missing(MISSING_COMPONENT, "nbclient", "pip install -e '.[test]'"))

NOTEBOOKS = {"audit_selection.ipynb": 3, "compare_methods.ipynb": 3}   # notebook -> plots it must draw
SHOWS = {"audit_selection.ipynb": "top validation examples",           # the explanations cell ran
         "compare_methods.ipynb": "task arith+quiz"}                   # the multi-target cell found the mix


@pytest.fixture(scope="module")
def demo_path(tmp_path_factory):
    path, _ = built_workspace(tmp_path_factory.mktemp("notebooks"))
    return path


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs_end_to_end(name, demo_path, tmp_path, monkeypatch):
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), "no parameter cell"
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    monkeypatch.setenv("LESSDB_WORKSPACE", str(demo_path))
    monkeypatch.delenv("LESSDB_SELECTION", raising=False)
    monkeypatch.delenv("LESSDB_TASK", raising=False)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()   # raises CellExecutionError with the failing cell's traceback
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= NOTEBOOKS[name]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert str(demo_path) in text   # it opened the workspace it was pointed at
    tables = [o for o in outputs if "text/html" in o.get("data", {})]
    assert tables, "no tables shown"
    assert SHOWS[name] in text + "".join(o["data"]["text/html"] for o in tables)
