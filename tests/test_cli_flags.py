"""Every `--flag` a message, docstring, help text, README or notebook quotes exists in the CLI (read from the
click command tree, not a list kept by hand), and `lessdb CMD ... --flag` quotes a flag of CMD; the options are
generated from the config dataclasses, and a library SettingError is shown with the user's flag names."""
from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from lessdb.cli.main import cli
from lessdb.cli.options import flag_name, setting_error_message
from lessdb.runs.config import PRESETS, LoraSettings, TrainingSettings, WarmupConfig, build_warmup_config
from lessdb.evaluate.config import EvalConfig
from lessdb.featurize.config import FeaturizeConfig
from lessdb.quickstart import QuickstartConfig
from lessdb.scale.options import RayOptions
from lessdb.selection.config import SelectConfig
from lessdb.settings import SettingError

ROOT = Path(__file__).resolve().parents[1]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
# flags of other programs that the docs quote (pip, pytest, python, git)
FOREIGN = {"--no-deps", "--upgrade", "--index-url", "--extra-index-url", "--user", "--break-system-packages",
           "--editable", "--version", "--help", "--cov", "--durations", "--maxfail", "--lf", "--nbmake",
           "--no-cache-dir", "--quiet", "--pre", "--with-gemma",   # --with-gemma: .ci/setup-venv's
           "--num-gpus", "--num-cpus"}                               # `ray start`'s, named in lessdb's messages


OTHER_PROGRAM = re.compile(r"\s*(?:\$ )?(?:ray|pip|python|git|aws|docker|pytest)\b")


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], set[str]]:
    out = {}
    for name, cmd in group.commands.items():
        path = prefix + (name,)
        flags = {opt for p in cmd.params if isinstance(p, click.Option) for opt in (*p.opts, *p.secondary_opts)}
        out[path] = flags
        if isinstance(cmd, click.Group):
            out.update(_commands(cmd, path))
    return out


COMMANDS = _commands(cli)
ROOT_FLAGS = {opt for p in cli.params for opt in (*p.opts, *p.secondary_opts)} | {"--help", "--version"}
ALL_FLAGS = set().union(*COMMANDS.values()) | ROOT_FLAGS


def _sources() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "lessdb").rglob("*.py")), *sorted((ROOT / "lessdb").rglob("*.md")),
             *sorted((ROOT / "cli").rglob("*.py")), *sorted((ROOT / "notebooks").glob("*.ipynb"))]
    # lessdb/data/ holds a maintainer's script with its own argparse flags
    return [f for f in files if f.exists() and "__pycache__" not in f.parts and "data" not in f.parts]


def _quoted_commands(text: str):
    """(command path, flags) of each `lessdb CMD [SUB] ...` on one line (up to a closing quote or backtick, a
    shell separator or a comment)."""
    for m in re.finditer(r"lessdb ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?([^`\"'\n&;|#]*)", text):
        first, second, rest = m.group(1), m.group(2), m.group(3)
        if (first, second) in COMMANDS:
            yield (first, second), FLAG.findall(rest)
        elif (first,) in COMMANDS:
            yield (first,), FLAG.findall((" " + second if second else "") + rest)


def test_every_quoted_flag_exists():
    unknown, misplaced = [], []
    for path in _sources():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{lineno}"
            # a line running a benchmark (python -m bench.NAME) or another program quotes that program's own flags
            foreign_line = "bench/" in line or "-m bench." in line or OTHER_PROGRAM.match(line)
            for flag in ([] if foreign_line else FLAG.findall(line)):
                if flag not in ALL_FLAGS and flag not in FOREIGN:
                    unknown.append(f"{where}: {flag}")
            for cmd, flags in _quoted_commands(line):
                for flag in flags:
                    if flag not in COMMANDS[cmd] | ROOT_FLAGS and flag not in FOREIGN:
                        misplaced.append(f"{where}: lessdb {' '.join(cmd)} has no {flag}")
    assert not unknown, "flags that no command has:\n" + "\n".join(unknown)
    assert not misplaced, "\n".join(misplaced)


