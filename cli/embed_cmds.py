"""`lessdb embed`: RDS / RDS+ embeddings of a run's pool as a stored feature set (featurize/embeddings.py)."""
from __future__ import annotations

import click

from .common import cli, emit_json, json_option, open_workspace, workspace_option


@cli.command("embed")
@click.option("--run", "run_id", required=True, help="Warmup run: its base model, tokenizer and pool.")
@click.option("--pooling", type=click.Choice(["last", "mean"]), default="mean", show_default=True,
              help="last: the final hidden state at the last token (RDS); mean: mean-pooled (RDS+).")
@click.option("--max-seq-length", type=int, help="Token window (default: the run's).")
@click.option("--shard", help="i/n: embed only this shard (run n processes for a big pool).")
@click.option("--where", help="SQL condition on candidate metadata.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@workspace_option
@json_option
@click.pass_context
def embed_cmd(ctx, run_id, pooling, max_seq_length, shard, where, device, batch_size, workspace_override, as_json):
    """Compute and store RDS (--pooling last) or RDS+ (--pooling mean) embeddings of the run's pool, once per
    (model, pooling, window); every later `select --method rds|rds+` reads them. Resumable and shardable.

    \b
    Example:
        lessdb embed --run RUN --pooling mean --shard 0/2 &  lessdb embed --run RUN --pooling mean --shard 1/2
    """
    from dataclasses import asdict

    from ..featurize import parse_shard
    from ..featurize.embeddings import embed_run

    s = embed_run(open_workspace(ctx, workspace_override), run_id, pooling, max_seq_length, parse_shard(shard), where,
                  device, batch_size)
    if as_json:
        emit_json(asdict(s))
    else:
        click.echo(f"feature set {s.feature_set_id} ({s.lance_table}), shard {s.shard}: {s.examples:,} embedded, "
                   f"{s.excluded:,} excluded, {s.already_present:,} already stored, in {s.seconds:.1f}s")
