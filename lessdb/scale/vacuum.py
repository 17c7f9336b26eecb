"""`lessdb vacuum`: delete data files no table version references — fragments written by workers (or writes)
that were killed before their commit. They are invisible to readers already; this only reclaims the space.

Every version is kept (selections pin versions, and replay reads them): Lance's cleanup runs with an age
limit no version reaches, and only `delete_unverified` removes the unreferenced files. Because an unreferenced
file may also be a fragment that a running job wrote but has not committed yet, vacuum refuses while any
featurize job holds its lease, and it holds the workspace's ingest and feature write locks meanwhile.
"""
from __future__ import annotations

from datetime import timedelta

from ..errors import LessdbError
from ..storage import meta_leases

KEEP_EVERY_VERSION = timedelta(days=365 * 1000)


def vacuum(ws, dry_run: bool = False) -> dict:
    """{tables: {name: {files_removed, bytes_removed, versions_removed (always 0)}}}. Raises while a job holds
    a lease."""
    live = meta_leases.live_leases(ws)
    if live:
        jobs = ", ".join(f"{j['job_id']} ({j['engine'] or 'local'}, {j['owner']})" for j in live)
        raise LessdbError(f"not vacuuming: featurize job(s) {jobs} hold their lease and may have written fragments "
                          "they have not committed yet; run vacuum when they have finished (or were killed)")
    out = {}
    with ws.write_lock("candidates"), ws.write_lock("features"):
        for name in sorted(ws.lance.table_names()):
            if dry_run:
                out[name] = {"files_removed": None, "bytes_removed": None, "versions_removed": 0}
                continue
            ds = ws.lance.dataset(name)
            stats = ds.cleanup_old_versions(older_than=KEEP_EVERY_VERSION, delete_unverified=True,
                                            error_if_tagged_old_versions=False)
            out[name] = {"files_removed": int(stats.data_files_removed), "bytes_removed": int(stats.bytes_removed),
                         "versions_removed": int(stats.old_versions)}
    return {"tables": out}
