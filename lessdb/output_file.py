"""Files lessdb writes where the user says (`export --output`, `select --output`, `report --output`): the
destination is checked before any work (`check_destination`, the one check every output path goes through), and
the file is written to a temporary file in the same folder and moved into place, so a failure never leaves a
half-written file (or a stray temporary one) behind; a writer killed mid-write leaves its temporary file (named
with its pid), which the next write to that folder deletes.

A destination is refused, even with `force`, when it is one of the workspace's own files (its DuckDB file,
tables.json, anything under lance/, checkpoints/, models/ or locks/: overwriting one would break every later
command; exports/ is lessdb's own default place for exports and fine) or an existing file that is not a
regular file (a device, a FIFO, a socket, a symbolic link, a folder: lessdb replaces only regular files; a
folder output such as an `hf` export replaces only a folder lessdb wrote). `-`
means standard output where a command supports it (`is_stdout`, `write_stdout`); elsewhere it is refused
rather than written as a file named `-` (write `./-` for that).
"""
from __future__ import annotations

import hashlib
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from .errors import InputError, ref

STDOUT = "-"
# the workspace's own entries (beside them: exports/, lessdb's default place for exports, which stays writable)
OWN_FILES = ("lessdb.duckdb", "lessdb.duckdb.wal", "tables.json")
OWN_DIRS = ("lance", "checkpoints", "models", "locks")


def is_stdout(output) -> bool:
    return output is not None and os.fspath(output) == STDOUT


def check_destination(output: str | os.PathLike, force: bool, field: str = "output", workspace=None,
                      folder: Callable[[set[str]], str | None] | None = None) -> Path:
    """`output` as a Path if a file can be written there: not empty, not a folder, not under a regular file,
    no name longer than the file system allows, not an existing file unless `force`, never an existing
    non-regular file, and never one of `workspace`'s own files (see the module docstring). Raises InputError
    naming the path and the setting (`field`; the CLI shows its flag).

    With `folder` the output is a folder (an `hf` export) instead of a file: a new or empty folder is fine; an
    existing one is replaced only with `force` and when `folder(its entry names)` finds nothing foreign in it
    (it returns why not, else None): lessdb never deletes a folder it did not write. The other rules are the
    same for both."""
    text = os.fspath(output)
    if not text.strip():
        raise InputError("empty path; give a file name", field=ref(field))
    if "\x00" in text:
        raise InputError("contains a NUL character", field=ref(field))
    if text == STDOUT:
        raise InputError("standard output (-) is not supported here; give a file path (./- for a file named -)",
                         field=ref(field))
    shown = text if len(text) <= 120 else text[:100] + "…"
    path = Path(text)
    try:
        limit = _name_max(path)
        long_part = next((p for p in path.parts if len(os.fsencode(p)) > limit), None)
        if long_part is not None:
            raise InputError(f"a path component is {len(os.fsencode(long_part))} bytes; this file system allows "
                             f"{limit}", file=shown, field=ref(field))
        _refuse_special(path, shown, field)
        if workspace is not None:
            _refuse_workspace_file(path, workspace, shown, field)
        if folder is not None:
            _check_folder(path, force, folder, shown, field)
        elif text.endswith(os.sep) or path.is_dir():
            raise InputError("is a folder; give a file path", file=shown, field=ref(field))
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise InputError(f"{parent} is a file, not a folder", file=shown, field=ref(field))
                break
        if folder is None and (path.exists() or path.is_symlink()) and not force:
            raise InputError(f"exists; pass {ref('force')} to overwrite it, or choose another path", file=shown,
                             field=ref(field))
    except OSError as exc:     # e.g. a path longer than PATH_MAX, a folder we may not look into
        raise InputError(exc.strerror or str(exc), file=shown, field=ref(field)) from None
    return path


def _check_folder(path: Path, force: bool, foreign: Callable[[set[str]], str | None], shown: str,
                  field: str) -> None:
    """A folder output's existing entry: none, an empty folder, or (with `force`) a folder lessdb wrote."""
    if not path.exists():
        return
    if not path.is_dir():
        raise InputError("exists and is not a folder; this output is a folder", file=shown, field=ref(field))
    entries = {p.name for p in path.iterdir()}
    if not entries:
        return
    if not force:
        raise InputError(f"exists; pass {ref('force')} to replace it, or choose another path", file=shown,
                         field=ref(field))
    reason = foreign(entries)
    if reason:
        raise InputError(f"{reason}; lessdb replaces only its own output folders, even with {ref('force')}",
                         file=shown, field=ref(field))


def _refuse_special(path: Path, shown: str, field: str) -> None:
    """An existing entry that is not a regular file is never replaced, `force` or not."""
    try:
        st = os.lstat(path)
    except OSError:   # nothing there (or a parent is a file: the checks after this one say so)
        return
    mode = st.st_mode
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):   # a folder gets its own message below
        return
    kind = ("a symbolic link" if stat.S_ISLNK(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    raise InputError(f"is {kind}; lessdb writes only regular files and never replaces anything else (not even "
                     f"with {ref('force')}); give another path", file=shown, field=ref(field))


def workspace_file_reason(path: Path, workspace) -> str | None:
    """Why `path` is one of the workspace's own files (None: it is not), comparing real paths (symbolic links
    and `..` resolved), so no spelling of the path gets past it."""
    real = Path(os.path.realpath(path))
    root = Path(os.path.realpath(workspace.root))
    own = [(root / name, False) for name in OWN_FILES] + [(root / name, True) for name in OWN_DIRS]
    lance_root = getattr(getattr(workspace, "lance", None), "root", None)
    if lance_root is not None:        # tables kept in a local folder outside the workspace are its own too
        own.append((Path(os.path.realpath(lance_root)), True))
    for entry, is_dir in own:
        if real == entry or (is_dir and entry in real.parents):
            what = f"the workspace's {'folder ' if is_dir else ''}{entry.name}{'/' if is_dir else ''}"
            return f"is {'inside ' if real != entry else ''}{what} ({entry})"
    return None


def _refuse_workspace_file(path: Path, workspace, shown: str, field: str) -> None:
    reason = workspace_file_reason(path, workspace)
    if reason:
        raise InputError(f"{reason}; writing there would damage the workspace (not even {ref('force')} allows "
                         f"it); write somewhere else, e.g. {Path(workspace.root) / 'exports'}/", file=shown,
                         field=ref(field))


class _CountingWriter:
    """A write-only binary stream over standard output that counts and hashes what passes through it."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.size, self.digest = raw, 0, hashlib.sha256()

    def write(self, data) -> int:
        data = bytes(data)
        self.raw.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def writelines(self, lines) -> None:     # export's JSONL writer hands over lines
        for line in lines:
            self.write(line)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.raw.flush()

    closed = False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False


def check_stdout(binary: bool, what: str, field: str = "output") -> None:
    """`-` for a binary format: refused on a terminal (it would print garbage), fine into a pipe or a file."""
    if binary and sys.stdout.isatty():
        raise InputError(f"{what} is binary and standard output is a terminal; redirect it (`> file` or `| cmd`) "
                         "or give a file path", field=ref(field))


def write_stdout(write: Callable[[BinaryIO], None]) -> tuple[int, str]:
    """`write(fh)` to standard output; returns (bytes written, their sha256)."""
    sys.stdout.flush()
    out = _CountingWriter(sys.stdout.buffer)
    write(out)
    out.flush()
    return out.size, out.digest.hexdigest()


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
        _refuse_special(path, str(path), field)   # again: something else may have appeared there meanwhile
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
