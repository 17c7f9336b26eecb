"""LESS step 3 and its audit: `select(ws, SelectConfig) -> SelectionResult`, replay, show/diff, export.

- `scoring`: the pure math (query folding, streamed BLAS scoring, max over subtasks, top-k with id ties).
- `baselines`: random, BM25, DSIR, RDS/RDS+ scorers through the same path.
- `select`: filter -> score -> top-k -> record (and exact replay at the recorded table versions).
- `audit`: list / show / diff recorded selections; `export`: write the training set (JSONL/Parquet).
"""
from .audit import diff_selections, list_selections, show_selection
from .export import export_selection
from .select import METHODS, Member, SelectConfig, SelectionResult, replay, select

__all__ = ["select", "replay", "SelectConfig", "SelectionResult", "Member", "METHODS", "list_selections",
           "show_selection", "diff_selections", "export_selection"]
