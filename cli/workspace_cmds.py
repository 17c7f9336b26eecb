"""Workspace commands: init, sql, versions."""
from __future__ import annotations

from pathlib import Path

import click

from .common import cli, emit_json, emit_table, json_option, open_workspace, workspace_option, workspace_path


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
def init(ctx, tables, storage_options, workspace_override: Path | None, as_json: bool):
    """Create a workspace (LanceDB + DuckDB) or upgrade an existing one.

    \b
    Examples:
        lessdb init --workspace ./ws
        lessdb init --workspace ./ws --tables s3://my-bucket/lessdb --storage-option aws_region=eu-west-1
    """
    from ..workspace import Workspace
    from ..storage.object_store import parse_storage_options

    ws = Workspace.init(workspace_path(ctx, workspace_override), tables=tables,
                        storage_options=parse_storage_options(storage_options))
    info = {"workspace": str(ws.root), "tables": ws.tables.uri,
            "migrations": [f"{v:04d}_{n}" for v, n, _ in ws.duck.applied_migrations()]}
    if as_json:
        emit_json(info)
    else:
        click.echo(f"Workspace ready at {ws.root} (tables at {ws.tables.uri}; schema {info['migrations'][-1]})")


@cli.command()
@click.argument("query")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Return at most this many rows.")
@workspace_option
@json_option
@click.pass_context
def sql(ctx, query: str, limit: int | None, workspace_override, as_json: bool):
    """Run read-only SQL over the workspace: DuckDB metadata tables and views, plus the LanceDB
    `candidates` table. Nothing outside the workspace can be read.

    \b
    Example:
        lessdb sql "SELECT pool, source_dataset, count(*) FROM candidates GROUP BY ALL"
    """
    from ..storage.user_sql import run_readonly_sql
    result = run_readonly_sql(open_workspace(ctx, workspace_override), query, limit)
    if as_json:
        emit_json(result.as_dicts())
    else:
        emit_table(result.as_dicts(), result.columns)


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
    from ..storage.versions import workspace_versions
    rows = workspace_versions(open_workspace(ctx, workspace_override))
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["table", "version", "timestamp", "rows", "made_by"])
