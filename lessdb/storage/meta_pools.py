"""Metadata queries for pools and ingests."""
from __future__ import annotations


def version_producers(ws) -> dict[tuple[str, int], str]:
    """(lance table, version) -> a short description of what made it."""
    out: dict[tuple[str, int], str] = {}
    with ws.duck.connect(read_only=True) as con:
        for table, version, ingest_id, pool in con.execute(
                "SELECT lance_table, lance_version, ingest_id, pool FROM ingests WHERE lance_version IS NOT NULL").fetchall():
            out[(table, version)] = f"ingest {ingest_id} into pool {pool}"
    return out
