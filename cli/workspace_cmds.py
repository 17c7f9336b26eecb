"""Workspace commands: init, sql, versions."""
from __future__ import annotations

from pathlib import Path

import click

from .options import count_type
from .common import cli, emit, json_option, open_workspace, workspace_option, workspace_path


@cli.command()
@click.option("--tables", default=None,
              help="Where the LanceDB tables live: s3://BUCKET/PREFIX (object store) or a folder; default "
                   "<workspace>/lance. Credentials come from AWS_* environment variables, never from here.")
@click.option("--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
              help="Non-secret object-store setting, e.g. aws_endpoint=http://127.0.0.1:9000, allow_http=true "
                   "(repeatable; recorded in the workspace's tables.json).")
@workspace_option
@json_option
@click.pass_context
def init(ctx, workspace_override: Path | None, as_json: bool, **settings):
    """Create a workspace (LanceDB + DuckDB) or upgrade an existing one.

    \b
    Examples:
        lessdb init --workspace ./ws
        lessdb init --workspace ./ws --tables s3://my-bucket/lessdb --storage-option aws_region=eu-west-1
    """
    from ..workspace import Workspace

    emit(Workspace.init(workspace_path(ctx, workspace_override), **settings), as_json,
         lambda ws: click.echo(f"Workspace ready at {ws.root} (tables at {ws.tables.uri}; schema "
                               f"{ws.as_dict()['migrations'][-1]})"))


@cli.command()
@click.argument("query")
@click.option("--limit", type=count_type(0), default=None, help="Return at most this many rows.")
@workspace_option
@json_option
@click.pass_context
def sql(ctx, query: str, workspace_override, as_json: bool, **options):
    """Run read-only SQL over the workspace: DuckDB metadata tables and views, plus the LanceDB
    `candidates` table. Nothing outside the workspace can be read.

    \b
    Example:
        lessdb sql "SELECT pool, source_dataset, count(*) FROM candidates GROUP BY ALL"
    """
    from ..storage.user_sql import python_rows

    table = open_workspace(ctx, workspace_override).sql(query, **options)
    emit(python_rows(table), as_json, columns=table.column_names)


@cli.command()
@workspace_option
@json_option
@click.pass_context
def versions(ctx, workspace_override, as_json: bool):
    """List the LanceDB table versions and which ingest, job or selection produced or read them.

    \b
    Example:
        lessdb versions --json
    """
    emit(open_workspace(ctx, workspace_override).versions(), as_json,
         columns=["table", "version", "timestamp", "rows", "made_by"])
