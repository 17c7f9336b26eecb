"""One front door (in the style of sqlite-utils' tests/test_docs.py): every click command, subcommands included,
is a skin over the `Workspace` method of its name (`lessdb.api.method_name`); both have help; the README names
the command and its Python API table maps it to that method; every option the command parses is a setting the
method takes; every method refuses an unknown keyword the same way; every config is in `lessdb.config` with its
settings in `help()`; and the notebooks and the README's Python block reach lessdb only through its top-level
names."""
from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import pydoc
import re
import tomllib
from pathlib import Path

import click
import pytest

import lessdb
from lessdb.api import UnknownSettingError, method_name
from lessdb.cli.main import cli
from lessdb.config import CONFIGS
from lessdb.settings import SettingError

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> dict[str, click.Command]:
    out = {}
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out.update(_commands(cmd, prefix + (name,)))
        else:
            out[" ".join(prefix + (name,))] = cmd
    return out


COMMANDS = _commands(cli)
# options that only change how a command prints, not what its method does
DISPLAY_ONLY = {"workspace_override", "as_json", ("tasks", "verbose"), ("task show", "full")}


def _method(command: str):
    return getattr(lessdb.Workspace, method_name(command))


def test_the_command_tree_is_read():
    assert len(COMMANDS) >= 29 and {"task add", "task show", "eval", "feature-sets", "embed"} <= set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_is_a_documented_method(command):
    cmd = COMMANDS[command]
    method = _method(command)
    assert (cmd.help or "").strip(), f"`lessdb {command}` has no help"
    assert (method.__doc__ or "").strip(), f"Workspace.{method.__name__} has no docstring"
    assert f"lessdb {command}" in README, f"the README never names `lessdb {command}`"
    # the skin calls its method (and so no other stage function does the work)
    source = inspect.getsource(cmd.callback)
    assert re.search(rf"\.{method.__name__}\(", source), f"`lessdb {command}` does not call .{method.__name__}()"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_is_a_setting_of_the_method(command):
    """What the command parses, the method takes under the same name (the CLI passes it straight through)."""
    accepted = set(_method(command).accepted())
    for param in COMMANDS[command].params:
        if param.name in DISPLAY_ONLY or (command, param.name) in DISPLAY_ONLY:
            continue
        assert param.name in accepted, f"`lessdb {command}` parses {param.name!r}, which " \
                                       f"{method_name(command)}() does not take"


