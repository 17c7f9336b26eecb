"""Audit pictures of recorded selections, for notebooks and `lessdb report` (one self-contained HTML page).

- `data`: a selection's members joined with candidate metadata, its filtered pool, every pool score recomputed
  (gradient methods, lessdb.selection.pool_scores) with the per-checkpoint split, and comparisons across selections (Jaccard, subtask counts).
- `plots`: matplotlib figures (Agg backend, no display needed) with labelled axes.
- `html`: the self-contained report page (plots embedded as base64 PNG).
"""
from ..selection.pool_scores import PoolScores, recompute_pool_scores
from .data import (SelectionData, checkpoint_contributions, completion_lengths, conversation_text,
                   examples_per_subtask, jaccard_matrix, length_summary, load_selection, selections_for_task,
                   source_mix, subtask_counts)

__all__ = ["PoolScores", "SelectionData", "load_selection", "recompute_pool_scores", "source_mix", "length_summary",
           "completion_lengths", "examples_per_subtask", "conversation_text", "selections_for_task",
           "jaccard_matrix", "subtask_counts", "checkpoint_contributions", "build_report", "write_report", "Table"]


def __getattr__(name):   # the HTML writer pulls in matplotlib; load it only when asked for
    if name in ("build_report", "write_report", "Table"):
        from . import html
        return getattr(html, name)
    raise AttributeError(name)
