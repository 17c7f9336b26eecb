"""Scale-out plumbing shared by the Ray engines of featurize (`lessdb.featurize.ray_engine`) and select
(`lessdb.selection.ray_scoring`), with the feature tables on an object store:

- `options`: how the Ray engines run (`RayOptions`, the engine names; light: no Ray, no storage);
- `cluster`: connecting the driver to Ray; `commits`: exactly-once Lance appends by transaction uuid;
- `shipping`: a checkpoint's files through Ray's object store to workers without a shared filesystem;
- `vacuum` (`lessdb vacuum`): removes fragments no version references (killed workers' leftovers).
Ray is optional (`lessdb[scale]`); nothing here imports it until an engine is chosen.
"""
from .options import RayOptions

__all__ = ["RayOptions"]
