"""The package's import structure (issue 21): the layers declared in pyproject.toml hold (`lint-imports`, the
real import-linter over the real tree), every top-level module of lessdb is in a layer, no modules import each
other in a circle (inside a package as well as across: grimp's module graph, function-level imports included),
and nothing in lessdb imports the command line on top of it."""
from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def _contract(name_start: str) -> dict:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    return next(c for c in contracts if c["name"].startswith(name_start))


def test_lint_imports_keeps_every_contract():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "BROKEN" not in proc.stdout and "0 broken" in proc.stdout


def test_every_top_level_module_has_a_layer():
    """A new package or module under lessdb/ must say where it stands (else the layers contract ignores it)."""
    layered = {part.strip() for layer in _contract("The pipeline is layered")["layers"]
               for part in layer.replace(":", "|").split("|")}
    tops = {f"lessdb.{p.stem if p.is_file() else p.name}" for p in (ROOT / "lessdb").iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    unlisted = tops - layered - {"lessdb.data"}   # data/: package data and the maintainers' extraction scripts
    assert not unlisted, f"add these to the layers in pyproject.toml [tool.importlinter]: {sorted(unlisted)}"
    assert layered <= tops, f"layers that no longer exist: {sorted(layered - tops)}"


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_no_modules_import_each_other_in_a_circle():
    graph = grimp.build_graph("lessdb", cache_dir=None)
    assert len(graph.modules) > 100   # the whole tree was read
    cycles = _cycles(graph)
    details = []
    for component in cycles:
        ties = [f"{a} -> {b}" for a in component for b in graph.find_modules_directly_imported_by(a) if b in component]
        details.append(", ".join(ties))
    assert not cycles, "import cycles:\n" + "\n".join(details)


def test_the_cycle_finder_finds_a_circle():
    graph = grimp.ImportGraph()
    for module in ("p", "p.a", "p.b", "p.c", "p.d"):
        graph.add_module(module)
    for importer, imported in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.d", "p.a")):
        graph.add_import(importer=importer, imported=imported)
    assert _cycles(graph) == [["p.a", "p.b", "p.c"]]


def test_nothing_in_lessdb_imports_the_command_line():
    """cli/ is installed as lessdb.cli but lives outside lessdb/, so the layers contract cannot see it."""
    offenders = []
    for path in sorted((ROOT / "lessdb").rglob("*.py")):
        package = path.relative_to(ROOT).with_suffix("").parts[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or "" if not node.level else ".".join(
                    list(package[:len(package) - node.level + 1]) + ([node.module] if node.module else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            if any(n == "lessdb.cli" or n.startswith("lessdb.cli.") for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders
