"""Paths stored in the catalogue are relative to the workspace root, so a workspace can be copied or moved
(`cp -a WS WS2`, `mv WS elsewhere`) and each copy reads only its own files (issue 23).

Writers store `stored_path(root, path)`: a path inside the workspace as a relative POSIX path
(`checkpoints/<run>/epoch-1`), anything outside it (a user's model folder, an export elsewhere) as it was
given. Readers get `resolved_path(root, text)`: relative paths joined to the workspace's root as it is now.
Catalogues written before this rule are rewritten once (migrations/0020_relative_paths.sql, then
`relativize_stored_paths` for anything else that pointed inside the root when the migration ran).

A run's model (`runs.model_name`) is a name (`smollm2-135m`, `tiny`) or a model folder's absolute path; a folder
inside the workspace is stored as `./<relative path>` (`stored_model_name`: the `./` tells it from a name) and
read back absolute (`resolved_model_name`); so are the `models` table's `name` and `source` of such a folder.
"""
from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from ..output_file import STDOUT   # an export written to standard output: not a path

_SCHEME = re.compile(r"^[A-Za-z][\w+.-]*:")   # `builtin:tiny` (the tiny model has no folder): not a path
MODEL_IN_WORKSPACE = "./"   # runs.model_name of a model folder inside the workspace: ./<its relative path>


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


def stored_model_name(root: Path | str, name: str) -> str:
    """What `runs.model_name` stores for a run's model (see the module docstring)."""
    if not os.path.isabs(name):
        return name
    rel = stored_path(root, name)
    return rel if os.path.isabs(rel) else MODEL_IN_WORKSPACE + rel


def resolved_model_name(root: Path | str, text: str | None) -> str | None:
    """The model a stored `runs.model_name` means in the workspace at `root`."""
    if text is None or not text.startswith(MODEL_IN_WORKSPACE):
        return text
    return str(Path(root) / text[len(MODEL_IN_WORKSPACE):])


def stored_model_source(root: Path | str, source: str) -> str:
    """A model's `source` (`dir:<folder>`, `gguf:...`, `config:tiny`): a folder inside the workspace as
    `dir:./<relative path>`, as `stored_model_name` stores it (provenance: never read back as a path)."""
    kind, sep, where = source.partition(":")
    return f"{kind}:{stored_model_name(root, where)}" if kind == "dir" and sep else source


# (table, key columns, column, how it is stored) of every catalogue column that holds a path
PATH_COLUMNS = (("checkpoints", ("run_id", "epoch"), "path", stored_path),
                ("models", ("model_sha256",), "path", stored_path),
                ("exports", ("selection_id", "created_at"), "path", stored_path),
                ("runs", ("run_id",), "model_name", stored_model_name),
                ("models", ("model_sha256",), "name", stored_model_name),
                ("models", ("model_sha256",), "source", stored_model_source))


def relativize_stored_paths(ws) -> int:
    """Rewrite every stored absolute path that points inside the workspace as it is now into a relative one
    (run once, when the migration that introduced relative paths is applied); returns how many changed."""
    changed = 0
    with ws.duck.transaction() as con:
        for table, keys, column, to_stored in PATH_COLUMNS:
            rows = con.execute(f"SELECT {', '.join(keys)}, {column} FROM {table}").fetchall()
            for row in rows:
                old = row[-1]
                new = to_stored(ws.root, old) if old else old
                if new != old:
                    cond = " AND ".join(f"{k} = ?" for k in keys)
                    con.execute(f"UPDATE {table} SET {column} = ? WHERE {cond} AND {column} = ?",
                                [new, *row[:-1], old])
                    changed += 1
    return changed
