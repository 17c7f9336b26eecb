"""LanceDB tables: the big, append-only, versioned data.

- `candidates`: one row per (pool, candidate). `key = "<pool>/<id>"` is its unenforced primary key, so
  concurrent `merge_insert` stays duplicate-free (LanceDB duplicates rows under concurrency without one).
- `features_<feature_set_id>`: one table per feature set, so vectors of different sketches, dimensions or
  dtypes can never mix. Written by the featurize stage (see `lessdb.storage.features`).

Every write is one `add()`/`merge_insert()` = one table version; DuckDB records which version each ingest,
job and selection produced or read, and reads can be pinned to a version (time travel) for replay.

Reads go straight to pylance (`lance.dataset(<root>/<name>.lance, version)`, what lancedb's `to_lance()`
returns): `import lancedb` costs 3-8 s on a loaded 2-core machine (its REST namespace client), `import lance`
little more than pyarrow, so listing and audit commands never import lancedb. Writes, tags and table
creation connect through lancedb on first use.

Lance writes each data and transaction file under a temp name (`.tmpXXXXXX`, renamed when complete); a
process killed mid-write leaves that file behind, often empty. Every lessdb write to Lance therefore runs
inside `LanceStore.writing()`, a shared flock: whoever gets the exclusive lock (`temp_files_quiesced`) knows
no write is in flight, so every temp file left is garbage (`lessdb verify --repair` and each write command
remove them).
"""
from __future__ import annotations

import fcntl
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa

CANDIDATES = "candidates"
TEMP_PREFIX = ".tmp"   # Lance's (Rust tempfile) staging names inside a table directory

MESSAGE_TYPE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])

CANDIDATE_SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False),          # "<pool>/<id>"
    pa.field("id", pa.string(), nullable=False),           # content hash of the normalised conversation
    pa.field("pool", pa.string(), nullable=False),
    pa.field("ingest_id", pa.int64(), nullable=False),
    pa.field("source_dataset", pa.string()),
    pa.field("source_id", pa.string()),
    pa.field("messages", pa.list_(MESSAGE_TYPE), nullable=False),
    pa.field("n_turns", pa.int32(), nullable=False),
    pa.field("prompt_chars", pa.int32(), nullable=False),
    pa.field("completion_chars", pa.int32(), nullable=False),
    pa.field("total_chars", pa.int32(), nullable=False),
    # every other field/column of the input record as one JSON object (NULL: none). Added after the first
    # release: `storage/candidates.py:add_missing_columns` adds it to older tables (their rows read NULL)
    pa.field("metadata", pa.string()),
])


