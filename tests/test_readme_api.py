"""The README's "Python API" block runs as it stands (tiny model, 100 builtin ShareGPT conversations), in a fresh
directory, and what it printed and wrote is checked against the workspace read back through the CLI."""
from __future__ import annotations

import json
import re

from conftest import REPO, run_cli


def _python_api_block() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the Python API section has one python block"
    return blocks[0]


def test_readme_python_api_block_runs(tmp_path, monkeypatch, one_torch_thread, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_python_api_block(), "README.md (Python API)", "exec"), namespace)
    ws, sel, trained = namespace["ws"], namespace["sel"], namespace["trained"]
    out = capsys.readouterr().out
    assert sel.selection_id in out
    # the API and the CLI see the same workspace
    listed = json.loads(run_cli("selections", "--json", workspace=ws.root).stdout)
    assert {s["selection_id"] for s in listed} >= {sel.selection_id, namespace["bm25"].selection_id}
    assert namespace["bm25"].provenance["params"]["bm25"]["k1"] == 1.2   # typed and recorded
    runs = {r["run_id"]: r for r in json.loads(run_cli("runs", "--json", workspace=ws.root).stdout)}
    assert runs[trained.run_id]["kind"] == "train" and runs[trained.run_id]["selection_id"] == sel.selection_id
    exported = (tmp_path / "bbh-5pct.jsonl").read_text().splitlines()
    assert len(exported) == sel.k
    # sql binds parameters (no pasted ids) and answers as Arrow
    top = namespace["top"]
    assert top.num_rows == sel.k and top.column("rank").to_pylist() == list(range(1, sel.k + 1))
    assert ws.sql("SELECT count(*) AS n FROM selections WHERE method = $m", params={"m": "bm25"}).to_pylist() == \
        [{"n": 1}]
    assert "target_loss" in " ".join(namespace["result"].results)
    # records: attributes and as_dict() are the command's --json
    shown = json.loads(run_cli("show", "bbh-5pct", "--top", "3", "--json", workspace=ws.root).stdout)
    assert set(namespace["shown"].as_dict()) == set(shown) and namespace["shown"].size == shown["size"] == sel.k
    assert [m["candidate_id"] for m in namespace["why"].members] == [m.candidate_id for m in sel.members[:2]]
    assert "select() has no setting 'n'" in out and "count" in out and "percentage" in out
