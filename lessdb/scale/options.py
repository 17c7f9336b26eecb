"""How the Ray engines run (light: no Ray, no storage), declared once as settings: `featurize --engine ray` takes
its options from `RayOptions`, and `select` shares its cluster address setting (`ray_address_setting`)."""
from __future__ import annotations

from dataclasses import dataclass

from ..settings import check_ranges, raise_problems, setting

ENGINES = ("local", "ray")
_ADDRESS_HELP = ("Ray engine: local (start a private cluster), auto, or HOST:PORT of a running cluster.")


def ray_address_setting(**kwargs):
    """The Ray cluster address, one definition for every config that has it."""
    return setting("local", _ADDRESS_HELP, flag="--ray-address", **kwargs)


@dataclass(frozen=True)
class RayOptions:
    """How `featurize --engine ray` runs (never recorded: both engines store bit-identical vectors)."""
    address: str = ray_address_setting()
    workers: int = setting(2, "Ray engine: actors (one model each).", flag="--workers", min=1)
    gpus_per_worker: float = setting(0.0, "Ray engine: GPUs per actor (0: CPU).", flag="--gpus-per-worker", min=0)
    cpus_per_worker: float = setting(1.0, "Ray engine: CPUs per actor.", cli=False)
    unit_rows: int | None = setting(None, "Ray engine: examples per work unit (default: the local engine's chunk, so "
                                    "vectors are bit-identical; larger units mean fewer, bigger fragments).",
                                    flag="--unit-rows", min=1)
    commit_units: int = setting(8, "Ray engine: finished units per Lance commit (a crash recomputes at most one "
                                "such batch).", flag="--commit-units", min=1)
    commit_seconds: float = setting(60.0, "Ray engine: commit at least this often.", cli=False)

    def validate(self) -> None:
        problems = []
        check_ranges(self, problems)
        raise_problems(self, problems)
