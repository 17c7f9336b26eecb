"""Why a selection picked what it picked, and whether its scores mean anything: explain, diagnose."""
from __future__ import annotations

import click

from .options import count_type
from .common import cli, emit, json_option, open_workspace, workspace_option


@cli.command("explain")
@click.argument("selection")
@click.argument("candidate_id", required=False)
@click.option("--top", type=count_type(1), default=5, show_default=True,
              help="Members to explain (without CANDIDATE_ID).")
@click.option("--examples", type=count_type(0), default=3, show_default=True,
              help="Validation examples to list per subtask (largest contributions).")
@workspace_option
@json_option
@click.pass_context
def explain_cmd(ctx, selection, candidate_id, workspace_override, as_json, **options):
    """Split members' scores into per-checkpoint parts (eta-bar x cosine) per subtask, with the validation
    examples that contributed most; stored for the `selection_explain` view.

    \b
    Example:
        lessdb explain bbh-5pct --top 3
        lessdb explain bbh-5pct 3f2a...c9 --json
    """
    from ..selection.explain import format_explanation

    emit(open_workspace(ctx, workspace_override).explain(selection, candidate_id, **options), as_json,
         lambda result: click.echo(format_explanation(result)))


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
    from ..selection.diagnose import format_diagnosis

    emit(open_workspace(ctx, workspace_override).diagnose(selection), as_json,
         lambda d: click.echo(format_diagnosis(d)))