def test_the_command_tree_is_read():
    # the test above is only as good as this tree: a few known flags must be in it, under the right command
    assert {"--grad", "--precision", "--no-bias-correction", "--shard"} <= COMMANDS[("featurize",)]
    assert {"--lora-r", "--target-modules", "--preset", "--resume"} <= COMMANDS[("warmup",)]
    assert {"-p", "--percentage", "-k", "--count", "--method-param"} <= COMMANDS[("select",)]
    assert {"--engine", "--ray-address", "--workers", "--gpus-per-worker", "--unit-rows",
            "--commit-units"} <= COMMANDS[("featurize",)]
    # repeatable options stay repeatable
    select_params = {p.opts[0]: p for p in cli.commands["select"].params if isinstance(p, click.Option)}
    assert select_params["--task"].multiple and select_params["--method-param"].multiple
    assert "--grad" not in COMMANDS[("select",)]


@pytest.mark.parametrize("cls,command", [(FeaturizeConfig, "featurize"), (EvalConfig, "eval"),
                                         (SelectConfig, "select"), (LoraSettings, "warmup"),
                                         (TrainingSettings, "train"), (RayOptions, "featurize"),
                                         (QuickstartConfig, "quickstart")])
def test_options_come_from_the_fields(cls, command):
    """Each CLI field of a config is an option of its command, with the field's default and help."""
    import dataclasses

    cmd = cli.commands[command]
    by_flag = {opt: p for p in cmd.params if isinstance(p, click.Option) for opt in (*p.opts, *p.secondary_opts)}
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True) or (cls is TrainingSettings and f.name == "max_grad_norm"):
            continue
        flag = flag_name(cls, f.name, "lora_" if cls is LoraSettings else "")
        assert flag in by_flag, f"{cls.__name__}.{f.name}: no {flag} on `lessdb {command}`"
        option = by_flag[flag]
        if f.name != "method_params":   # the field's help says it as a dict, the flag's as KEY=VALUE
            assert f.metadata["help"].split("  [")[0][:30] in (option.help or "")
        if cls in (FeaturizeConfig, EvalConfig, SelectConfig, RayOptions, QuickstartConfig) and isinstance(f.default, (int, float, str)) \
                and not isinstance(f.default, bool) and f.default is not None:
            assert option.default == f.default, f"{flag}: shown default {option.default!r} != field {f.default!r}"
        elif cls in (LoraSettings, TrainingSettings):
            assert option.default is None   # "not given": the preset's value, else the field's default
            assert f"[default: {f.metadata.get('show') or f.default}]" in option.help


def test_preset_help_is_generated_from_the_presets():
    help_text = next(p.help for p in cli.commands["warmup"].params if "--preset" in p.opts)
    for key, value in PRESETS["cpu-small"].items():
        assert f"{flag_name(WarmupConfig, key)} {value}" in help_text
    # and the preset really sets those fields
    cfg = build_warmup_config("p", preset="cpu-small")
    assert (cfg.lora.r, cfg.training.max_seq_length, cfg.max_examples) == (
        PRESETS["cpu-small"]["lora_r"], PRESETS["cpu-small"]["max_seq_length"], PRESETS["cpu-small"]["max_examples"])


def test_library_errors_name_fields_and_the_cli_shows_flags():
    with pytest.raises(SettingError) as info:
        FeaturizeConfig(run_id="r", grad_kind="nope", compute_dtype="fp8", dim=0).validate()
    message = str(info.value)
    assert "grad_kind 'nope'" in message and "compute_dtype 'fp8'" in message and "dim 0" in message
    shown = setting_error_message(info.value)
    assert "--grad 'nope'" in shown and "--precision 'fp8'" in shown and "--dim 0" in shown
    with pytest.raises(SettingError) as info:
        build_warmup_config("p", lora_r=0)
    assert str(info.value).startswith("r 0") and setting_error_message(info.value).startswith("--lora-r 0")
    with pytest.raises(SettingError) as info:
        EvalConfig(task="bbh").validate()
    assert setting_error_message(info.value).startswith("--run or --model must be given")


def test_cli_reports_a_setting_error_with_flags(tmp_path):
    from conftest import run_cli

    run_cli("init", workspace=tmp_path / "ws")
    proc = run_cli("featurize", "--run", "nope", "--dim", "0", workspace=tmp_path / "ws", check=False)
    assert proc.returncode == 1 and "Error: --dim 0: must be at least 1" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


