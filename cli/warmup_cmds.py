"""Warmup commands: warmup (step 1 of LESS) and runs (list training runs with checkpoints and eta-bar)."""
from __future__ import annotations

import click

from ..runs.config import PRESETS, TrainingSettings, WarmupConfig, flat_settings
from .options import options_from_dataclass, preset_help
from .common import (lora_training_options, cli, emit, emit_run_summary, emit_table, json_option, open_workspace,
                     workspace_option)


@cli.command()
@options_from_dataclass(WarmupConfig, only=["pool", "model", "percentage", "max_examples"], unset=True)
@options_from_dataclass(TrainingSettings, only=["epochs", "seed"], unset=True)
@lora_training_options
@options_from_dataclass(WarmupConfig, only=["preset"], unset=True,
                        helps={"preset": preset_help(PRESETS, flat_settings(), WarmupConfig)})
@options_from_dataclass(WarmupConfig, only=["device", "run_id"], unset=True)
@click.option("--resume", is_flag=True, help="Continue an interrupted run (the --run-id one, else the latest "
              "unfinished run of --pool) from its last complete checkpoint.")
@workspace_option
@json_option
@click.pass_context
def warmup(ctx, workspace_override, as_json, **settings):
    """Step 1 of LESS: LoRA-train the base model on a random p% of a pool, saving a checkpoint (adapter +
    Adam state by parameter name) after every epoch and recording the mean learning rate of each epoch.
    Paper defaults; progress on stderr.

    \b
    Example:
        lessdb warmup --pool mypool --preset cpu-small
        lessdb warmup --pool mypool --percentage 0.05 --epochs 4 --seed 0
        lessdb warmup --resume --run-id warmup-20260101-120000-abc123
    """
    emit(open_workspace(ctx, workspace_override).warmup(**settings), as_json, emit_run_summary)


@cli.command()
@click.option("--kind", type=click.Choice(["warmup", "train"]), default=None, help="Only runs of this kind.")
@click.option("--pool", default=None, help="Only runs on this pool.")
@workspace_option
@json_option
@click.pass_context
def runs(ctx, workspace_override, as_json, **filters):
    """List training runs with their status, checkpoints and mean learning rate per epoch (eta-bar).

    \b
    Example:
        lessdb runs --kind warmup --json
    """
    emit(open_workspace(ctx, workspace_override).runs(**filters), as_json, _runs_table)


def _runs_table(rows) -> None:
    emit_table([{**r, "model": r["model_name"], "examples": r["n_examples"], "excluded": r["n_excluded"],
                 "checkpoints": len(r["checkpoints"]),
                 "eta_bar": " ".join(f"{c['epoch']}:{c['mean_lr']:.3g}" for c in r["checkpoints"])} for r in rows],
               ["run_id", "kind", "pool", "model", "status", "examples", "excluded", "checkpoints", "eta_bar",
                "created_at"])
