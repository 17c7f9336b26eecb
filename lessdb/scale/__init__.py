"""Scale out: featurize and select on a Ray cluster, with the feature tables on an object store.

- `featurize_ray` (featurize_ray.py): driver plans from DuckDB + Lance, Ray actors write Lance fragments, the
  driver commits one Append per batch of units (exactly once, by transaction uuid) and records it in DuckDB.
- `score_ray` (select_ray.py): fragment-by-fragment scoring at the pinned table version.
- `vacuum` (vacuum.py): removes fragments no version references (killed workers' leftovers).
Ray is optional (`lessdb[scale]`); nothing here imports it until an engine is chosen.
"""
from .featurize_ray import RayOptions, featurize_ray

__all__ = ["RayOptions", "featurize_ray"]
