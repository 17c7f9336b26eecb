"""`lessdb quickstart`: the README's main job."""
from __future__ import annotations

from pathlib import Path

import click

from ..config import QuickstartConfig
from .common import cli, emit, json_option, workspace_option, workspace_path
from .options import options_from_dataclass


@cli.command()
@options_from_dataclass(QuickstartConfig, only=["pool_size", "task", "device", "model"])
@workspace_option
@json_option
@click.pass_context
def quickstart(ctx, workspace_override: Path | None, as_json, **settings):
    """Run the whole pipeline on the bundled real defaults (SmolLM2-135M, a ShareGPT V3 sample, BBH),
    sized for a laptop CPU (time and peak memory on 2 cores: bench/RESULTS.md, measured by
    bench/quickstart.py). Prints each phase's time and peak memory at the end. Rerunning reuses what exists.

    \b
    Example:
        lessdb quickstart
        lessdb quickstart --workspace ./demo --pool-size 300
    """
    from ..workspace import Workspace

    emit(Workspace.quickstart(workspace_path(ctx, workspace_override), **settings), as_json, _say_done)


def _say_done(result) -> None:
    from ..phase_meter import format_phases
    from ..selection.audit import format_show

    click.echo(format_show(result["less"]))
    names = result["selections"]
    click.echo(f"\nDone. Where the time and the memory went (peak RSS per phase):\n{format_phases(result['measured'])}")
    click.echo(f"Workspace: {result['workspace']}")
    click.echo("\nNext, try:")
    for line in (f"lessdb show {names['less']}",
                 f"lessdb diff {names['less']} {names['random']}",
                 f"lessdb select --replay {names['less']}",
                 f"lessdb export {names['less']} --format jsonl --output selection.jsonl",
                 f"lessdb report {names['less']} --compare {names['random']} --compare {names['bm25']} --output report.html",
                 'lessdb sql "SELECT method, source_dataset, n, mean_completion_chars FROM selection_sources"'):
        click.echo(f"  {line}")
