"""A selection never silently scores a partial store (issue 23).

A gradient method scores the vectors a feature set holds. If a `featurize` job was killed, shards are still
running, or candidates were ingested (or filtered in) after the features were made, some candidates of the
filtered pool have no vector, and ranking "what exists" gives an answer that looks complete but is not (the
true top candidates may be among the missing). So `select` checks first, cheaply (DuckDB job rows and one
id-column scan per checkpoint), and refuses, naming how many are missing and the command that completes
them; `allow_partial` proceeds, says so and records it (`params.partial`), and a replay reproduces it.
After scoring, whatever any method (RDS embeddings too, or a scan that raced a writer) reports as
`missing_features` is held to the same rule.

A candidate that the feature set *excluded* (no completion token left after truncation, a zero gradient) is
not missing: it can never have a vector, and is counted as unscorable as before.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import LessdbError, ref
from ..settings import FieldText


class PartialFeatures(LessdbError):
    """The feature set lacks vectors the selection needs (exit 1: complete it, or allow a partial selection)."""

    def __init__(self, message: str):
        from .config import SelectConfig

        self.config_cls = SelectConfig   # the message names select's settings: the CLI shows their flags
        super().__init__(message)


@dataclass
class Coverage:
    n_candidates: int                                        # the filtered pool
    missing: dict[int, int] = field(default_factory=dict)   # checkpoint -> candidates with neither vector nor exclusion
    unfinished_jobs: list[str] = field(default_factory=list)
    n_missing: int = 0                                       # candidates missing at one checkpoint or more

    @property
    def partial(self) -> bool:
        return bool(self.n_missing or self.unfinished_jobs)

    def record(self) -> dict:
        return {"n_candidates": self.n_candidates, "n_missing": self.n_missing,
                "missing_by_checkpoint": {str(e): n for e, n in sorted(self.missing.items()) if n},
                "unfinished_jobs": list(self.unfinished_jobs)}


def feature_coverage(ws, plan, ids: list[str]) -> Coverage:
    """Which of the filtered candidates `ids` have no vector (and no exclusion) at the plan's checkpoints, and
    which candidate jobs of the feature set at those checkpoints are not complete (running or killed)."""
    from ..storage import features as fstore
    from ..storage import meta_features

    fs = plan.fs
    cov = Coverage(len(ids))
    wanted = set(plan.epochs)
    for job in meta_features.job_rows(ws, fs.feature_set_id):
        if job["role"] == "candidate" and int(job["epoch"]) in wanted and job["status"] != "complete":
            cov.unfinished_jobs.append(job["job_id"])
    # excluded at any checkpoint counts as excluded, as the scorer counts it (no completion token is the same
    # at every checkpoint)
    excluded = plan.candidate_exclusions
    if excluded is None:
        from ..storage.meta_selections import feature_exclusions

        excluded = feature_exclusions(ws, fs.feature_set_id)
    lacking: set[str] = set()
    for epoch in plan.epochs:
        present = fstore.present_example_ids(ws, fs.feature_set_id, epoch, "candidate")
        gone = [e for e in ids if e not in present and e not in excluded]
        cov.missing[epoch] = len(gone)
        lacking.update(gone)
    cov.n_missing = len(lacking)
    return cov


def require_complete_features(ws, plan, ids: list[str]) -> None:
    """Before scoring a gradient method: refuse a partial feature set unless `allow_partial` (then record it).
    Replays reproduce what was recorded and are never refused."""
    if plan.replaying or plan.fs is None or not plan.spec.feature_required:
        return
    cov = feature_coverage(ws, plan, ids)
    if not cov.partial:
        return
    if not plan.params.get("allow_partial"):
        raise PartialFeatures(refusal(plan, cov))
    plan.params["partial"] = cov.record()
    plan.params.setdefault("_notes", []).append(partial_note(plan, cov.n_missing, cov.n_candidates,
                                                             len(cov.unfinished_jobs)))


def require_scored_features(plan, unscorable: dict, n_candidates: int) -> None:
    """After scoring (every method): candidates the method found without a stored vector are refused the same
    way, unless `allow_partial`. Replays are never refused."""
    missing = int((unscorable or {}).get("missing_features", 0))
    if plan.replaying or not missing:
        return
    if not plan.params.get("allow_partial"):
        cov = Coverage(n_candidates, n_missing=missing)
        raise PartialFeatures(refusal(plan, cov))
    if "partial" not in plan.params:
        plan.params["partial"] = Coverage(n_candidates, n_missing=missing).record()
        plan.params.setdefault("_notes", []).append(partial_note(plan, missing, n_candidates, 0))


def refusal(plan, cov: Coverage) -> str:
    fs = plan.fs
    what = []
    if cov.n_missing:
        where = f" matching {ref('where')}" if plan.where else ""
        by = ", ".join(f"{n:,} at checkpoint {e}" for e, n in sorted(cov.missing.items()) if n)
        what.append(f"{cov.n_missing:,} of the {cov.n_candidates:,} candidates of pool {plan.pool!r}{where} have "
                    f"no stored vector" + (f" ({by})" if by else ""))
    if cov.unfinished_jobs:
        n = len(cov.unfinished_jobs)
        what.append(f"{n} featurize job{'s' if n > 1 else ''} of it {'are' if n > 1 else 'is'} not complete "
                    f"(still running, or killed: {', '.join(cov.unfinished_jobs[:3])}{' …' if n > 3 else ''})")
    rds = plan.params.get("rds") or {}
    name = fs.feature_set_id if fs is not None else rds.get("feature_set_id", "(embeddings)")
    return (f"feature set {name} is incomplete: {'; '.join(what)}. Scoring now would rank only the candidates "
            f"that have one. Complete it with `{completion_command(plan)}` (it computes only what is missing; "
            f"wait for running shards to finish), or pass {ref('allow_partial')} to select from what is stored.")


def completion_command(plan) -> str:
    from ..featurize.config import featurize_command

    fs = plan.fs
    if fs is None:   # RDS/RDS+: the embedding set of the recorded model, pooling and window
        rds = plan.params.get("rds") or {}
        return featurize_command({"run_id": plan.run_id, "grad_kind": f"hidden-{rds.get('pooling', 'mean')}",
                                  "max_seq_length": rds.get("max_seq_length")}, where=plan.where)
    return featurize_command(fs, epochs=plan.epochs or None, where=plan.where)   # only the filtered candidates


def partial_note(plan, n_missing: int, n_candidates: int, n_jobs: int) -> FieldText:
    from .config import SelectConfig

    jobs = f", {n_jobs} featurize job(s) unfinished" if n_jobs else ""
    return FieldText(SelectConfig, f"PARTIAL ({ref('allow_partial')}): {n_missing:,} of the {n_candidates:,} "
                                   f"filtered candidates have no stored vector{jobs}; they were not scored and cannot "
                                   f"be selected (a percentage still counts them); complete the feature set with "
                                   f"`{completion_command(plan)}`")
