"""What every write command does first: clear what a killed process left behind, where that is safe now.

- rows of an ingest killed between its LanceDB write and its DuckDB record (readers never see them, see
  storage/candidates.py; they are deleted unless an ingest is running right now);
- Lance temp files of writes killed mid-file (deleted only when no Lance write is in flight in any process).

Both steps skip silently when another process is busy; `lessdb verify` reports whatever is left.
"""
from __future__ import annotations


def clean_up_after_kills(ws) -> dict:
    """Returns what was removed: {"ingests": [ids], "temp_files": n} (empty lists / 0 when nothing or busy)."""
    # imported here: every write command imports this module at its top, and `lessdb --help` reaches one of them
    # (selection.select, through the method registry) without needing storage (duckdb, pyarrow)
    from .candidates import roll_back_unrecorded_ingests

    rolled_back = roll_back_unrecorded_ingests(ws, wait=False) or set()
    removed = ws.lance.remove_abandoned_temp_files() or []
    return {"ingests": sorted(rolled_back), "temp_files": len(removed)}
