"""Featurize commands: featurize (step 2 of LESS), feature-sets."""
from __future__ import annotations

import click

from ..errors import LessdbError
from ..choices import DEFAULT_SKETCH, GRAD_KINDS, SKETCH_KINDS, STORED_DTYPE_NAMES
from .common import cli, emit_json, emit_table, json_option, open_workspace, workspace_option


def _epochs(text: str) -> tuple[int, ...] | None:
    if text.strip().lower() == "all":
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise LessdbError(f"--checkpoints {text!r}: expected 'all' or epochs like 1,2") from None


@cli.command()
@click.option("--run", "run_id", required=True, help="Warmup run whose checkpoints give the gradients.")
@click.option("--checkpoints", default="all", show_default=True, help="Epochs to featurize: all, or e.g. 1,2.")
@click.option("--dim", type=int, default=8192, show_default=True, help="Sketch dimension d.")
@click.option("--sketch", type=click.Choice(SKETCH_KINDS), default=DEFAULT_SKETCH, show_default=True,
              help="Random projection; dense-rademacher is the paper's (slow on CPU at LESS sizes).")
@click.option("--sketch-nnz", type=int, default=None, help="Nonzeros per coordinate for --sketch sparse-sign (4).")
@click.option("--seed", type=int, default=0, show_default=True, help="Sketch seed.")
@click.option("--dtype", type=click.Choice(STORED_DTYPE_NAMES), default=None,
              help="Stored vector dtype (default float16, as the paper: half the disk and scan time of float32; "
                   "a run's existing float32 feature set with the same settings keeps float32).")
@click.option("--grad", "grad_kind", type=click.Choice(GRAD_KINDS), default="adam", show_default=True,
              help="adam: LESS's Adam direction; sgd: plain gradient; sign: SignGD.")
@click.option("--no-bias-correction", is_flag=True,
              help="Adam direction without bias correction (the reference implementation's variant).")
@click.option("--shard", default=None, help="i/n: do only the examples whose id hashes to shard i (0-based).")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Examples per forward+backward.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--precision", "compute_dtype", type=click.Choice(["auto", "float32", "bfloat16"]), default="auto",
              show_default=True, help="Forward/backward precision (auto: bfloat16 on CUDA, float32 on CPU).")
@click.option("--where", default=None, help="SQL boolean expression over `candidates` selecting a subset.")
@click.option("--max-seq-length", type=int, default=None, help="Token limit (default: the run's).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process; ray: Ray actors compute, this process commits (see README, Scale out).")
@click.option("--ray-address", default="local", show_default=True,
              help="--engine ray: local (start a private cluster), auto, or HOST:PORT of a running cluster.")
@click.option("--workers", type=int, default=2, show_default=True, help="--engine ray: actors (one model each).")
@click.option("--gpus-per-worker", type=float, default=0.0, show_default=True,
              help="--engine ray: GPUs per actor (0: CPU).")
@click.option("--unit-rows", type=int, default=None,
              help="--engine ray: examples per work unit (default: the local engine's chunk, so vectors are "
                   "bit-identical; larger units mean fewer, bigger fragments).")
@click.option("--commit-units", type=int, default=8, show_default=True,
              help="--engine ray: finished units per Lance commit (a crash recomputes at most one such batch).")
@workspace_option
@json_option
@click.pass_context
def featurize(ctx, run_id, checkpoints, dim, sketch, sketch_nnz, seed, dtype, grad_kind, no_bias_correction, shard,
              batch_size, device, compute_dtype, where, max_seq_length, engine, ray_address, workers, gpus_per_worker,
              unit_rows, commit_units, workspace_override, as_json):
    """Compute gradient features of a run's candidates (LESS step 2) and append them to LanceDB.

    Resumable (rerun after an interruption: only missing examples are computed), shardable (run
    `--shard 0/4` … `--shard 3/4` at once, even in separate processes), incremental (new candidates of the
    pool are picked up by a rerun).

    \b
    Example:
        lessdb featurize --run warmup-20261123-0930 --dim 8192 --shard 0/2
    """
    from ..featurize import FeaturizeConfig, featurize_run, parse_shard
    ws = open_workspace(ctx, workspace_override)
    cfg = FeaturizeConfig(run_id=run_id, checkpoints=_epochs(checkpoints), dim=dim, sketch=sketch,
                          sketch_nnz=sketch_nnz, seed=seed, dtype=dtype, grad_kind=grad_kind,
                          bias_correction=not no_bias_correction, shard=parse_shard(shard), batch_size=batch_size,
                          device=device, where=where, max_seq_length=max_seq_length, compute_dtype=compute_dtype)
    if engine == "ray":
        from ..scale import RayOptions, featurize_ray
        summary = featurize_ray(ws, cfg, RayOptions(address=ray_address, workers=workers,
                                                    gpus_per_worker=gpus_per_worker, unit_rows=unit_rows,
                                                    commit_units=commit_units))
    else:
        summary = featurize_run(ws, cfg)
    d = summary.as_dict()
    if as_json:
        emit_json(d)
        return
    click.echo(f"feature set {d['feature_set_id']} (table {d['lance_table']}, version {d['lance_version']}): "
               f"{d['examples']:,} examples computed, {d['excluded']:,} excluded, {d['already_present']:,} already "
               f"present; {d['seconds']:.1f} s, {d['examples_per_s']:.2f} examples/s, "
               f"{d['bytes_written']:,} bytes written")


@cli.command("feature-sets")
@click.option("--run", "run_id", default=None, help="Only this run's feature sets.")
@workspace_option
@json_option
@click.pass_context
def feature_sets(ctx, run_id, workspace_override, as_json):
    """List feature sets: sketch, dimension, dtype, gradient kind and how many vectors per checkpoint (counted
    in the table), with [running] / [interrupted] where a job is unfinished.

    \b
    Example:
        lessdb feature-sets --run warmup-20261123-0930 --json
    """
    from ..storage.features import list_feature_sets
    rows = list_feature_sets(open_workspace(ctx, workspace_override), run_id)
    if as_json:
        emit_json(rows)
        return
    table = [{"feature_set_id": r["feature_set_id"], "run_id": r["run_id"], "grad": r["grad_kind"],
              "bias_corr": r["bias_correction"], "sketch": r["sketch_kind"], "seed": r["sketch_seed"],
              "dim": r["dim"], "dtype": r["dtype"], "P": r["n_params"],
              "vectors": ", ".join(f"{k}: {v['done']}" + (f" (+{v['excluded']} excl)" if v["excluded"] else "")
                                   + ("" if v.get("status", "complete") == "complete" else f" [{v['status']}]")
                                   for k, v in r["jobs"].items())} for r in rows]
    emit_table(table)
