"""Evaluation of trained runs and base models: `eval` (method `evaluate`), `evals`, `compare`."""
from __future__ import annotations

from .base import command, config_fields, make_config


class EvaluationAPI:
    @command(config_fields("EvalConfig"))
    def evaluate(self, task: str | None = None, *, config=None, **settings):
        """`lessdb eval`: evaluate a run's checkpoint (`run_id=`) or a base model (`model=`) on a task and record
        it -> EvalSummary. `settings`: EvalConfig fields (epoch, limit, metrics, data_dir, ...)."""
        from ..config import EvalConfig
        from ..evaluate.run_eval import run_eval

        return run_eval(self, make_config(EvalConfig, settings, base=config, task=task))

    @command()
    def evals(self, task: str | None = None) -> list[dict]:
        """`lessdb evals`: recorded evaluations with their task-level results."""
        from ..storage.meta_evals import list_evals

        return list_evals(self, task)

    @command()
    def compare(self, task: str) -> list[dict]:
        """`lessdb compare`: methods x metrics of a task's evaluations (mean and std over seeds)."""
        from ..evaluate.run_eval import compare

        return compare(self, task)
