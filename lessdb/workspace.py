"""A workspace: one directory holding a LanceDB database, a DuckDB file and checkpoint files.

The LanceDB tables may instead live on an object store (`lessdb init --tables s3://bucket/prefix`, recorded in
the workspace's tables.json); the DuckDB catalogue and checkpoints always stay in the directory."""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from . import faults
from .api import WorkspaceAPI, command
from .errors import WorkspaceDamaged, WorkspaceError
from .storage.duck import DuckStore
from .storage.lance_tables import CANDIDATE_SCHEMA, CANDIDATES, LanceStore
from .storage.object_store import configure as configure_tables
from .storage.object_store import load_location

DEFAULT_WORKSPACE = "lessdb-workspace"
DUCKDB_FILE = "lessdb.duckdb"
LANCE_DIR = "lance"


def default_workspace_path() -> Path:
    return Path(os.environ.get("LESSDB_WORKSPACE", DEFAULT_WORKSPACE))


class Workspace(WorkspaceAPI):
    """Open with `Workspace.init(path)` (creates) or `Workspace.open(path)` (must exist; migrates). The
    pipeline's methods (`ingest`, `warmup`, `featurize`, `select`, ..., `sql`), one per command, are in
    `lessdb/api/`."""

    def __init__(self, root: Path):
        if os.environ.get("LESSDB_WORKER") == "1":
            # distributed workers (lessdb.scale) only write Lance fragments; the driver owns the catalogue
            raise WorkspaceError("a lessdb worker process must not open the workspace's DuckDB catalogue")
        self.root = Path(root).resolve()
        self.tables = load_location(self.root, LANCE_DIR)
        self.lance = LanceStore(self.tables.uri, self.tables.options())
        self.duck = DuckStore(self.root / DUCKDB_FILE, relations=self.lance_relations)

    # -- lifecycle ------------------------------------------------------------------------------
    @classmethod
    @command()
    def init(cls, path: Path | str | None = None, tables: str | None = None,
             storage_options: dict | list[str] | None = None) -> "Workspace":
        """`lessdb init`: create a workspace (or upgrade an existing one) -> the Workspace (`.as_dict()`: what
        `init --json` prints). `tables`: where the Lance tables go (default `<path>/lance`; or
        s3://bucket/prefix), with non-secret `storage_options`, a dict or KEY=VALUE strings (credentials come
        from AWS_* environment variables)."""
        from .storage.object_store import parse_storage_options

        if storage_options is not None and not isinstance(storage_options, dict):
            storage_options = parse_storage_options(storage_options)
        root = Path(path) if path is not None else default_workspace_path()
        # the tables' location first: one that cannot be used is refused before the workspace folder exists
        configure_tables(root.resolve(), LANCE_DIR, tables, storage_options or {})
        root.mkdir(parents=True, exist_ok=True)
        for sub in (LANCE_DIR, "checkpoints", "models", "exports", "locks"):
            (root / sub).mkdir(exist_ok=True)
        ws = cls(root)
        ws.migrate()
        faults.point("init.before_tables")
        ws.lance.ensure_table(CANDIDATES, CANDIDATE_SCHEMA)
        return ws

    @classmethod
    @command()
    def open(cls, path: Path | str | None = None, *, damaged_ok: bool = False) -> "Workspace":
        """`damaged_ok`: open even when the catalogue cannot be read (what `verify` needs, to report it)."""
        root = Path(path) if path is not None else default_workspace_path()
        if not (root / DUCKDB_FILE).exists():
            raise WorkspaceError(f"{root}: no lessdb workspace here; create one with `lessdb init --workspace {root}`")
        ws = cls(root)
        try:
            ws.migrate()
        except WorkspaceDamaged:
            if not damaged_ok:
                raise
        return ws

    def migrate(self):
        applied = self.duck.migrate(placeholders=self.lance_placeholders())
        if any(m.name == "relative_paths" for m in applied):   # the rest of the one-off rewrite (paths.py)
            from .storage.paths import relativize_stored_paths

            relativize_stored_paths(self)
        return applied

    def as_dict(self) -> dict:
        """Where it is and its schema (what `lessdb init --json` prints)."""
        return {"workspace": str(self.root), "tables": self.tables.uri,
                "migrations": [f"{v:04d}_{n}" for v, n, _ in self.duck.applied_migrations()]}

    # -- paths ------------------------------------------------------------------------------------
    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    # -- Lance relations visible in DuckDB ----------------------------------------------------------
    def lance_relations(self, versions: dict[str, int] | None = None) -> dict[str, object]:
        """Lance tables DuckDB can query by name (`candidates`), optionally pinned to versions. Unpinned,
        `candidates` is read at the version of the last recorded ingest (storage/candidates.py says why)."""
        from .storage.candidates import candidates_version

        versions = versions or {}
        rels = {}
        if self.lance.has_table(CANDIDATES):
            version = versions.get(CANDIDATES)
            rels[CANDIDATES] = self.lance.dataset(CANDIDATES, candidates_version(self) if version is None else version)
        return rels

    @staticmethod
    def lance_placeholders() -> dict[str, pa.Table]:
        return {CANDIDATES: CANDIDATE_SCHEMA.empty_table()}

    # -- cross-process write lock -------------------------------------------------------------------
    @contextmanager
    def write_lock(self, name: str) -> Iterator[None]:
        """Serialise writers of one kind (e.g. ingests) across processes; released even on kill."""
        with self._flock(name, wait=True):
            yield

    @contextmanager
    def try_write_lock(self, name: str) -> Iterator[bool]:
        """`write_lock` without waiting: yields True holding it, False if another process holds it now."""
        with self._flock(name, wait=False) as held:
            yield held

    @contextmanager
    def _flock(self, name: str, wait: bool) -> Iterator[bool]:
        lock_dir = self.root / "locks"
        lock_dir.mkdir(exist_ok=True)
        with open(lock_dir / f"{name}.lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