# (arguments, what the CLI says, what a Python user of the same call reads): the library names fields, the CLI
# turns them into flags through its one mapping (cli/options.py flag_name)
ERRORS = [
    (("select", "--task", "bbh", "--method", "bm25", "--method-param", "zz=1"),
     "--method-param: method bm25 has no parameter 'zz'",
     lambda ws: ws.select("bbh", method="bm25", method_params={"zz": 1}),
     "method_params: method bm25 has no parameter 'zz'"),
    (("select", "--task", "toy:2", "--task", "bbh"),
     "target weights (--task NAME:WEIGHT) only apply to --balance proportional",
     lambda ws: ws.select(["toy:2", "bbh"]),
     "target weights (task NAME:WEIGHT) only apply to balance proportional"),
    (("select", "--task", "bbh"),
     "--method less needs a warmup run; run `lessdb warmup` first or pass --run",
     lambda ws: ws.select("bbh"),
     "method less needs a warmup run; run `lessdb warmup` first or pass run"),
    (("select", "--task", "bbh", "--method", "random", "--dedup-text", "0"),
     "--dedup-text 0.0: must be in (0, 1]",
     lambda ws: ws.select("bbh", method="random", dedup_text=0.0),
     "dedup_text 0.0: must be in (0, 1]"),
    (("train", "--selection", "random:0.5"),
     "--selection random:0.5 needs --pool: ingest a pool first",
     lambda ws: ws.train("random:0.5", progress=False),
     "selection random:0.5 needs pool: ingest a pool first"),
    (("select", "--task", "bbh", "--method", "bm25", "--method-param", "k1=x"),
     "--method-param: bm25 parameter k1='x': expected float",
     lambda ws: ws.select("bbh", method="bm25", method_params={"k1": "x"}),
     "method_params: bm25 parameter k1='x': expected float"),
]


def test_errors_name_flags_in_the_cli_and_fields_in_python(tmp_path):
    import lessdb
    from conftest import run_cli

    run_cli("init", workspace=tmp_path / "ws")
    ws = lessdb.Workspace.open(tmp_path / "ws")
    for args, cli_says, call, python_says in ERRORS:
        proc = run_cli(*args, workspace=tmp_path / "ws", check=False)
        assert proc.returncode == 1 and f"Error: {cli_says}" in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and "\x1f" not in proc.stderr
        with pytest.raises(SettingError) as info:
            call(ws)
        assert python_says in str(info.value) and "--" not in str(info.value).split("`")[0], str(info.value)
    assert ws.selections() == [] and ws.runs() == []   # nothing half-recorded


def test_every_field_a_message_names_is_a_flag():
    """Each `ref("field")` in the library names a setting that the CLI has a flag for."""
    from lessdb.runs.config import TrainConfig

    owners = (SelectConfig, TrainConfig, WarmupConfig, FeaturizeConfig, EvalConfig, RayOptions, None)
    refs = set()
    for path in (ROOT / "lessdb").rglob("*.py"):
        refs |= set(re.findall(r"\bref\(['\"](\w+)['\"]\)", path.read_text(encoding="utf-8")))
    assert {"pool", "run", "max_seq_length", "data_dir", "feature_set"} <= refs   # the scan finds them
    missing = sorted(name for name in refs if not any(flag_name(cls, name) in ALL_FLAGS for cls in owners))
    assert not missing, f"fields named in messages with no flag: {missing}"


def test_notes_name_fields_for_python_and_flags_for_the_cli():
    from lessdb.cli.options import shown_with_flags
    from lessdb.settings import FieldText, ref
    import copy

    note = FieldText(SelectConfig, f"pass {ref('feature_set')} to choose")
    assert note == "pass feature_set to choose" and shown_with_flags(note) == "pass --feature-set to choose"
    assert shown_with_flags(copy.deepcopy(note)) == "pass --feature-set to choose"   # asdict copies notes
    assert shown_with_flags("plain text") == "plain text"


def test_a_flag_whose_field_is_a_command_parameter_maps_by_name():
    """Errors of a command's own parameters (no config class) map `field` -> `--field`."""
    from lessdb.storage.object_store import parse_storage_options

    with pytest.raises(SettingError) as info:
        parse_storage_options(["aws_secret_access_key=x"])
    assert str(info.value).startswith("storage_option aws_secret_access_key: credentials are never stored")
    assert setting_error_message(info.value).startswith("--storage-option aws_secret_access_key:")
    assert "--storage-option" in COMMANDS[("init",)]
