"""Ingest: instruction data (JSON/JSONL, Parquet, Arrow, Hugging Face folders, s3://, objects in memory) -> the
LanceDB `candidates` table (one new version) + DuckDB records.

One streaming pass validates and normalises every record and spills the new rows to local disk, so a bad
record stops the ingest before anything is written; then the rows are appended as ONE table version.
"""
from ..lazy import lazy_exports

# loaded on first use, so that `lessdb --help` can read the format names without the writer's imports
__getattr__ = lazy_exports(__name__, {name: ".pipeline" for name in
                                      ("IngestReport", "builtin_source_path", "ingest_builtin", "ingest_files",
                                                        "ingest_object")})

__all__ = ["IngestReport", "ingest_files", "ingest_object", "ingest_builtin", "builtin_source_path"]
