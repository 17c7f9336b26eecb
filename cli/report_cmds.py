"""`lessdb report`: one self-contained HTML page auditing a selection."""
from __future__ import annotations

from pathlib import Path

import click

from .options import count_type
from .common import cli, emit, json_option, open_workspace, workspace_option


@cli.command()
@click.argument("selection")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=Path("report.html"), show_default=True,
              help="HTML file to write (self-contained: plots are embedded, no network needed to view it); `-`: "
                   "standard output.")
@click.option("--compare", multiple=True, metavar="SEL",
              help="Selections to compare with (repeatable). Default: the newest selection of every other method "
                   "for the same task and pool.")
@click.option("--examples", type=count_type(0), default=2, show_default=True,
              help="Top and bottom examples to show per subtask.")
@workspace_option
@json_option
@click.pass_context
def report(ctx, selection: str, workspace_override, as_json: bool, **options):
    """Write an HTML audit report of a recorded selection: provenance, source mix and length tables, the pool's
    score distribution with the cut-off, source mix and completion-length plots, per-checkpoint contributions,
    overlap with other methods, and the top and bottom examples per subtask.

    \b
    Example:
        lessdb report bbh-less --output report.html
    """
    info = open_workspace(ctx, workspace_override).report(selection, **options)
    to_stderr = info.output == "-"   # standard output carries the page: the summary goes to stderr
    where = "the page to standard output" if to_stderr else info.output
    emit(info, as_json, lambda i: click.echo(f"Wrote {where} ({i.bytes:,} bytes, {i.images} plots)", err=to_stderr),
         err=to_stderr)
