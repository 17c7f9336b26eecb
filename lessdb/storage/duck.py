"""DuckDB connections and schema migrations.

DuckDB holds an exclusive lock on its file across processes (even read-only openers fail while a writer
is connected), so nothing in lessdb keeps a connection open for long: every caller takes a short-lived
connection through `DuckStore.connect()`, which retries while another lessdb process holds the file.
"""
from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator

import duckdb
import pyarrow as pa

from .. import faults
from ..errors import WorkspaceDamaged, WorkspaceError
from .damage import damage_of, raise_if_damage

LOCK_WAIT_SECONDS = 120.0


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def bundled_migrations() -> list[Migration]:
    """The numbered `NNNN_name.sql` files shipped as `lessdb.migrations`, in order."""
    found = []
    for entry in resources.files("lessdb.migrations").iterdir():
        if entry.name.endswith(".sql") and entry.name[:4].isdigit():
            found.append(Migration(int(entry.name[:4]), entry.name[5:-4], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers in lessdb.migrations: {versions}")
    return found


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text


class DuckStore:
    """The workspace's DuckDB file. `relations` supplies Arrow/Lance relations (e.g. `candidates`) that
    are registered by name on every connection, so views and user SQL can join them with metadata."""

    def __init__(self, path: Path, relations: Callable[[], dict[str, object]] | None = None):
        self.path = Path(path)
        self._relations = relations

    @contextmanager
    def connect(self, read_only: bool = False, with_relations: bool = False,
                relations: dict[str, object] | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        # relations first: resolving them may read metadata through a connection of its own
        rels = dict(self._relations() if (with_relations and self._relations) else {})
        rels.update(relations or {})
        con = self._open(read_only)
        try:
            for name, rel in rels.items():
                con.register(name, rel)
            yield con
        except duckdb.Error as exc:   # a block that fails its checksum, a file that ends early: not a bug
            raise_if_damage(exc)
            raise
        finally:
            con.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection inside BEGIN ... COMMIT; any exception rolls everything back."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        delay = 0.05
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as exc:
                if not _is_lock_error(exc) or time.monotonic() > deadline:
                    if _is_lock_error(exc):
                        raise WorkspaceError(
                            f"{self.path}: another process has held the metadata database for "
                            f"{LOCK_WAIT_SECONDS:.0f} s ({exc}); try again when it finishes") from exc
                    raise_if_damage(exc)
                    raise WorkspaceError(f"{self.path}: cannot open the metadata database: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 1.5, 1.0)
            except duckdb.Error as exc:       # not a DuckDB file, or a damaged one
                if damage_of(exc) is not None:
                    raise WorkspaceDamaged(f"{self.path} cannot be opened ({str(exc).splitlines()[0]})") from exc
                raise WorkspaceError(f"{self.path}: cannot open the metadata database: "
                                     f"{str(exc).splitlines()[0]}") from exc

    # -- migrations ---------------------------------------------------------------------------------
    def applied_migrations(self) -> list[tuple[int, str, str]]:
        with self.connect(read_only=True) as con:
            if not _has_table(con, "schema_migrations"):
                return []
            return con.execute("SELECT version, name, sha256 FROM schema_migrations ORDER BY version").fetchall()

    def migrate(self, migrations: list[Migration] | None = None,
                placeholders: dict[str, pa.Table] | None = None) -> list[Migration]:
        """Apply every migration not yet recorded, each in its own transaction, in order.

        Refuses a workspace whose schema is newer than this lessdb, or whose applied migration files were
        edited since. `placeholders` are empty Arrow tables registered under the names of Lance-backed
        relations, so views over them can be created (DuckDB binds a view's names when it is created).
        """
        migrations = bundled_migrations() if migrations is None else migrations
        known = {m.version: m for m in migrations}
        applied_now = []
        with self.connect() as con:
            for name, table in (placeholders or {}).items():
                con.register(name, table)
            con.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                        "name VARCHAR NOT NULL, sha256 VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)")
            applied = con.execute("SELECT version, name, sha256 FROM schema_migrations ORDER BY version").fetchall()
            newest_known = max(known, default=0)
            for version, name, sha in applied:
                if version > newest_known:
                    raise WorkspaceError(
                        f"{self.path}: this workspace's schema is at migration {version:04d}_{name}, newer than "
                        f"this lessdb knows (up to {newest_known:04d}). Upgrade lessdb to open it.")
                if known[version].sha256 != sha:
                    raise WorkspaceError(
                        f"{self.path}: migration {version:04d}_{name} was applied from a different file "
                        f"(sha256 {sha[:12]}…, bundled {known[version].sha256[:12]}…); refusing to guess.")
            done = {v for v, _, _ in applied}
            for m in migrations:
                if m.version in done:
                    continue
                con.execute("BEGIN TRANSACTION")
                try:
                    con.execute(m.sql)
                    con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?, current_timestamp)",
                                [m.version, m.name, m.sha256])
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                applied_now.append(m)
                faults.point("init.after_migration")
        return applied_now


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                            [name]).fetchone()[0])
