"""Why a selection picked what it picked, and whether its scores mean anything: explain, diagnose."""
from __future__ import annotations

import click

from ..setting_ranges import count_type
from .common import cli, emit_json, json_option, open_workspace, workspace_option


@cli.command("explain")
@click.argument("selection")
@click.argument("candidate_id", required=False)
@click.option("--top", type=count_type(1), default=5, show_default=True, help="Members to explain (without CANDIDATE_ID).")
@click.option("--examples", type=count_type(0), default=3, show_default=True,
              help="Validation examples to list per subtask (largest contributions).")
@workspace_option
@json_option
@click.pass_context
def explain_cmd(ctx, selection, candidate_id, top, examples, workspace_override, as_json):
    """Split members' scores into per-checkpoint parts (eta-bar x cosine) per subtask, with the validation
    examples that contributed most; stored for the `selection_explain` view.

    \b
    Example:
        lessdb explain bbh-5pct --top 3
        lessdb explain bbh-5pct 3f2a...c9 --json
    """
    from ..selection.explain import explain_selection, format_explanation

    result = explain_selection(open_workspace(ctx, workspace_override), selection, candidate_id, top=top,
                               top_examples=examples)
    if as_json:
        emit_json(result)
    else:
        click.echo(format_explanation(result))


@cli.command("diagnose")
@click.argument("selection")
@workspace_option
@json_option
@click.pass_context
def diagnose_cmd(ctx, selection, workspace_override, as_json):
    """Check whether a selection's scores mean anything: checkpoint rank agreement, the k-th-vs-median gap in
    units of sketch noise, unscorable candidates and why, overlap with random and BM25 at the same k.

    \b
    Example:
        lessdb diagnose bbh-5pct
    """
    from ..selection.diagnose import diagnose_selection, format_diagnosis

    d = diagnose_selection(open_workspace(ctx, workspace_override), selection)
    if as_json:
        emit_json(d)
    else:
        click.echo(format_diagnosis(d))
