"""Files lessdb writes where the user says (`export --output`, `select --output`, `report --output`): the
destination is checked before any work, and the file is written to a temporary file in the same folder and
moved into place, so a failure never leaves a half-written file (or a stray temporary one) behind; a writer
killed mid-write leaves its temporary file (named with its pid), which the next write to that folder deletes.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from .errors import InputError, ref


def check_destination(output: str | os.PathLike, force: bool, field: str = "output") -> Path:
    """`output` as a Path if a file can be written there: not empty, not a folder, not under a regular file,
    no name longer than the file system allows, and not an existing file unless `force`. Raises InputError
    naming the path and the setting (`field`; the CLI shows its flag)."""
    text = os.fspath(output)
    if not text.strip():
        raise InputError("empty path; give a file name", field=ref(field))
    if "\x00" in text:
        raise InputError("contains a NUL character", field=ref(field))
    shown = text if len(text) <= 120 else text[:100] + "…"
    path = Path(text)
    try:
        limit = _name_max(path)
        long_part = next((p for p in path.parts if len(os.fsencode(p)) > limit), None)
        if long_part is not None:
            raise InputError(f"a path component is {len(os.fsencode(long_part))} bytes; this file system allows "
                             f"{limit}", file=shown, field=ref(field))
        if text.endswith(os.sep) or path.is_dir():
            raise InputError("is a folder; give a file path", file=shown, field=ref(field))
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise InputError(f"{parent} is a file, not a folder", file=shown, field=ref(field))
                break
        if (path.exists() or path.is_symlink()) and not force:
            raise InputError(f"exists; pass {ref('force')} to overwrite it, or choose another path", file=shown,
                             field=ref(field))
    except OSError as exc:     # e.g. a path longer than PATH_MAX, a folder we may not look into
        raise InputError(exc.strerror or str(exc), file=shown, field=ref(field)) from None
    return path


def write_atomically(path: Path, write: Callable[[BinaryIO], None], overwrite: bool, field: str = "output") -> None:
    """Create `path`'s folders, `write(fh)` into a temporary file next to it, then move it into place: replacing
    an existing file only when `overwrite`, otherwise by a hard link, which fails if another process created
    `path` meanwhile. OS errors (a full disk, a permission) become InputError naming the path."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(path.parent)
        fd, tmp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InputError(exc.strerror or str(exc), file=str(path), field=ref(field)) from None
    tmp = Path(tmp_name)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)      # mkstemp's 0600 would make the file private to its writer
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path, field)
    except OSError as exc:
        raise InputError(exc.strerror or str(exc), file=str(path), field=ref(field)) from None
    finally:
        tmp.unlink(missing_ok=True)


TEMP_PREFIX = ".lessdb-"   # + the writer's pid: a temporary file whose writer is gone is garbage


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files of writers killed mid-write (their pid no longer runs) in `folder`; a file of a
    live writer, or of another host's, stays. Returns what was deleted."""
    removed = []
    for tmp in folder.glob(f"{TEMP_PREFIX}*.tmp"):
        pid = tmp.name[len(TEMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _link_new(tmp: Path, path: Path, field: str) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise InputError(f"exists (created meanwhile); pass {ref('force')} to overwrite it", file=str(path),
                         field=ref(field)) from None
    except OSError:                # a file system without hard links: check, then rename
        if path.exists():
            raise InputError(f"exists; pass {ref('force')} to overwrite it", file=str(path), field=ref(field)) from None
        os.replace(tmp, path)


def _name_max(path: Path) -> int:
    for parent in [path.parent, *path.parents]:
        try:
            return os.pathconf(parent if str(parent) else ".", "PC_NAME_MAX")
        except (OSError, ValueError):
            continue
    return 255
