"""How the Ray engines run (light: no Ray, no storage), declared once as settings: `featurize --engine ray` takes
its options from `RayOptions`, and `select` shares its cluster address setting (`ray_address_setting`)."""
from __future__ import annotations

from dataclasses import dataclass

from ..settings import raise_problems, setting

ENGINES = ("local", "ray")
_ADDRESS_HELP = ("Ray engine: local (start a private cluster), auto, or HOST:PORT of a running cluster.")


def ray_address_setting(**kwargs):
    """The Ray cluster address, one definition for every config that has it."""
    return setting("local", _ADDRESS_HELP, flag="--ray-address", **kwargs)


@dataclass(frozen=True)
class RayOptions:
    """How `featurize --engine ray` runs (never recorded: both engines store bit-identical vectors)."""
    address: str = ray_address_setting()
    workers: int = setting(2, "Ray engine: actors (one model each).", flag="--workers")
    gpus_per_worker: float = setting(0.0, "Ray engine: GPUs per actor (0: CPU).", flag="--gpus-per-worker")
    cpus_per_worker: float = setting(1.0, "Ray engine: CPUs per actor.", cli=False)
    unit_rows: int | None = setting(None, "Ray engine: examples per work unit (default: the local engine's chunk, so "
                                    "vectors are bit-identical; larger units mean fewer, bigger fragments).",
                                    flag="--unit-rows")
    commit_units: int = setting(8, "Ray engine: finished units per Lance commit (a crash recomputes at most one "
                                "such batch).", flag="--commit-units")
    commit_seconds: float = setting(60.0, "Ray engine: commit at least this often.", cli=False)

    def validate(self) -> None:
        problems = []
        if self.workers < 1:
            problems.append(("workers", f"{self.workers} must be >= 1"))
        if self.gpus_per_worker < 0:
            problems.append(("gpus_per_worker", f"{self.gpus_per_worker} must be >= 0"))
        if self.commit_units < 1:
            problems.append(("commit_units", f"{self.commit_units} must be >= 1"))
        if self.unit_rows is not None and self.unit_rows < 1:
            problems.append(("unit_rows", f"{self.unit_rows} must be >= 1"))
        raise_problems(self, problems)
