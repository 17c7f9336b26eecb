"""LESS step 3 and its audit: `select(ws, SelectConfig) -> SelectionResult`, replay, show/diff, export.

- `config`: the settings (SelectConfig, RunOptions); `plan`: what a selection will do (task, pool, filter, run,
  feature set, method parameters) before scoring; `targets`: several target tasks in one selection.
- `methods/`: the registry of selection methods, one module per family (`gradient`: LESS and its ablations;
  `text`: random, BM25, DSIR; `hidden`: RDS, RDS+; `hybrid`); its docstring says how to add one.
- `scoring`: the pure math (query folding, streamed BLAS scoring, max over subtasks, top-k with id ties);
  `baselines`: the baselines' math (BM25, DSIR n-grams); `fusion`: the hybrid's; `reading`: candidate and
  validation streams; `two_stage` (`--prefilter`) and `ray_scoring` (`--engine ray`): other ways to the same scores.
- `choose` (with `picking`, `budget`, `dedup`): from scores to members; `record`: the selection row;
  `select`: plan -> score -> record, and exact replay.
- `audit`: list / show / diff recorded selections; `export`: write the training set (JSONL/Parquet);
  `explain`, `diagnose` (with `noise` and `pool_scores`): what a selection's scores mean.

The storage-bound names are imported on first use, so `lessdb --help` (which lists the methods) loads no storage or torch.
"""
from __future__ import annotations

from ..lazy import lazy_exports
# light (numpy, no storage): imported now, so that `lessdb.selection.select` is the function, as it always was,
# even after the submodule of the same name is imported
from .methods import Scores, method_names, register_method
from .config import SelectConfig
from .record import Member, SelectionResult
from .select import replay, select

_LAZY = {"list_selections": "audit", "show_selection": "audit",
         "diff_selections": "audit", "export_selection": "export"}
__all__ = ["select", "replay", "SelectConfig", "SelectionResult", "Member", "Scores", "register_method",
           "method_names", *_LAZY]

__getattr__ = lazy_exports(__name__, {name: "." + module for name, module in _LAZY.items()})
