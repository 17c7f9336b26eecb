"""Target task commands: tasks, task add, task show."""
from __future__ import annotations

from pathlib import Path

import click

from .common import cli, emit, emit_table, json_option, open_workspace, workspace_option


@cli.command("tasks")
@click.option("--verbose", "-v", is_flag=True, help="Also list each task's subtasks with their example counts.")
@workspace_option
@json_option
@click.pass_context
def tasks_cmd(ctx, verbose: bool, workspace_override, as_json: bool):
    """List target tasks (built-in bbh and mmlu, plus the ones you added) with their content hash and counts.

    \b
    Example:
        lessdb tasks --verbose
    """
    emit(open_workspace(ctx, workspace_override).tasks(), as_json, lambda rows: _tasks_table(rows, verbose))


def _tasks_table(rows, verbose: bool) -> None:
    emit_table([{**r, "subtasks": r["n_subtasks"], "examples": r["n_examples"]} for r in rows],
               ["name", "origin", "subtasks", "examples", "task_hash", "description"])
    if verbose:
        for r in rows:
            click.echo(f"\n{r['name']} ({r['n_subtasks']} subtasks, {r['n_examples']} examples)")
            for subtask, n in r["subtasks"].items():
                click.echo(f"  {subtask:<45} {n}")


@cli.group("task")
def task_group():
    """Add or inspect one target task (see also `lessdb tasks`)."""


@task_group.command("add")
@click.argument("name", required=False)
@click.option("--file", "file", type=click.Path(path_type=Path), default=None,
              help="JSONL task file: one example per line (format below).")
@click.option("--less-eval-dir", type=click.Path(path_type=Path), default=None,
              help="A LESS data/eval folder; adds bbh-less, mmlu-less and tydiqa from whichever files it holds.")
@click.option("--replace", is_flag=True, help="Point an existing name at the new examples (the old version "
              "stays stored under its hash).")
@click.option("--description", default=None, help="A short description stored with the task.")
@workspace_option
@json_option
@click.pass_context
def task_add(ctx, name, workspace_override, as_json, **settings):
    """Add a target task from a JSONL file, or the validation sets of a LESS data/eval folder.

    \b
    Task file format (JSONL, UTF-8, one JSON object per line; blank lines ignored):
      {"subtask": "geometry", "messages": [{"role": "user", "content": "Q: ...\\nA:"},
                                           {"role": "assistant", "content": "Let's think ... So the answer is 7."}]}
      {"subtask": "geometry", "prompt": "Q: ...\\nA:", "completion": "So the answer is 3."}
    - subtask: non-empty string; subtasks keep the order in which they first appear.
    - messages: roles system/user/assistant, string contents; at least one user and one non-empty
      assistant turn. The assistant turns are the completion (the only tokens with a loss).
    - or prompt + completion (both non-empty strings): one user turn and one assistant turn.
    - other fields are ignored; a repeated example is kept (it counts twice in its subtask's mean).
    A bad line stops the command with its file, line and field; nothing is written.
    Full description: lessdb/data/TASK_FORMAT.md.

    \b
    LESS folder layout (--less-eval-dir DIR), the reference's data/eval:
      DIR/bbh/bbh-three-shot.json      -> task bbh-less (27 subtasks x 3)
      DIR/mmlu/dev/<subject>_dev.csv   -> task mmlu-less (first 5 rows per subject)
      DIR/tydiqa/tydiqa-one-shot.json  -> task tydiqa (one example per language)

    \b
    Example:
        lessdb task add my-target --file my_target.jsonl
        lessdb task add --less-eval-dir LESS/data/eval
    """
    emit(open_workspace(ctx, workspace_override).task_add(name, **settings), as_json, _say_added)


def _say_added(added) -> None:
    for a in added:
        click.echo(f"{a['name']}: {a['status']} ({a['n_subtasks']} subtasks, {a['n_examples']} examples, "
                   f"hash {a['task_hash']})")


@task_group.command("show")
@click.argument("name")
@click.option("--full", is_flag=True, help="Print every example's messages in full.")
@workspace_option
@json_option
@click.pass_context
def task_show(ctx, name, full, workspace_override, as_json):
    """Show one task: its hash, source, subtasks and examples (with --json: every message in full).

    \b
    Example:
        lessdb task show bbh --full
    """
    emit(open_workspace(ctx, workspace_override).task_show(name), as_json, lambda info: _say_task(info, full))


def _say_task(info, full: bool) -> None:
    for key in ("name", "task_hash", "origin", "source", "description", "n_subtasks", "n_examples"):
        click.echo(f"{key:<12} {info[key] if info[key] is not None else ''}")
    click.echo("")
    if not full:
        emit_table([{k: e[k] for k in ("subtask", "position", "example_id", "prompt_chars", "completion_chars")}
                    | {"completion": e["messages"][-1]["content"].replace("\n", " ")} for e in info["examples"]])
        return
    for e in info["examples"]:
        click.echo(f"=== {e['subtask']} #{e['position']} ({e['example_id']})")
        for m in e["messages"]:
            click.echo(f"--- {m['role']}")
            click.echo(m["content"])
        click.echo("")
