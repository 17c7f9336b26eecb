"""Evaluation of trained runs and base models: `eval` (method `evaluate`), `evals`, `compare`; and `validate`
(does training on a selection pay off on held-out items, against its comparisons?), `validations`."""
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

    @command(config_fields("ValidateConfig"))
    def validate(self, selection: str | None = None, *, config=None, **settings):
        """`lessdb validate`: train on a selection and on each comparison (random, bm25, rds+, hybrid, full) with
        one budget and `seeds` training seeds, score held-out test items of its target, and record per comparison
        the paired-bootstrap interval and verdict -> ValidationResult (`.lines`: the verdicts in words).
        `settings`: ValidateConfig fields (against="random,bm25", seeds, budget, test_file, preset, model, ...).
        Rerunning it resumes: every trained run and score that exists is reused."""
        from ..config import ValidateConfig
        from ..validate import validate_selection

        return validate_selection(self, make_config(ValidateConfig, settings, base=config, selection=selection))

    @command()
    def validations(self, selection: str | None = None) -> list[dict]:
        """`lessdb validations`: recorded validations (of one selection), each with its verdicts."""
        from ..storage.meta_selections import get_selection
        from ..storage.meta_validations import list_validations

        return list_validations(self, get_selection(self, selection)["selection_id"] if selection else None)
