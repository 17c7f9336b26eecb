"""Table versions of a workspace, annotated with what produced them."""
from __future__ import annotations

from . import meta_pools


def workspace_versions(ws) -> list[dict]:
    made_by = meta_pools.version_producers(ws)
    rows = []
    for name in sorted(ws.lance.table_names()):
        for v in ws.lance.versions(name):
            v["made_by"] = made_by.get((name, v["version"]), "")
            rows.append(v)
    return rows
