"""Evaluation commands: eval, evals, compare, validate, validations."""
from __future__ import annotations

import click

from ..config import EvalConfig, ValidateConfig
from .options import options_from_dataclass
from .common import cli, emit, emit_table, json_option, open_workspace, workspace_option


@cli.command("eval")
@options_from_dataclass(EvalConfig, only=["run_id", "model", "task"], required={"task"})
@options_from_dataclass(EvalConfig, exclude={"run_id", "model", "task"})
@workspace_option
@json_option
@click.pass_context
def eval_cmd(ctx, workspace_override, as_json, **settings):
    """Evaluate a trained run (or a base model) on a target task and record the results: target loss on the
    task's validation examples and the task metric on its test items (BBH exact match with 3-shot CoT,
    MMLU 5-shot accuracy, TyDiQA F1).

    \b
    Example:
        lessdb eval --run train-ab12 --task bbh --limit 10
        lessdb eval --model smollm2-135m --task mmlu --limit 5
    """
    emit(open_workspace(ctx, workspace_override).evaluate(**settings), as_json, _say_evaluated)


def _say_evaluated(summary) -> None:
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
def evals_cmd(ctx, workspace_override, as_json, **filters):
    """List recorded evaluations with their task-level results.

    \b
    Example:
        lessdb evals --task bbh
    """
    emit(open_workspace(ctx, workspace_override).evals(**filters), as_json)


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
    from ..evaluate import compare_table

    emit(open_workspace(ctx, workspace_override).compare(task), as_json, lambda rows: emit_table(*compare_table(rows)))


@cli.command("validate")
@click.argument("selection")
@options_from_dataclass(ValidateConfig, exclude={"selection"})
@workspace_option
@json_option
@click.pass_context
def validate_cmd(ctx, workspace_override, as_json, **settings):
    """Does a selection pay off? Train a LoRA on it and on each comparison (random draws, BM25, RDS+, hybrid,
    the full pool at the same number of steps) with one budget and N training seeds, score held-out test items
    of its target (never the validation examples it was selected with), and record per comparison the mean
    difference with a paired-bootstrap 95% interval and a verdict. Rerun it to resume: trained runs and scores
    are reused.

    \b
    Example:
        lessdb validate less-bbh --against random,bm25 --seeds 3
        lessdb validate my-sel --test-file heldout.jsonl --preset cpu-outcome --json
    """
    emit(open_workspace(ctx, workspace_override).validate(**settings), as_json, _say_validated)


def _say_validated(result) -> None:
    items = result.items
    click.echo(f"Validation {result.validation_id}: selection {result.selection_id} on {result.task}, "
               f"{items['n_items']} held-out items ({items['source']}), {result.config['seeds']} seeds, "
               f"preset {result.config['preset']}, {result.seconds:.0f}s")
    for line in result.lines:
        click.echo(f"  {line}")
    ratio = result.cost.get("selection_to_tuning_ratio")
    if ratio is not None:
        click.echo(f"  selection-to-tuning ratio: {ratio:.2f} (selection compute "
                   f"{result.cost['selection_compute']['seconds']:.0f}s / one training on it)")


@cli.command("validations")
@click.option("--selection", default=None, help="Only validations of this selection.")
@workspace_option
@json_option
@click.pass_context
def validations_cmd(ctx, workspace_override, as_json, selection):
    """List recorded validations and their verdicts (also in SQL: the `validation_verdicts` view).

    \b
    Example:
        lessdb validations --selection less-bbh
    """
    rows = open_workspace(ctx, workspace_override).validations(selection)
    if as_json:
        emit(rows, as_json)
        return
    if not rows:
        click.echo("(no validations)")
    for v in rows:
        click.echo(f"{v['validation_id']} selection {v['selection_id']} on {v['task']} ({v['status']}, "
                   f"{v['created_at']})")
        for r in v["results"]:
            click.echo(f"  {r['line']}")
