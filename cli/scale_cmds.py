"""Scale-out commands: vacuum (the Ray engines are options of featurize and select)."""
from __future__ import annotations

import click

from .common import cli, emit_json, emit_table, json_option, open_workspace, workspace_option


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only check that vacuuming is safe now; delete nothing.")
@workspace_option
@json_option
@click.pass_context
def vacuum(ctx, dry_run, workspace_override, as_json):
    """Delete data files that no table version references (fragments of killed workers or writes).

    Every table version is kept (selections replay them). Refused while a featurize job holds its lease.

    \b
    Example:
        lessdb vacuum --json
    """
    from ..scale.vacuum import vacuum as run_vacuum

    result = run_vacuum(open_workspace(ctx, workspace_override), dry_run=dry_run)
    if as_json:
        emit_json(result)
    else:
        emit_table([{"table": k, **v} for k, v in result["tables"].items()], ["table", "files_removed", "bytes_removed"])
