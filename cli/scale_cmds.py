"""Scale-out commands: vacuum, fold (the Ray engines and --prefilter are options of featurize and select)."""
from __future__ import annotations

import click

from .common import cli, emit, emit_table, json_option, open_workspace, workspace_option


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only check that vacuuming is safe now; delete nothing.")
@workspace_option
@json_option
@click.pass_context
def vacuum(ctx, workspace_override, as_json, **options):
    """Delete data files that no table version references (fragments of killed workers or writes).

    Every table version is kept (selections replay them). Refused while a featurize job holds its lease.

    \b
    Example:
        lessdb vacuum --json
    """
    emit(open_workspace(ctx, workspace_override).vacuum(**options), as_json, lambda result: emit_table(
        [{"table": k, **v} for k, v in result["tables"].items()], ["table", "files_removed", "bytes_removed"]))


@cli.command()
@click.option("--feature-set", "feature_set", required=True, help="Feature set to fold (see `lessdb feature-sets`).")
@click.option("--low-dim", type=click.IntRange(min=1), required=True,
              help="The folded dimension d' (divides the feature set's d), as in `select --prefilter D'xFACTOR`.")
@workspace_option
@json_option
@click.pass_context
def fold(ctx, workspace_override, as_json, **settings):
    """Store (or extend) a feature set's folded low-d copy, which `select --prefilter` scores first.

    `select --prefilter` makes it on first use and featurize extends it; run this to pay the one-off pass over
    the full vectors ahead of time. Resumable: a killed run keeps what it committed and a rerun adds the rest.

    \b
    Example:
        lessdb fold --feature-set fs-0123abcd --low-dim 1024
    """
    emit(open_workspace(ctx, workspace_override).fold(**settings), as_json, _say_folded)


def _say_folded(row) -> None:
    click.echo(f"feature set {row['feature_set_id']}: folded copy at d={row['low_dim']} in {row['lance_table']} "
                   f"(version {row['lance_version']}, {row['n_rows']:,} rows, covers feature table version "
                   f"{row['source_version']})")
