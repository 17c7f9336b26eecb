"""Featurize commands: featurize (step 2 of LESS), feature-sets."""
from __future__ import annotations

import click

from ..config import FeaturizeConfig, RayOptions
from .options import options_from_dataclass
from .common import cli, emit, emit_table, json_option, open_workspace, workspace_option


@cli.command()
@options_from_dataclass(FeaturizeConfig, only=["run_id", "checkpoints"], required={"run_id"})
@options_from_dataclass(FeaturizeConfig, exclude={"run_id", "checkpoints"})
@options_from_dataclass(RayOptions, prefix="ray_")   # the Ray engine's options, as ray_<field>
@workspace_option
@json_option
@click.pass_context
def featurize(ctx, workspace_override, as_json, **settings):
    """Compute gradient features of a run's candidates (LESS step 2) and append them to LanceDB.

    Resumable (rerun after an interruption: only missing examples are computed), shardable (run
    `--shard 0/4` … `--shard 3/4` at once, even in separate processes), incremental (new candidates of the
    pool are picked up by a rerun).

    \b
    Example:
        lessdb featurize --run warmup-20261123-0930 --dim 8192 --shard 0/2
    """
    emit(open_workspace(ctx, workspace_override).featurize(**settings), as_json, _say_featurized)


def _say_featurized(summary) -> None:
    d = summary.as_dict()
    click.echo(f"feature set {d['feature_set_id']} (table {d['lance_table']}, version {d['lance_version']}): "
               f"{d['examples']:,} examples computed, {d['excluded']:,} excluded, {d['already_present']:,} already "
               f"present; {d['seconds']:.1f} s, {d['examples_per_s']:.2f} examples/s, "
               f"{d['bytes_written']:,} bytes written")


@cli.command("feature-sets")
@click.option("--run", "run_id", default=None, help="Only this run's feature sets.")
@workspace_option
@json_option
@click.pass_context
def feature_sets(ctx, workspace_override, as_json, **filters):
    """List feature sets: sketch, dimension, dtype, gradient kind and how many vectors per checkpoint (counted
    in the table), with [running] / [interrupted] where a job is unfinished.

    \b
    Example:
        lessdb feature-sets --run warmup-20261123-0930 --json
    """
    emit(open_workspace(ctx, workspace_override).feature_sets(**filters), as_json, _feature_sets_table)


def _feature_sets_table(rows) -> None:
    table = [{"feature_set_id": r["feature_set_id"], "run_id": r["run_id"], "grad": r["grad_kind"],
              "bias_corr": r["bias_correction"], "sketch": r["sketch_kind"], "seed": r["sketch_seed"],
              "dim": r["dim"], "dtype": r["dtype"], "P": r["n_params"],
              "vectors": ", ".join(f"{k}: {v['done']}" + (f" (+{v['excluded']} excl)" if v["excluded"] else "")
                                   + ("" if v.get("status", "complete") == "complete" else f" [{v['status']}]")
                                   for k, v in r["jobs"].items())} for r in rows]
    emit_table(table)
