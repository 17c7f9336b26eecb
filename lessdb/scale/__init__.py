"""Scale out: featurize and select on a Ray cluster, with the feature tables on an object store.

- `featurize_ray` (featurize_ray.py): driver plans from DuckDB + Lance, Ray actors write Lance fragments, the
  driver commits one Append per batch of units (exactly once, by transaction uuid) and records it in DuckDB.
- `score_ray` (select_ray.py): fragment-by-fragment scoring at the pinned table version.
- `vacuum` (vacuum.py): removes fragments no version references (killed workers' leftovers).
Ray is optional (`lessdb[scale]`); nothing here imports it until an engine is chosen.
"""
from ..lazy import lazy_exports
from .options import RayOptions

__all__ = ["RayOptions", "featurize_ray"]
# the engine (storage, Lance) loads on first use: `lessdb --help` reads RayOptions' settings only
__getattr__ = lazy_exports(__name__, {"featurize_ray": ".featurize_ray"})
