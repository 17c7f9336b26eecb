"""Ingest commands: ingest, pools."""
from __future__ import annotations

import click

from ..config import IngestConfig
from .common import cli, emit, json_option, open_workspace, workspace_option
from .options import options_from_dataclass


@cli.command()
@click.argument("files", nargs=-1)
@options_from_dataclass(IngestConfig)
@workspace_option
@json_option
@click.pass_context
def ingest(ctx, files, workspace_override, as_json, **settings):
    """Add instruction data to a pool (one new version of the `candidates` table).

    FILES are files, folders or globs, local or s3://bucket/key (credentials and endpoint from the AWS_*
    environment). Reads JSONL/JSON (also .gz, .zst), Parquet, Arrow IPC/Feather, a Hugging Face `save_to_disk`
    folder, or a folder of Parquet/Arrow shards; records in Tulu messages, ShareGPT, Alpaca or
    prompt/completion shape. Every other field or column is kept as the candidate's `metadata` (JSON; filter
    with --where "metadata->>'source' = 'flan_v2'"). A bad record stops the ingest with its file, line or row,
    and field, and nothing is written (unless --skip-invalid).

    \b
    Examples:
        lessdb ingest data/alpaca.jsonl --pool mix
        lessdb ingest 'shards/train-*.parquet' --pool tulu --map messages=conversation
        lessdb ingest s3://bucket/pools/openhermes/ --pool hermes
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
        where = f"line {s['line']}" if s["line"] is not None else f"row {s['row_index']}"
        click.echo(f"  skipped {s['file']}, {where}" + (f", field '{s['field']}'" if s['field'] else "")
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
