"""Write a selection's training set (SPEC §4 `lessdb export`): the candidates' conversations in the
`messages` format open-instruct and TRL's SFTTrainer read, in rank order, with their original ids; the file's
sha256 is recorded in the `exports` table."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError
from ..storage import meta_selections as meta
from ..storage.candidates import read_candidates
from ..storage.lance_tables import CANDIDATES, MESSAGE_TYPE

FORMATS = ("jsonl", "parquet")

EXPORT_SCHEMA = pa.schema([
    pa.field("id", pa.string()),            # the source's own id when it had one, else lessdb's
    pa.field("dataset", pa.string()),       # source dataset (open-instruct's field name)
    pa.field("messages", pa.list_(MESSAGE_TYPE)),
    pa.field("lessdb_id", pa.string()),     # content hash in the candidates table
    pa.field("rank", pa.int64()),
    pa.field("score", pa.float64()),
])


def export_selection(ws, ref: str, output: str | os.PathLike | None = None, fmt: str | None = None,
                     force: bool = False) -> dict:
    """Write selection `ref` to `output` (default: <workspace>/exports/<selection_id>.<fmt>). The format is
    `fmt`, else the output's suffix (see `resolve_target`). An existing `output` is refused unless `force`
    (the default path inside the workspace is lessdb's own and rewritten). Written to a temporary file in the
    same folder and renamed into place: nothing half-written on failure. Returns {selection_id, path, format,
    n_rows, sha256}."""
    path, fmt = resolve_target(output, fmt, force)
    sel = meta.get_selection(ws, ref)
    if path is None:
        path, force = ws.exports_dir / f"{sel['selection_id']}.{fmt}", True
    table = selection_table(ws, sel)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = _write_atomically(table, path, fmt, force)
    except OSError as exc:
        raise InputError(exc.strerror or str(exc), file=str(path), field="--output") from None
    meta.record_export(ws, sel["selection_id"], str(path.resolve()), fmt, table.num_rows, digest)
    return {"selection_id": sel["selection_id"], "path": str(path.resolve()), "format": fmt,
            "n_rows": table.num_rows, "sha256": digest}


def resolve_target(output: str | os.PathLike | None, fmt: str | None, force: bool = False) -> tuple[Path | None, str]:
    """(path or None for the default, format) for an export, refused before any work if it cannot be written.

    The rule: a `.parquet`/`.pq` suffix means parquet and a `.jsonl`/`.ndjson`/`.json` suffix means jsonl;
    without `fmt` the suffix decides (anything else: jsonl); with `fmt`, a suffix meaning the other format is
    an error. The path must not be empty, a folder, under a regular file, or have a name longer than the file
    system allows; an existing file needs `force`."""
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"{fmt!r}: choose jsonl or parquet", field="--format")
    if output is None:
        return None, fmt or "jsonl"
    text = os.fspath(output)
    if not text.strip():
        raise InputError("empty path; give a file name such as selection.jsonl", field="--output")
    path = Path(text)
    implied = SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is not None and implied is not None and implied != fmt:
        raise InputError(f"the suffix {path.suffix!r} means {implied}, but --format is {fmt}; use a matching "
                         "suffix or leave --format out (the suffix then decides)", file=text, field="--output")
    fmt = fmt or implied or "jsonl"
    shown = text if len(text) <= 120 else text[:100] + "…"
    try:
        _check_destination(path, text, shown, force)
    except OSError as exc:     # e.g. a path longer than PATH_MAX, a folder we may not look into
        raise InputError(exc.strerror or str(exc), file=shown, field="--output") from None
    return path, fmt


def _check_destination(path: Path, text: str, shown: str, force: bool) -> None:
    if "\x00" in text:
        raise InputError("contains a NUL character", field="--output")
    limit = _name_max(path)
    long_part = next((p for p in path.parts if len(os.fsencode(p)) > limit), None)
    if long_part is not None:
        raise InputError(f"a path component is {len(os.fsencode(long_part))} bytes; this file system allows "
                         f"{limit}", file=shown, field="--output")
    if text.endswith(os.sep) or path.is_dir():
        raise InputError("is a folder; give a file path", file=shown, field="--output")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{parent} is a file, not a folder", file=shown, field="--output")
            break
    if (path.exists() or path.is_symlink()) and not force:
        raise InputError("exists; pass --force to overwrite it, or choose another path", file=shown,
                         field="--output")


SUFFIX_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


def _name_max(path: Path) -> int:
    for parent in [path.parent, *path.parents]:
        try:
            return os.pathconf(parent if str(parent) else ".", "PC_NAME_MAX")
        except (OSError, ValueError):
            continue
    return 255


def _write_atomically(table: pa.Table, path: Path, fmt: str, force: bool) -> str:
    """Write to a temporary file next to `path`, then move it into place (replacing only when `force`;
    otherwise a hard link, which fails if another process created `path` meanwhile). Returns the sha256."""
    fd, tmp_name = tempfile.mkstemp(prefix=".lessdb-export-", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)      # mkstemp's 0600 would make the export private to its writer
        with os.fdopen(fd, "wb") as fh:
            if fmt == "parquet":
                pq.write_table(table, fh)
            else:
                for rec in table.to_pylist():
                    fh.write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))
        digest = _sha256(tmp)
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise InputError("exists (created while exporting); pass --force to overwrite it",
                                 file=str(path), field="--output") from None
            except OSError:                # a file system without hard links: check, then rename
                if path.exists():
                    raise InputError("exists; pass --force to overwrite it", file=str(path),
                                     field="--output") from None
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return digest


def selection_table(ws, sel: dict) -> pa.Table:
    """The selected candidates in rank order (EXPORT_SCHEMA), read at the candidates version it used."""
    members = meta.selection_members(ws, sel["selection_id"])
    ids = members.column("candidate_id").to_pylist()
    pool = sel["params"].get("pool")
    version = (sel["table_versions"] or {}).get(CANDIDATES)
    rows = read_candidates(ws, ids, pool=pool, version=version,
                           columns=["id", "source_dataset", "source_id", "messages"])
    source_ids = rows.column("source_id").to_pylist()
    return pa.table({
        "id": pa.array([s if s else i for s, i in zip(source_ids, ids)], pa.string()),
        "dataset": rows.column("source_dataset"),
        "messages": rows.column("messages"),
        "lessdb_id": pa.array(ids, pa.string()),
        "rank": members.column("rank"),
        "score": members.column("score"),
    }, schema=EXPORT_SCHEMA)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