def test_the_readme_table_maps_every_command_to_its_method():
    section = README.split("## Python API", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `lessdb ([a-z -]+)` \| `(?:ws|Workspace)\.(\w+)\(", section, flags=re.M))
    assert rows == {command: method_name(command) for command in COMMANDS}


def _calls() -> list[str]:
    """Every command's method, and the methods without a command of their own."""
    return sorted({method_name(c) for c in COMMANDS} | {"replay", "open"})


@pytest.mark.parametrize("name", _calls())
def test_an_unknown_keyword_is_refused_the_same_way_by_every_method(name, workspace):
    """Checked before anything runs (no positional arguments needed), with the method's name and what it takes."""
    before = sorted(p.name for p in workspace.root.rglob("*"))
    with pytest.raises(UnknownSettingError) as info:
        getattr(workspace, name)(zz_not_a_setting=1)
    message = str(info.value)
    assert message.startswith(f"{name}() has no setting 'zz_not_a_setting' (it has ")
    assert isinstance(info.value, lessdb.InputError) and isinstance(info.value, TypeError)
    assert info.value.exit_code == 2
    assert sorted(p.name for p in workspace.root.rglob("*")) == before   # nothing written


def test_unknown_keywords_suggest_close_matches(workspace):
    with pytest.raises(lessdb.InputError, match=r"select\(\) has no setting 'n' \(it has task, .*percentage, count"):
        workspace.select(task="bbh", n=5)
    with pytest.raises(UnknownSettingError, match=r"did you mean 'percentage'\?"):
        workspace.select(task="bbh", percent=0.1)
    with pytest.raises(UnknownSettingError, match=r"warmup\(\) has no setting 'lora_rank' \(did you mean 'lora_r"):
        workspace.warmup("p", lora_rank=8)
    with pytest.raises(UnknownSettingError, match=r"did you mean 'top'\?"):
        workspace.show("x", topp=3)
    # a setting that belongs to another command: train says why (its own message, let through)
    with pytest.raises(SettingError, match="is a warmup setting"):
        workspace.train("random:0.5", percentage=0.1)


def _settings_classes() -> set[str]:
    """Every dataclass in lessdb whose fields are declared with `setting(...)` (read from the source)."""
    found = set()
    for path in (ROOT / "lessdb").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                    isinstance(s, ast.AnnAssign) and isinstance(s.value, ast.Call)
                    and getattr(s.value.func, "id", "").endswith("setting") for s in node.body):
                found.add(node.name)
    return found


def test_every_config_is_in_lessdb_config():
    assert {"SelectConfig", "FeaturizeConfig", "EvalConfig", "WarmupConfig", "EmbedConfig"} <= _settings_classes()
    assert _settings_classes() <= set(CONFIGS), "add it to lessdb.config.CONFIGS"
    assert set(CONFIGS) <= set(dir(lessdb.config))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_help_lists_every_setting(name):
    """The docstring is generated from the fields (settings.settings_doc): each field with its type, default,
    flag (where it has one) and help; the class's own docstring stays on top."""
    cls = getattr(lessdb.config, name)   # lazily loaded from its stage
    doc = cls.__doc__
    flat = " ".join(doc.split())
    for f in dataclasses.fields(cls):
        entry = doc.split(f"\n  {f.name}: ", 1)
        assert len(entry) == 2, f"{name}.{f.name} missing from help()"
        assert " ".join(f.metadata.get("help", "").split()) in flat
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        assert (f"[{flag}]" in entry[1].split("\n")[0]) == f.metadata.get("cli", True)
    assert "Settings (keyword arguments" in pydoc.render_doc(cls, renderer=pydoc.plaintext)


def test_help_of_a_config_after_a_plain_import(tmp_path):
    import subprocess
    import sys

    code = ("import lessdb, pydoc, sys; t = pydoc.render_doc(lessdb.config.SelectConfig, renderer=pydoc.plaintext);"
            "print('percentage: float | None = 0.05  [--percentage]' in t, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False"]


def test_embed_poolings_match_the_embedder():
    from lessdb.featurize.embeddings import POOLINGS

    choices = dataclasses.fields(lessdb.config.EmbedConfig)[1].metadata["choices"]
    assert tuple(POOLINGS) == choices


# -- one parser, one error ----------------------------------------------------------------------------------
def test_epochs_and_shards_parse_the_same_in_python_and_on_the_command_line(workspace):
    from conftest import run_cli
    from lessdb.api.base import make_config

    cfg = make_config(lessdb.config.FeaturizeConfig, {"checkpoints": "1,2", "shard": "1/4"}, run_id="r")
    assert (cfg.checkpoints, cfg.shard) == ((1, 2), (1, 4))
    assert make_config(lessdb.config.SelectConfig, {"checkpoints": " 2, 3"}).checkpoints == [2, 3]
    assert make_config(lessdb.config.SelectConfig, {"checkpoints": "all"}).checkpoints is None
    said = set()
    for args in (("featurize", "--run", "r"), ("select", "--task", "bbh")):
        proc = run_cli(*args, "--checkpoints", "1,x", workspace=workspace.root, check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        said.add(proc.stderr.strip())
    assert said == {"Error: --checkpoints '1,x': expected 'all' or epochs like 1,2"}
    with pytest.raises(SettingError, match=r"^checkpoints '1,x': expected 'all' or epochs like 1,2$"):
        workspace.select(task="bbh", checkpoints="1,x")
    for args in (("featurize", "--run", "r"), ("embed", "--run", "r")):
        proc = run_cli(*args, "--shard", "3", workspace=workspace.root, check=False)
        assert proc.returncode == 1 and "Error: --shard '3': expected i/n" in proc.stderr, proc.stderr


def test_ingest_checks_its_arguments_once(workspace, tmp_path):
    """The checks live in ws.ingest: Python reads field names, the CLI its flags, both exit 2 as bad usage."""
    from conftest import run_cli, write_jsonl

    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c"}])
    cases = [((), {}, "no input files (or use {builtin} sharegpt)"),
             ((data,), {"builtin": "sharegpt"}, "give either files or {builtin}, not both"),
             ((data,), {}, "{pool} is required when ingesting files")]
    for files, kwargs, message in cases:
        with pytest.raises(lessdb.InputError) as info:
            workspace.ingest(list(files), **kwargs)
        assert str(info.value) == message.format(builtin="builtin", pool="pool")
        flags = [x for k, v in kwargs.items() for x in (f"--{k}", v)]
        proc = run_cli("ingest", *files, *flags, workspace=workspace.root, check=False)
        assert proc.returncode == 2 and proc.stderr.strip() == "Error: " + message.format(builtin="--builtin",
                                                                                           pool="--pool")
    assert workspace.pools() == []


# -- what the methods return ----------------------------------------------------------------------------------
def test_records_rows_and_tables(workspace, tmp_path):
    """The rule: a record has as_dict() (the command's --json), rows are lists of dicts, sql is Arrow."""
    import pyarrow as pa
    from conftest import run_cli, write_jsonl
    from lessdb.storage.user_sql import run_readonly_sql

    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"p{i}", "completion": "c"} for i in range(3)])
    report = workspace.ingest([data], pool="p", progress=False)
    assert report.as_dict()["n_added"] == 3
    cli_json = json.loads(run_cli("init", "--json", workspace=workspace.root).stdout)
    assert workspace.as_dict() == cli_json
    for method, args in (("pools", ()), ("tasks", ()), ("runs", ()), ("feature_sets", ()), ("selections", ()),
                         ("evals", ()), ("versions", ())):
        rows = getattr(workspace, method)(*args)
        assert isinstance(rows, list) and all(type(r) is dict for r in rows)
        command = method.replace("_", "-")
        assert json.loads(json.dumps(rows, default=str)) == json.loads(
            run_cli(command, "--json", workspace=workspace.root).stdout), method
    shown = workspace.task_show("bbh")
    assert shown.name == "bbh" and json.loads(json.dumps(shown.as_dict(), default=str)) == json.loads(
        run_cli("task", "show", "bbh", "--json", workspace=workspace.root).stdout)
    vac = workspace.vacuum(dry_run=True)
    assert set(vac.as_dict()) == set(json.loads(run_cli("vacuum", "--dry-run", "--json",
                                                        workspace=workspace.root).stdout))
    table = workspace.sql("SELECT pool, count(*) AS n FROM candidates GROUP BY pool", limit=1)
    assert isinstance(table, pa.Table) and table.to_pylist() == [{"pool": "p", "n": 3}]
    # `lessdb sql` prints what DuckDB's own rows gave before it read Arrow: a sum (HUGEINT) as a JSON number,
    # a map as an object
    query = "SELECT pool, count(*) AS n, sum(total_chars) AS chars, histogram(pool) AS h FROM candidates GROUP BY 1"
    printed = json.loads(run_cli("sql", query, "--json", workspace=workspace.root).stdout)
    assert printed == json.loads(json.dumps(run_readonly_sql(workspace, query).as_dicts(), default=str))
    assert isinstance(printed[0]["chars"], int) and printed[0]["h"] == {"p": 3}


# -- notebooks and README use the front door ---------------------------------------------------------------------
def _notebook_code(path: Path) -> str:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))


def _lessdb_imports(code: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lessdb":
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "lessdb"]
    return found


# lessdb's top-level names: the Workspace and errors, and the `report` package of audit tables and plots
TOP_LEVEL = {"lessdb", "lessdb.report"}


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_import_only_top_level_names(path):
    assert set(_lessdb_imports(_notebook_code(path))) <= TOP_LEVEL


def test_readme_python_block_uses_only_lessdb_top_level_names():
    block = re.findall(r"```python\n(.*?)```", README.split("## Python API", 1)[1], flags=re.S)[0]
    assert _lessdb_imports(block) == ["lessdb"]
    used = {node.attr for node in ast.walk(ast.parse(block)) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id == "lessdb"}
    assert used <= set(lessdb.__all__), used


def test_the_notebook_extra_installs_what_the_notebooks_import():
    """Every third-party module a notebook imports comes with lessdb or its `notebook` extra (which `test`
    includes, so the suite runs the notebooks with exactly that)."""
    import sys
    from importlib.metadata import packages_distributions

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert "lessdb[notebook]" in extras["test"]

    def names(reqs):
        return {re.split(r"[\[<>=!~ ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}

    provided = names(project["dependencies"]) | names(extras["notebook"])
    assert {"pandas", "nbclient", "nbformat", "ipykernel", "matplotlib"} <= provided
    dists = packages_distributions()
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        code = _notebook_code(path)
        modules = {n.module.split(".")[0] for n in ast.walk(ast.parse(code)) if isinstance(n, ast.ImportFrom)}
        modules |= {a.name.split(".")[0] for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Import)
                    for a in n.names}
        modules |= {"matplotlib_inline"} if "%matplotlib inline" in path.read_text() else set()
        for module in modules - set(sys.stdlib_module_names) - {"lessdb"}:
            owners = {d.lower().replace("_", "-") for d in dists.get(module, [])}
            # matplotlib_inline comes with ipykernel
            assert owners & provided or (module == "matplotlib_inline" and "ipykernel" in provided), \
                f"{path.name} imports {module}, which neither lessdb nor its notebook extra installs"
