"""Ingest: instruction files -> the LanceDB `candidates` table (one new version) + DuckDB records.

Two streaming passes per ingest: the first validates every record and computes ids (so a bad record
stops the ingest before anything is written), the second writes the new rows as ONE table version.
"""
from ..lazy import lazy_exports

# loaded on first use, so that `lessdb --help` can read the format names without the writer's imports
__getattr__ = lazy_exports(__name__, {name: ".pipeline" for name in
                                      ("IngestReport", "builtin_source_path", "ingest_builtin", "ingest_files")})

__all__ = ["IngestReport", "ingest_files", "ingest_builtin", "builtin_source_path"]