class LanceStore:
    """The workspace's LanceDB database."""

    def __init__(self, root: Path | str, storage_options: dict | None = None):
        # `root`: a local folder, or an object-store URI (s3://bucket/prefix; see storage/object_store.py)
        self.location = str(root)
        self.remote = "://" in self.location
        self.root = None if self.remote else Path(self.location)
        self.storage_options = storage_options
        self._db = None

    @property
    def db(self):
        """The lancedb connection, made on first use (writes, tags, table creation)."""
        if self._db is None:
            import lancedb

            self._db = lancedb.connect(self.location, storage_options=self.storage_options)
        return self._db

    def uri(self, name: str) -> Path | str:
        return self.root / f"{name}.lance" if not self.remote else self.table_uri(name)

    def table_uri(self, name: str) -> str:
        """The table's dataset URI, for pylance calls that take one (fragment writes, commits)."""
        return f"{self.location.rstrip('/')}/{name}.lance"

    # -- writer registry (see the module docstring) ----------------------------------------------------------
    @property
    def _writers_lock(self) -> Path:
        return self.root.parent / "locks" / "lance-writers.lock"

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Mark a Lance write in flight (shared: any number of writers at once, across processes). Object
        stores have no temp files (a put is atomic): nothing to mark there."""
        if self.remote:
            yield
            return
        self._writers_lock.parent.mkdir(parents=True, exist_ok=True)
        with open(self._writers_lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            yield   # closing the file releases the lock, also when the process is killed

    @contextmanager
    def temp_files_quiesced(self) -> Iterator[bool]:
        """Try to hold off every writer: yields True if no write was in flight (then, until the block ends,
        none starts), False if some process is writing now."""
        if self.remote:
            yield True
            return
        self._writers_lock.parent.mkdir(parents=True, exist_ok=True)
        with open(self._writers_lock, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True

    def temp_files(self) -> list[Path]:
        """Staging files Lance left in table directories (in flight or abandoned: see `temp_files_quiesced`)."""
        if self.remote or not self.root.exists():
            return []
        return sorted(p for table in self.root.glob("*.lance") for p in table.rglob(TEMP_PREFIX + "*")
                      if p.is_file())

    def remove_abandoned_temp_files(self) -> list[Path] | None:
        """Delete the temp files of killed writes if no write is in flight now (None: writers active)."""
        with self.temp_files_quiesced() as quiet:
            if not quiet:
                return None
            removed = []
            for path in self.temp_files():
                try:
                    path.unlink()
                    removed.append(path)
                except FileNotFoundError:
                    pass
            return removed

    def table_names(self) -> list[str]:
        """Tables with at least one committed version (a folder lancedb lists and lance can open)."""
        if self.remote:   # an object store has no folders to glob: ask lancedb
            return sorted(self.db.list_tables().tables)
        if not self.root.is_dir():
            return []
        return sorted(p.name[: -len(".lance")] for p in self.root.glob("*.lance") if (p / "_versions").is_dir())

    def has_table(self, name: str) -> bool:
        if self.remote:
            return name in self.table_names()
        return (self.uri(name) / "_versions").is_dir()

    def open(self, name: str, version: int | None = None):
        table = self.db.open_table(name)
        if version is not None:
            table.checkout(version)
        return table

    def ensure_table(self, name: str, schema: pa.Schema, primary_key: str | None = "key"):
        if name in self.db.list_tables().tables:
            return self.db.open_table(name)
        with self.writing():
            try:
                table = self.db.create_table(name, schema=schema)
            except (ValueError, OSError, RuntimeError):
                # another process created it between our check and our create
                return self.db.open_table(name)
            if primary_key:
                table.set_unenforced_primary_key(primary_key)
        return table

    def schema(self, name: str) -> pa.Schema | None:
        """The table's current schema (None: no such table)."""
        return self.dataset(name).schema if self.has_table(name) else None

    def version(self, name: str) -> int | None:
        """The latest committed version (None: no such table)."""
        return self.dataset(name).version if self.has_table(name) else None

    def dataset(self, name: str, version: int | None = None):
        """A pylance dataset at `version` (None: the latest); DuckDB scans it with filter/projection pushdown."""
        import lance

        return lance.dataset(str(self.uri(name)), version=version, storage_options=self.storage_options)

    def versions(self, name: str) -> list[dict]:
        return [{"table": name, "version": v["version"], "timestamp": v["timestamp"],
                 "rows": (v.get("metadata") or {}).get("total_rows")} for v in self.dataset(name).versions()]

    def append(self, name: str, batches: Iterable[pa.RecordBatch] | pa.Table, schema: pa.Schema) -> int:
        """Append as exactly one new version; returns that version."""
        table = self.ensure_table(name, schema)
        if isinstance(batches, pa.Table):
            data = batches
        else:
            data = pa.RecordBatchReader.from_batches(schema, iter(batches))
        with self.writing():
            table.add(data)
        return table.version

    def insert_missing(self, name: str, data: pa.Table, schema: pa.Schema, key: str = "key") -> tuple[int, int]:
        """Insert rows whose key is absent (idempotent under concurrency); returns (version, inserted)."""
        table = self.ensure_table(name, schema)
        for attempt in range(8):
            try:
                with self.writing():
                    result = table.merge_insert(key).when_not_matched_insert_all().execute(data)
                return result.version, result.num_inserted_rows
            except (OSError, RuntimeError) as exc:  # lancedb #1597: commit conflicts need a retry
                if "onflict" not in str(exc) or attempt == 7:
                    raise
                time.sleep(0.1 * (attempt + 1))
                table.checkout_latest()
        raise AssertionError("unreachable")

    def add_columns(self, name: str, fields: list[pa.Field]) -> int:
        """Add nullable columns to an existing table (a schema-only version: no data file is rewritten; rows
        written before read NULL); returns the new version."""
        ds = self.dataset(name)
        with self.writing():
            ds.add_columns(fields)
        return self.dataset(name).version

    def delete(self, name: str, where: str) -> None:
        if self.has_table(name):
            with self.writing():
                self.db.open_table(name).delete(where)
