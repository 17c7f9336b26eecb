"""Evaluation of trained models on target tasks (SPEC §1 step 4): `run_eval`, `compare`, and the metrics.
`config` (the settings) is light; the rest (torch) is imported on first use, so `lessdb --help` stays fast."""
from __future__ import annotations

from ..lazy import lazy_exports
from .config import EvalConfig

_LAZY = {"EvalItem": "items", "TestSet": "items", "load_test_set": "sources",
         **{name: "run_eval" for name in ("EvalSummary", "run_eval", "evaluate_model", "compare", "compare_table")}}
__all__ = ["EvalConfig", *_LAZY]

__getattr__ = lazy_exports(__name__, {name: "." + module for name, module in _LAZY.items()})
