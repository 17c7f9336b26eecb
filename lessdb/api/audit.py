"""The workspace as a whole: `sql` (read-only queries), `versions`, `verify` (fsck), `vacuum`."""
from __future__ import annotations

from .base import Record, command


class AuditAPI:
    @command()
    def sql(self, query: str, params=None, *, limit: int | None = None):
        """`lessdb sql`: a read-only query over the workspace (DuckDB metadata + the Lance `candidates` table)
        -> pyarrow.Table (`.to_pandas()` with pandas installed). `params` binds `?` (a list) or `$name` (a dict)
        placeholders; `limit` returns at most that many rows."""
        from ..storage.user_sql import readonly_arrow

        return readonly_arrow(self, query, params, limit=limit)

    @command()
    def versions(self) -> list[dict]:
        """`lessdb versions`: the LanceDB table versions and which ingest, job or selection made or read each."""
        from ..storage.versions import workspace_versions

        return workspace_versions(self)

    @command()
    def verify(self, *, repair: bool = False):
        """`lessdb verify`: check the workspace like fsck (and with `repair`, fix what is safe) -> VerifyReport
        (`.exit_code` 1 while errors remain)."""
        from ..verify import verify_workspace

        return verify_workspace(self, repair=repair)

    @command()
    def vacuum(self, *, dry_run: bool = False) -> Record:
        """`lessdb vacuum`: delete data files no table version references (killed writers' fragments); refused
        while a featurize job holds its lease. `dry_run`: only check that it is safe now."""
        from ..scale.vacuum import vacuum

        return Record(vacuum(self, dry_run=dry_run))
