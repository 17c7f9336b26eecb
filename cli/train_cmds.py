"""Train command: step 4 of LESS, LoRA fine-tuning on a selection (or the full / random baselines)."""
from __future__ import annotations

import click

from ..choices import MODEL_HELP
from ..config import PRESETS
from .common import lora_training_options, cli, emit_json, emit_table, json_option, open_workspace, workspace_option


@cli.command()
@click.option("--selection", "selection", default=None,
              help="A selection id or name (see `lessdb selections`), 'full' (every candidate of --pool) or "
                   "'random:P' (a seeded random fraction P of --pool, e.g. random:0.05). Required unless --resume.")
@click.option("--pool", default=None, help="Pool for full / random:P (default: the only pool); with --resume, "
              "whose latest unfinished run to continue.")
@click.option("--model", default=None, help=MODEL_HELP + " (default: the selection's warmup model, else "
              "smollm2-135m). A model other than the selection's is LESS-T and is recorded as a transfer.")
@click.option("--epochs", type=int, default=None, help="Epochs = checkpoints (default 4).")
@click.option("--seed", type=int, default=None, help="Seed of LoRA init, order, dropout and random:P (default 0).")
@lora_training_options
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
              help="The warmup's presets (cpu-small: seq 256, LoRA r 8/alpha 32, 2 epochs, batch 8 in "
                   "micro-batches of 4; its example cap does not apply). Explicit flags override it.")
@click.option("--device", default=None, help="auto (default: cuda with bf16 if available, else cpu), cpu, cuda.")
@click.option("--run-id", default=None, help="Name of the new run, or the run to --resume.")
@click.option("--resume", is_flag=True, help="Continue an interrupted train run (the --run-id one, else the "
              "latest unfinished one) from its last complete checkpoint, with its recorded settings, model and "
              "examples; only --run-id, --pool and --device may be given with it.")
@workspace_option
@json_option
@click.pass_context
def train(ctx, selection, pool, model, epochs, seed, lora_r, lora_alpha, lora_dropout, target_modules, lr,
          warmup_ratio, batch_size, micro_batch_size, max_seq_length, preset, device, run_id, resume,
          workspace_override, as_json):
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
    from ..train import train_command  # torch/transformers load only when this command runs

    summary = train_command(
        open_workspace(ctx, workspace_override), selection=selection, resume=resume, pool=pool, model=model,
        preset=preset, device=device, run_id=run_id, epochs=epochs, seed=seed, lora_r=lora_r, lora_alpha=lora_alpha,
        lora_dropout=lora_dropout, target_modules=target_modules, lr=lr, warmup_ratio=warmup_ratio,
        batch_size=batch_size, micro_batch_size=micro_batch_size, max_seq_length=max_seq_length)
    if as_json:
        emit_json(summary.as_dict())
        return
    click.echo(f"Run {summary.run_id}: {summary.model_name} on {summary.n_examples} examples of "
               f"{summary.selection} (pool {summary.pool}; {summary.n_excluded} excluded)"
               f"{' [LESS-T transfer]' if summary.is_transfer else ''}, {summary.total_steps} optimizer steps "
               f"(batch {summary.batch_size}), device {summary.device}")
    for note in summary.notes:
        click.echo(f"  note: {note}")
    emit_table(summary.checkpoints, ["epoch", "optimizer_step", "mean_lr", "train_loss", "path"])
