"""`lessdb verify`: check a workspace's consistency (fsck for lessdb), optionally repairing what is safe."""
from __future__ import annotations

import sys

import click

from .common import cli, emit, json_option, open_workspace, workspace_option


@cli.command()
@click.option("--repair", is_flag=True, help="Fix what is safe to fix, and say what was done.")
@workspace_option
@json_option
@click.pass_context
def verify(ctx, workspace_override, as_json: bool, **options):
    """Check the workspace like fsck: the metadata database and every Lance table's files readable, every feature
    key once, complete jobs complete, job counts equal to the stored rows, checkpoint and model hashes and each
    checkpoint's eta-bar as recorded, the LanceDB versions selections read still there, members as their digest
    says, no rows of unrecorded (killed) ingests, no leftover temp files. Exit status 1 if errors remain.

    \b
    Example:
        lessdb verify
        lessdb verify --repair --json
    """
    report = open_workspace(ctx, workspace_override, damaged_ok=True).verify(**options)   # a damaged catalogue
    # is verify's first finding, not a reason to stop
    emit(report, as_json, lambda report: click.echo("\n".join(report.lines())))
    sys.exit(report.exit_code)
