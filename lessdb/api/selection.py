"""Selections (LESS step 3) and their audit: `select` (and its `--replay`), `selections`, `show`, `diff`, `export`,
`explain`, `diagnose`, `report`."""
from __future__ import annotations

from pathlib import Path

from .base import Record, command, config_fields, make_config


class SelectionAPI:
    @command(config_fields("SelectConfig"))
    def select(self, task: str | list[str] | None = None, *, config=None, **settings):
        """`lessdb select`: pick a task's most useful candidates and record the selection -> SelectionResult.
        `settings`: SelectConfig fields (method, percentage or count, where, run, feature_set, name, output,
        checkpoints=[1, 2] or "1,2", method_params={...}, replay=SELECTION, ...), over `config` (a whole
        SelectConfig) when one is given."""
        from ..config import SelectConfig
        from ..selection import select

        return select(self, make_config(SelectConfig, settings, base=config, task=task))

    @command()
    def replay(self, selection: str, *, name: str | None = None, output: str | Path | None = None,
               force: bool = False, progress: bool = True):
        """`lessdb select --replay`: re-run a recorded selection at the table versions it read -> SelectionResult
        (`.identical`: same members, ranks and scores)."""
        from ..selection import replay

        return replay(self, selection, name=name, output=None if output is None else str(output), force=force,
                      progress=progress)

    @command()
    def selections(self) -> list[dict]:
        """`lessdb selections`: recorded selections."""
        from ..selection import list_selections

        return list_selections(self)

    @command()
    def show(self, selection: str, top: int = 10) -> Record:
        """`lessdb show`: provenance, source mix, lengths, score histogram and top members of a selection."""
        from ..selection import show_selection

        return Record(show_selection(self, selection, top=top))

    @command()
    def diff(self, a: str, b: str) -> Record:
        """`lessdb diff`: overlap of two selections (Jaccard, and what each has that the other lacks)."""
        from ..selection import diff_selections

        return Record(diff_selections(self, a, b))

    @command()
    def export(self, selection: str, output: str | Path | None = None, *, format: str | None = None,
               force: bool = False):
        """`lessdb export`: write a selection's training set (`format` jsonl, parquet, or hf: a folder that
        `datasets.load_from_disk` opens) with each member's original input columns, and record its sha256; an
        existing `output` is refused unless `force`, the workspace's own files and non-regular files always; `-`
        is standard output (jsonl, parquet) -> path, format, n_rows, sha256. format="datasets" returns a
        `datasets.Dataset` instead (needs the `hf` extra) and writes nothing."""
        from ..selection import export_selection

        result = export_selection(self, selection, output, format, force=force)
        return Record(result) if isinstance(result, dict) else result

    @command()
    def explain(self, selection: str, candidate_id: str | None = None, *, top: int = 5,
                examples: int = 3) -> Record:
        """`lessdb explain`: members' scores split per checkpoint (eta-bar x cosine) and subtask, with the
        `examples` validation examples that contributed most, for one candidate or the `top` members; stored
        for the `selection_explain` view."""
        from ..selection.explain import explain_selection

        return Record(explain_selection(self, selection, candidate_id, top=top, top_examples=examples))

    @command()
    def diagnose(self, selection: str) -> Record:
        """`lessdb diagnose`: whether a selection's scores rise above sketch noise, checkpoint rank agreement,
        why candidates were unscorable, overlap with random and BM25 at the same k."""
        from ..selection.diagnose import diagnose_selection

        return Record(diagnose_selection(self, selection))

    @command()
    def report(self, selection: str, output: str | Path = "report.html", *, compare: list[str] | None = None,
               examples: int = 2) -> Record:
        """`lessdb report`: one self-contained HTML page auditing a selection, compared with `compare` (default:
        the newest selection of every other method for its task and pool); `output` `-` is standard output ->
        output, bytes, images."""
        from ..report import write_report

        return Record(write_report(self, selection, output, compare=list(compare or ()) or None, examples=examples))
