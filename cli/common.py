"""Shared CLI plumbing: the root group, the --workspace/--json options and output helpers."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lessdb")
@click.option("--workspace", "-w", type=click.Path(path_type=Path), default=None,
              help="Workspace directory (default: $LESSDB_WORKSPACE or ./lessdb-workspace).")
@click.pass_context
def cli(ctx, workspace):
    """lessdb: pick the right 5% of an instruction pool for one capability (LESS), with every
    selection recorded and reproducible.

    Pipeline: init -> ingest -> warmup -> featurize -> select -> show/export.
    """
    ctx.obj = {"workspace": workspace}


def workspace_path(ctx: click.Context, override: Path | None = None) -> Path:
    from ..workspace import default_workspace_path

    return override or ctx.find_root().obj.get("workspace") or default_workspace_path()


def open_workspace(ctx: click.Context, override: Path | None = None, damaged_ok: bool = False):
    from ..workspace import Workspace

    return Workspace.open(workspace_path(ctx, override), damaged_ok=damaged_ok)


workspace_option = click.option("--workspace", "-w", "workspace_override", type=click.Path(path_type=Path),
                                default=None, help="Workspace directory (overrides the global option).")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")


def emit_json(obj, err: bool = False) -> None:
    """`err`: on stderr (when stdout carries the command's data, e.g. `--output -`)."""
    click.echo(json.dumps(obj, indent=2, default=str), err=err)


def emit(result, as_json: bool, human=None, columns: list[str] | None = None, err: bool = False) -> None:
    """Print what a Workspace method returned: with --json its JSON (a record's `as_dict()`, rows as they are),
    else `human(result)`, or rows as a table (of `columns`). `err`: the JSON on stderr (stdout carries data)."""
    if as_json:
        emit_json(result.as_dict() if hasattr(result, "as_dict") else result, err=err)
    elif human is not None:
        human(result)
    else:
        emit_table(result, columns)


def emit_table(rows: list[dict], columns: list[str] | None = None) -> None:
    """A plain aligned text table (no dependency), for humans; --json is for scripts."""
    if not rows:
        click.echo("(no rows)")
        return
    columns = columns or list(rows[0].keys())
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    click.echo("  ".join("-" * w for w in widths))
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def emit_run_summary(summary) -> None:
    """A warmup's or train run's RunSummary for humans: what it trained, its notes, its checkpoints."""
    click.echo(summary.headline())
    for note in summary.notes:
        click.echo(f"  note: {note}")
    emit_table(summary.checkpoints, ["epoch", "optimizer_step", "mean_lr", "train_loss", "path"])


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."



def lora_training_options(command):
    """The LoRA and optimizer flags shared by `warmup` and `train` (same trainer, same meaning), generated from
    LoraSettings and TrainingSettings. None means "not given": the preset's value, else the field's default."""
    from ..runs.config import LORA_PREFIX, LoraSettings, TrainingSettings
    from .options import options_from_dataclass

    command = options_from_dataclass(TrainingSettings, only=["lr", "warmup_ratio", "batch_size", "micro_batch_size",
                                                             "max_seq_length"], unset=True)(command)
    return options_from_dataclass(LoraSettings, prefix=LORA_PREFIX, unset=True)(command)
