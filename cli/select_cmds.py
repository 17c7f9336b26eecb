"""Selection commands: select, selections, show, diff, export."""
from __future__ import annotations

import click

from ..choices import DEFAULT_VAL_TRUNCATION, TRUNCATION_SIDES
from ..selection.methods import method_names
from .common import cli, emit_json, emit_table, json_option, open_workspace, workspace_option


def _checkpoints(value: str | None) -> list[int] | None:
    if not value or value == "all":
        return None
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: expected 'all' or epochs like 1,2,4") from exc


@cli.command("select")
@click.option("--task", multiple=True,
              help="Target task (see `lessdb tasks`), e.g. bbh, mmlu, tydiqa. Repeat for several targets in one "
                   "selection; NAME:WEIGHT weights a target for --balance proportional.")
@click.option("--balance", type=click.Choice(["max", "round-robin", "proportional"]), default="max",
              show_default=True,
              help="Several targets: max over all their subtasks (the paper), round-robin turns, or k split by "
                   "target weights.")
@click.option("--max-tokens", type=int,
              help="Token budget: take candidates best first until the next one would exceed it (run's tokenizer "
                   "and window). With --count/--percentage, whichever is reached first.")
@click.option("--budget-on", type=click.Choice(["completion", "total"]), default="completion", show_default=True,
              help="Which tokens --max-tokens counts.")
@click.option("--dedup", type=float,
              help="Skip a candidate whose feature cosine (at the selection's checkpoints) with a selected member "
                   "exceeds this, e.g. 0.9.")
@click.option("--dedup-text", type=float,
              help="Skip a candidate whose MinHash Jaccard estimate with a selected member exceeds this, e.g. 0.8.")
@click.option("--method", type=click.Choice(method_names(), case_sensitive=False), default="less", show_default=True,
              help="LESS, an ablation (sgd, sign, unnormalized), a baseline (random, bm25, dsir, rds, rds+) or "
                   "hybrid (LESS and BM25 fused; --method-param fusion=rrf|zscore).")
@click.option("--pool", help="Candidate pool (default: the run's pool).")
@click.option("--run", "run_id", help="Warmup run (default: the newest complete one).")
@click.option("--feature-set", help="Feature set (default: the run's newest of the method's gradient kind).")
@click.option("--percentage", "-p", type=float, help="Select ⌊p·N⌋ of the N scored candidates (default 0.05).")
@click.option("--count", "-k", type=int, help="Select exactly this many instead.")
@click.option("--where", help="SQL condition on candidate metadata, applied before scoring.")
@click.option("--val-aggregation", type=click.Choice(["paper", "reference"]), default="paper", show_default=True,
              help="paper: cosine with the subtask's mean gradient; reference: mean of per-example cosines.")
@click.option("--checkpoints", help="Epochs to sum over, e.g. 1,2 (default: all).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed (random baseline).")
@click.option("--name", help="A unique name for the selection.")
@click.option("--output", "-o", type=click.Path(), help="Also export it (.jsonl or .parquet).")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
@click.option("--max-seq-length", type=int, help="RDS/RDS+ truncation (default: the run's).")
@click.option("--device", default="cpu", show_default=True, help="RDS/RDS+ device.")
@click.option("--val-max-seq-length", type=int,
              help="Token window of validation examples, for gradient methods and RDS/RDS+ (default: the feature "
                   "set's, or the RDS window).")
@click.option("--val-truncation", type=click.Choice(TRUNCATION_SIDES), default=DEFAULT_VAL_TRUNCATION,
              show_default=True,
              help="left keeps each validation example's completion and drops the earliest prompt tokens when it "
                   "does not fit (long few-shot prompts on small windows); right drops the end instead (the "
                   "paper's cut, which can leave no completion). An example that fits is the same either way.")
@click.option("--replay", help="Re-run this recorded selection at the table versions it read.")
@click.option("--method-param", "method_params", multiple=True, metavar="KEY=VALUE",
              help="A parameter of the method, e.g. k1=1.2 for bm25 (repeatable; recorded with the selection).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where gradient features are scored: this process, or fragment by fragment on Ray (same result).")
@click.option("--ray-address", default="local", show_default=True,
              help="--engine ray: local (start a private cluster), auto, or HOST:PORT of a running cluster.")
