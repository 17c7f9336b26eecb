"""Warmup commands: warmup (step 1 of LESS) and runs (list training runs with checkpoints and eta-bar)."""
from __future__ import annotations

import click

from ..choices import MODEL_HELP
from ..config import PRESETS
from .common import lora_training_options, cli, emit_json, emit_table, json_option, open_workspace, workspace_option


@cli.command()
@click.option("--pool", default=None, help="Pool to draw the warmup subset from.")
@click.option("--model", default=None, help=MODEL_HELP + " (default: smollm2-135m).")
@click.option("--percentage", type=float, default=None, help="Fraction of the pool to train on (default 0.05).")
@click.option("--max-examples", type=int, default=None, help="Cap on the subset size.")
@click.option("--epochs", type=int, default=None, help="Epochs = checkpoints N (default 4).")
@click.option("--seed", type=int, default=None, help="Seed of the subset draw, LoRA init, order, dropout (default 0).")
@lora_training_options
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
              help="cpu-small: a few minutes on a 2-core CPU (seq 256, LoRA r 8/alpha 32, <=64 examples, "
                   "2 epochs, batch 8 in micro-batches of 4). Explicit flags override it.")
@click.option("--device", default=None, help="auto (default: cuda with bf16 if available, else cpu), cpu, cuda.")
@click.option("--run-id", default=None, help="Name of the new run, or the run to --resume.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run (the --run-id one, else the latest "
              "unfinished run of --pool) from its last complete checkpoint.")
@workspace_option
@json_option
@click.pass_context
def warmup(ctx, pool, model, percentage, max_examples, epochs, seed, lora_r, lora_alpha, lora_dropout,
           target_modules, lr, warmup_ratio, batch_size, micro_batch_size, max_seq_length, preset, device, run_id,
           resume, workspace_override, as_json):
    """Step 1 of LESS: LoRA-train the base model on a random p% of a pool, saving a checkpoint (adapter +
    Adam state by parameter name) after every epoch and recording the mean learning rate of each epoch.
    Paper defaults; progress on stderr.

    \b
    Example:
        lessdb warmup --pool mypool --preset cpu-small
        lessdb warmup --pool mypool --percentage 0.05 --epochs 4 --seed 0
        lessdb warmup --resume --run-id warmup-20260101-120000-abc123
    """
    from ..warmup import warmup_command  # torch/transformers load only when this command runs

    summary = warmup_command(
        open_workspace(ctx, workspace_override), pool=pool, resume=resume, run_id=run_id, preset=preset,
        device=device, model=model, percentage=percentage, max_examples=max_examples, epochs=epochs, seed=seed,
        lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=target_modules, lr=lr,
        warmup_ratio=warmup_ratio, batch_size=batch_size, micro_batch_size=micro_batch_size,
        max_seq_length=max_seq_length)
    if as_json:
        emit_json(summary.as_dict())
        return
    click.echo(f"Run {summary.run_id}: {summary.model_name} on {summary.n_examples} examples of pool "
               f"{summary.pool} ({summary.n_excluded} excluded), {summary.total_steps} optimizer steps "
               f"(batch {summary.batch_size}), device {summary.device}")
    for note in summary.notes:
        click.echo(f"  note: {note}")
    emit_table(summary.checkpoints, ["epoch", "optimizer_step", "mean_lr", "train_loss", "path"])


@cli.command()
@click.option("--kind", type=click.Choice(["warmup", "train"]), default=None, help="Only runs of this kind.")
@click.option("--pool", default=None, help="Only runs on this pool.")
@workspace_option
@json_option
@click.pass_context
def runs(ctx, kind, pool, workspace_override, as_json):
    """List training runs with their status, checkpoints and mean learning rate per epoch (eta-bar).

    \b
    Example:
        lessdb runs --kind warmup --json
    """
    from ..storage.meta_runs import list_runs
    rows = list_runs(open_workspace(ctx, workspace_override), kind=kind, pool=pool)
    if as_json:
        emit_json(rows)
        return
    emit_table([{**r, "model": r["model_name"], "examples": r["n_examples"], "excluded": r["n_excluded"],
                 "checkpoints": len(r["checkpoints"]),
                 "eta_bar": " ".join(f"{c['epoch']}:{c['mean_lr']:.3g}" for c in r["checkpoints"])} for r in rows],
               ["run_id", "kind", "pool", "model", "status", "examples", "excluded", "checkpoints", "eta_bar",
                "created_at"])
