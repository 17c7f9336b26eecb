"""`lessdb embed`: RDS / RDS+ embeddings of a run's pool as a stored feature set (featurize/hidden.py)."""
from __future__ import annotations

import click

from ..config import EmbedConfig
from .common import cli, emit, json_option, open_workspace, workspace_option
from .options import options_from_dataclass


@cli.command("embed")
@options_from_dataclass(EmbedConfig, required={"run_id"})
@workspace_option
@json_option
@click.pass_context
def embed_cmd(ctx, workspace_override, as_json, **settings):
    """Compute and store RDS (--pooling last) or RDS+ (--pooling mean) embeddings of the run's pool, once per
    (model, pooling, window); every later `select --method rds|rds+` reads them. Resumable and shardable.

    \b
    Example:
        lessdb embed --run RUN --pooling mean --shard 0/2 &  lessdb embed --run RUN --pooling mean --shard 1/2
    """
    emit(open_workspace(ctx, workspace_override).embed(**settings), as_json,
         lambda s: click.echo(f"feature set {s.feature_set_id} ({s.lance_table}), shard {s.shard}: {s.examples:,} "
                              f"embedded, {s.excluded:,} excluded, {s.already_present:,} already stored, in "
                              f"{s.seconds:.1f}s"))
