"""Paths stored in the catalogue are relative to the workspace root, so a workspace can be copied or moved
(`cp -a WS WS2`, `mv WS elsewhere`) and each copy reads only its own files (issue 23).

Writers store `stored_path(root, path)`: a path inside the workspace as a relative POSIX path
(`checkpoints/<run>/epoch-1`), anything outside it (a user's model folder, an export elsewhere) as it was
given. Readers get `resolved_path(root, text)`: relative paths joined to the workspace's root as it is now.
Catalogues written before this rule are rewritten once (migrations/0020_relative_paths.sql, then
`relativize_stored_paths` for anything else that pointed inside the root when the migration ran).
"""
from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

STDOUT = "-"        # an export written to standard output: not a path
_SCHEME = re.compile(r"^[A-Za-z][\w+.-]*:")   # `builtin:tiny` (the tiny model has no folder): not a path
# (table, key columns, path column) of every catalogue column that holds a path
PATH_COLUMNS = (("checkpoints", ("run_id", "epoch"), "path"), ("models", ("model_sha256",), "path"),
                ("exports", ("selection_id", "created_at"), "path"))


def stored_path(root: Path | str, path: Path | str) -> str:
    """What the catalogue stores for an absolute `path` (see the module docstring); anything else (a value that
    is no path, such as `builtin:tiny` or `-`) as it is."""
    text = os.fspath(path)
    if not os.path.isabs(text):
        return text
    real_root = os.path.realpath(root)
    for candidate in (os.path.abspath(text), os.path.realpath(text)):
        rel = os.path.relpath(candidate, real_root) if candidate.startswith(real_root + os.sep) else None
        if rel is not None:
            return PurePosixPath(Path(rel)).as_posix()
    return text


def resolved_path(root: Path | str, text: str | None) -> str | None:
    """The path a stored value means in the workspace at `root`."""
    if text is None or text == STDOUT or os.path.isabs(text) or _SCHEME.match(text):
        return text
    return str(Path(root) / text)


def relativize_stored_paths(ws) -> int:
    """Rewrite every stored absolute path that points inside the workspace as it is now into a relative one
    (run once, when the migration that introduced relative paths is applied); returns how many changed."""
    changed = 0
    with ws.duck.transaction() as con:
        for table, keys, column in PATH_COLUMNS:
            rows = con.execute(f"SELECT {', '.join(keys)}, {column} FROM {table}").fetchall()
            for row in rows:
                old = row[-1]
                new = stored_path(ws.root, old) if old else old
                if new != old:
                    cond = " AND ".join(f"{k} = ?" for k in keys)
                    con.execute(f"UPDATE {table} SET {column} = ? WHERE {cond} AND {column} = ?",
                                [new, *row[:-1], old])
                    changed += 1
    return changed
