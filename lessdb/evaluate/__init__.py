"""Evaluation of trained models on target tasks (SPEC §1 step 4): `run_eval`, `compare`, and the metrics."""
from .items import EvalItem, TestSet, load_test_set
from .run_eval import EvalConfig, EvalSummary, compare, compare_table, evaluate_model, run_eval

__all__ = ["EvalConfig", "EvalSummary", "EvalItem", "TestSet", "load_test_set", "run_eval", "evaluate_model",
           "compare", "compare_table"]