@workspace_option
@json_option
@click.pass_context
def select_cmd(ctx, task, balance, max_tokens, budget_on, dedup, dedup_text, method, pool, run_id, feature_set,
               percentage, count, where, val_aggregation, checkpoints, seed, name, output, force, max_seq_length,
               device, val_max_seq_length, val_truncation, replay, method_params, engine, ray_address,
               workspace_override, as_json):
    """Select the candidates most useful for a task (LESS step 3) and record the selection.

    \b
    Example:
        lessdb select --task bbh --percentage 0.05 --where "source_dataset <> 'sharegpt'" --name bbh-5pct
        lessdb select --task bbh --method bm25 --count 500
        lessdb select --task bbh:2 --task mmlu --balance proportional --max-tokens 200000 --dedup 0.9
        lessdb select --replay bbh-5pct
    """
    from ..selection import SelectConfig, select
    from ..selection.audit import histogram_lines
    from ..selection.methods import parse_method_params
    from ..selection.feature_audit import selection_feature_lines
    ws = open_workspace(ctx, workspace_override)
    task = list(task) if len(task) > 1 else (task[0] if task else None)
    cfg = SelectConfig(task=task, balance=balance, max_tokens=max_tokens, budget_on=budget_on, dedup=dedup,
                       dedup_text=dedup_text, method=method.lower(), pool=pool, run=run_id, feature_set=feature_set,
                       percentage=percentage, count=count, where=where, val_aggregation=val_aggregation,
                       checkpoints=_checkpoints(checkpoints), seed=seed, name=name,
                       output=None if output is None else str(output), force=force, max_seq_length=max_seq_length,
                       device=device, val_max_seq_length=val_max_seq_length,
                       val_truncation=val_truncation, replay=replay,
                       method_params=parse_method_params(method_params) or None, engine=engine,
                       ray_address=ray_address)
    result = select(ws, cfg)
    if as_json:
        emit_json(result.summary())
        return
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"{result.selection_id}" + (f" ({result.name})" if result.name else "") +
               f": {result.method} selected {result.k:,} of {result.n_scored:,} scored candidates "
               f"(pool {result.pool}, task {result.task}; {result.n_unscorable:,} unscorable) in {result.seconds:.1f}s")
    if result.replay_of:
        click.echo(f"replay of {result.replay_of}: " + ("identical members, ranks and scores" if result.identical
                                                        else "DIFFERENT from the original"))
    for line in selection_feature_lines(result.provenance["params"]):
        click.echo("  " + line)
    for line in histogram_lines(result.provenance["params"].get("score_histogram")):
        click.echo("  " + line)
    if result.output:
        click.echo(f"exported to {result.output}")
    click.echo(f"next: lessdb show {result.selection_id}  |  lessdb export {result.selection_id} "
               "--format jsonl --output selected.jsonl")


@cli.command("selections")
@workspace_option
@json_option
@click.pass_context
def selections_cmd(ctx, workspace_override, as_json):
    """List recorded selections.

    \b
    Example:
        lessdb selections --json
    """
    from ..selection import list_selections
    rows = list_selections(open_workspace(ctx, workspace_override))
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["selection_id", "name", "task", "method", "pool", "k", "n_scored", "sql_filter",
                          "replay_of", "created_at"])


@cli.command("show")
@click.argument("selection")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True, help="Members to list.")
@workspace_option
@json_option
@click.pass_context
def show_cmd(ctx, selection, top, workspace_override, as_json):
    """Summarise a selection: provenance, source mix and lengths vs the pool, score histogram, top members.

    \b
    Example:
        lessdb show bbh-5pct
    """
    from ..selection import show_selection
    from ..selection.audit import format_show
    report = show_selection(open_workspace(ctx, workspace_override), selection, top=top)
    if as_json:
        emit_json(report)
    else:
        click.echo(format_show(report))


@cli.command("diff")
@click.argument("a")
@click.argument("b")
@workspace_option
@json_option
@click.pass_context
def diff_cmd(ctx, a, b, workspace_override, as_json):
    """Compare two selections: overlap, Jaccard, and what each has that the other lacks.

    \b
    Example:
        lessdb diff bbh-5pct bbh-random
    """
    from ..selection import diff_selections
    from ..selection.audit import format_diff
    d = diff_selections(open_workspace(ctx, workspace_override), a, b)
    if as_json:
        emit_json(d)
    else:
        click.echo(format_diff(d))


@cli.command("export")
@click.argument("selection")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]), default=None,
              help="Default: from the output's suffix (.parquet/.pq: parquet), else jsonl.")
@click.option("--output", "-o", type=click.Path(), default=None,
              help="Default: <workspace>/exports/<selection_id>.<format>.")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists (refused otherwise).")
@workspace_option
@json_option
@click.pass_context
def export_cmd(ctx, selection, fmt, output, force, workspace_override, as_json):
    """Write a selection's training set (messages format for open-instruct / TRL) and record its sha256.

    A suffix that means the other format (--format parquet --output x.jsonl) is an error; without --format
    the suffix decides. The file is written next to its destination and renamed into place.

    \b
    Example:
        lessdb export bbh-5pct --format jsonl --output bbh-5pct.jsonl
    """
    from ..selection import export_selection
    info = export_selection(open_workspace(ctx, workspace_override), selection, output, fmt, force=force)
    if as_json:
        emit_json(info)
    else:
        click.echo(f"wrote {info['n_rows']:,} examples to {info['path']} (sha256 {info['sha256']})")
