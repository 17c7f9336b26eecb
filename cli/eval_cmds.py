"""Evaluation commands: eval, evals, compare."""
from __future__ import annotations

from pathlib import Path

import click

from ..choices import DEFAULT_SAMPLE_SEED, METRIC_SETS, MODEL_HELP, TRUNCATION_SIDES
from .common import cli, emit_json, emit_table, json_option, open_workspace, workspace_option


@cli.command("eval")
@click.option("--run", "run_id", default=None, help="Training run to evaluate (base model + LoRA of a checkpoint).")
@click.option("--model", default=None, help="Evaluate a base model without LoRA instead: " + MODEL_HELP + ".")
@click.option("--task", required=True, help="bbh, mmlu, tydiqa or a custom task name (custom: target loss only).")
@click.option("--epoch", type=int, default=None, help="Checkpoint epoch (default: the run's last).")
@click.option("--split", default="test", show_default=True, help="Test split of the task metric.")
@click.option("--limit", type=int, default=None, help="At most N test items per subtask (seeded sample, recorded).")
@click.option("--seed", "sample_seed", type=int, default=DEFAULT_SAMPLE_SEED, show_default=True,
              help="Seed of the --limit sample.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Folder with the test items (a LESS data/eval folder; TyDiQA: its dev file or folder). "
                   "BBH and MMLU test items ship with lessdb: leave it out for those.")
@click.option("--metrics", type=click.Choice(METRIC_SETS), default="all", show_default=True,
              help="all: target loss and task metric; loss: target loss only; task: task metric only.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--max-new-tokens", type=int, default=None, help="Generation budget (default: BBH 512, TyDiQA 50).")
@click.option("--max-seq-length", type=int, default=2048, show_default=True, help="Truncation for the target loss.")
@click.option("--loss-truncation", type=click.Choice(TRUNCATION_SIDES), default="right", show_default=True,
              help="left keeps the last --max-seq-length tokens of each validation example (its completion and "
                   "question), as `select --val-truncation left`: a short window for long few-shot prompts on a CPU.")
@click.option("--device", default=None, help="cpu, cuda (default: cuda when available).")
@workspace_option
@json_option
@click.pass_context
def eval_cmd(ctx, run_id, model, task, epoch, split, limit, sample_seed, data_dir, metrics, batch_size,
             max_new_tokens, max_seq_length, loss_truncation, device, workspace_override, as_json):
    """Evaluate a trained run (or a base model) on a target task and record the results: target loss on the
    task's validation examples and the task metric on its test items (BBH exact match with 3-shot CoT,
    MMLU 5-shot accuracy, TyDiQA F1).

    \b
    Example:
        lessdb eval --run train-ab12 --task bbh --limit 10
        lessdb eval --model smollm2-135m --task mmlu --limit 5
    """
    from ..evaluate import EvalConfig, run_eval
    cfg = EvalConfig(task=task, run_id=run_id, model=model, epoch=epoch, split=split, limit=limit,
                     sample_seed=sample_seed, data_dir=data_dir, metrics=metrics, batch_size=batch_size,
                     max_new_tokens=max_new_tokens, max_seq_length=max_seq_length,
                     loss_truncation=loss_truncation, device=device)
    summary = run_eval(open_workspace(ctx, workspace_override), cfg)
    if as_json:
        emit_json(summary.as_dict())
        return
    what = f"{summary.run_id} epoch {summary.epoch}" if summary.run_id else summary.model_name
    click.echo(f"Evaluation {summary.eval_id}: {summary.task} on {what} ({summary.method}), "
               f"{summary.n_items if summary.n_items is not None else 'no'} test items, {summary.seconds:.1f}s")
    for metric, value in sorted(summary.results.items()):
        click.echo(f"  {metric}: {value:.4f}")


@cli.command("evals")
@click.option("--task", default=None, help="Only evaluations of this task.")
@workspace_option
@json_option
@click.pass_context
def evals_cmd(ctx, task, workspace_override, as_json):
    """List recorded evaluations with their task-level results.

    \b
    Example:
        lessdb evals --task bbh
    """
    from ..storage.meta_evals import list_evals
    rows = list_evals(open_workspace(ctx, workspace_override), task)
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows)


@cli.command("compare")
@click.option("--task", required=True, help="Task whose evaluations to compare.")
@workspace_option
@json_option
@click.pass_context
def compare_cmd(ctx, task, workspace_override, as_json):
    """One table of methods x metrics for a task: mean ± sample standard deviation over seeds, per method,
    model and set of test items (evaluations on different item subsets are never pooled).

    \b
    Example:
        lessdb compare --task bbh
    """
    from ..evaluate import compare as compare_evals, compare_table
    rows = compare_evals(open_workspace(ctx, workspace_override), task)
    if as_json:
        emit_json(rows)
        return
    flat, columns = compare_table(rows)
    emit_table(flat, columns)
