"""Selection commands: select, selections, show, diff, export."""
from __future__ import annotations

import click

from ..selection.methods import method_names
from ..config import SelectConfig
from ..settings import field_named, help_of
from .options import count_type, options_from_dataclass, shown_with_flags
from .common import cli, emit, emit_json, json_option, open_workspace, workspace_option


@cli.command("select")
@options_from_dataclass(SelectConfig, only=["task", "balance", "max_tokens", "budget_on", "dedup", "dedup_text"])
# the method's choices are the registry's (known once the method modules are imported), so not a field's
@click.option("--method", type=click.Choice(method_names(), case_sensitive=False),
              default=field_named(SelectConfig, "method").default, show_default=True,
              help=help_of(SelectConfig, "method"))
@options_from_dataclass(SelectConfig, only=["pool", "run", "feature_set", "percentage", "count", "where",
                                            "val_aggregation", "checkpoints", "seed", "name", "output", "force",
                                            "max_seq_length", "device", "val_max_seq_length", "val_truncation",
                                            "replay", "method_params", "prefilter", "allow_partial", "engine",
                                            "ray_address"])
@workspace_option
@json_option
@click.pass_context
def select_cmd(ctx, workspace_override, as_json, **settings):
    """Select the candidates most useful for a task (LESS step 3) and record the selection.

    \b
    Example:
        lessdb select --task bbh --percentage 0.05 --where "source_dataset <> 'sharegpt'" --name bbh-5pct
        lessdb select --task bbh --method bm25 --count 500
        lessdb select --task bbh:2 --task mmlu --balance proportional --max-tokens 200000 --dedup 0.9
        lessdb select --task bbh --count 1000 --prefilter 1024x20
        lessdb select --replay bbh-5pct
    """
    result = open_workspace(ctx, workspace_override).select(**settings)
    if as_json:   # the library's notes name fields (what a Python user passes); the CLI shows flags
        emit_json({**result.as_dict(), "notes": [shown_with_flags(note) for note in result.notes]})
    else:
        _say_selected(result)


def _say_selected(result) -> None:
    from ..selection.audit import histogram_lines
    from ..selection.feature_audit import selection_feature_lines

    for note in result.notes:
        click.echo(f"note: {shown_with_flags(note)}", err=True)
    click.echo(f"{result.selection_id}" + (f" ({result.name})" if result.name else "") +
               f": {result.method} selected {result.k:,} of {result.n_scored:,} scored candidates "
               f"(pool {result.pool}, task {result.task}; {result.n_unscorable:,} unscorable) in {result.seconds:.1f}s")
    if result.partial:
        click.echo(f"PARTIAL: {result.partial['n_missing']:,} of the {result.partial['n_candidates']:,} filtered "
                   "candidates had no stored vector and were not scored (--allow-partial)")
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
    emit(open_workspace(ctx, workspace_override).selections(), as_json,
         columns=["selection_id", "name", "task", "method", "pool", "k", "n_scored", "sql_filter", "replay_of",
                  "created_at"])


@cli.command("show")
@click.argument("selection")
@click.option("--top", type=count_type(0), default=10, show_default=True, help="Members to list.")
@workspace_option
@json_option
@click.pass_context
def show_cmd(ctx, selection, workspace_override, as_json, **options):
    """Summarise a selection: provenance, source mix and lengths vs the pool, score histogram, top members.

    \b
    Example:
        lessdb show bbh-5pct
    """
    from ..selection.audit import format_show

    emit(open_workspace(ctx, workspace_override).show(selection, **options), as_json,
         lambda report: click.echo(format_show(report)))


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
    from ..selection.audit import format_diff

    emit(open_workspace(ctx, workspace_override).diff(a, b), as_json, lambda d: click.echo(format_diff(d)))


@cli.command("export")
@click.argument("selection")
@click.option("--format", type=click.Choice(["jsonl", "parquet", "hf"]), default=None,
              help="Default: from the output's suffix (.parquet/.pq: parquet), else jsonl. hf: a folder that "
                   "datasets.load_from_disk opens. Every format keeps each member's original input columns.")
@click.option("--output", "-o", type=click.Path(), default=None,
              help="Default: <workspace>/exports/<selection_id>.<format>. `-`: standard output (jsonl; parquet only "
                   "into a pipe or a file), the summary then on stderr.")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists (refused otherwise).")
@workspace_option
@json_option
@click.pass_context
def export_cmd(ctx, selection, workspace_override, as_json, **options):
    """Write a selection's training set (messages format for open-instruct / TRL) and record its sha256.

    A suffix that means the other format (--format parquet --output x.jsonl) is an error; without --format
    the suffix decides. The file is written next to its destination and renamed into place.

    \b
    Example:
        lessdb export bbh-5pct --format jsonl --output bbh-5pct.jsonl
    """
    info = open_workspace(ctx, workspace_override).export(selection, **options)
    to_stderr = info.path == "-"   # standard output carries the data: the summary goes to stderr
    where = "standard output" if to_stderr else info.path
    emit(info, as_json, lambda i: click.echo(f"wrote {i.n_rows:,} examples to {where} (sha256 {i.sha256})",
                                             err=to_stderr), err=to_stderr)
