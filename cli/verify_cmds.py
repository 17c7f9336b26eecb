"""`lessdb verify`: check a workspace's consistency (fsck for lessdb), optionally repairing what is safe."""
from __future__ import annotations

import sys

import click

from .common import cli, emit_json, json_option, workspace_option, workspace_path


@cli.command()
@click.option("--repair", is_flag=True, help="Fix what is safe to fix, and say what was done.")
@workspace_option
@json_option
@click.pass_context
def verify(ctx, repair: bool, workspace_override, as_json: bool):
    """Check the workspace like fsck: every feature key once, complete jobs complete, job counts equal to
    the stored rows, checkpoint and model hashes as recorded, the LanceDB versions selections read still
    there, no rows of unrecorded (killed) ingests, no leftover temp files. Exit status 1 if errors remain.

    \b
    Example:
        lessdb verify
        lessdb verify --repair --json
    """
    from ..verify import open_for_verify, verify_workspace

    report = verify_workspace(open_for_verify(workspace_path(ctx, workspace_override)), repair=repair)
    if as_json:
        emit_json(report.as_dict())
    else:
        click.echo("\n".join(report.lines()))
    sys.exit(report.exit_code)
