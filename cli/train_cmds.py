"""Train command: step 4 of LESS, LoRA fine-tuning on a selection (or the full / random baselines)."""
from __future__ import annotations

import click

from ..runs.config import PRESETS, TrainConfig, TrainingSettings, WarmupConfig, flat_settings
from .options import options_from_dataclass, preset_help
from .common import lora_training_options, cli, emit, emit_run_summary, json_option, open_workspace, workspace_option


@cli.command()
@options_from_dataclass(TrainConfig, only=["selection", "pool", "model"], unset=True,
                        helps={"pool": "Pool for full / random:P (default: the only pool); with --resume, whose "
                                       "latest unfinished run to continue."})
@options_from_dataclass(TrainingSettings, only=["epochs", "seed"], unset=True)
@lora_training_options
@options_from_dataclass(TrainConfig, only=["preset"], unset=True,
                        helps={"preset": preset_help(PRESETS, flat_settings(), WarmupConfig,
                                                     intro="The warmup's presets (an example cap does not apply).")})
@options_from_dataclass(TrainConfig, only=["device", "run_id"], unset=True)
@click.option("--resume", is_flag=True, help="Continue an interrupted train run (the --run-id one, else the "
              "latest unfinished one) from its last complete checkpoint, with its recorded settings, model and "
              "examples; only --run-id, --pool and --device may be given with it.")
@workspace_option
@json_option
@click.pass_context
def train(ctx, workspace_override, as_json, **settings):
    """Step 4 of LESS: LoRA-train a model on exactly the examples of a selection (same trainer, settings
    and checkpoints as warmup), recorded as a 'train' run linked to the selection. Progress on stderr.

    \b
    Example:
        lessdb train --selection bbh-less-5pct --preset cpu-small
        lessdb train --selection random:0.05 --pool mypool --seed 1
        lessdb train --selection full --pool mypool --model tiny --json
        lessdb train --selection bbh-less-5pct --model gemma3-270m --preset cpu-small
        lessdb train --resume --run-id train-20260101-120000-abc123
    """
    emit(open_workspace(ctx, workspace_override).train(**settings), as_json, emit_run_summary)
