"""Write a selection's training set (SPEC §4 `lessdb export`): the candidates' conversations in the
`messages` format open-instruct and TRL's SFTTrainer read, in rank order, with their original ids and columns
(export_formats.py); the file's sha256 is recorded in the `exports` table."""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .. import faults
from ..errors import InputError, LessdbError, ref
from ..output_file import STDOUT, check_destination, check_stdout, is_stdout, write_atomically, write_stdout
from ..storage import meta_selections as meta
from ..storage.candidates import read_candidates
from ..storage.lance_tables import CANDIDATES
from .export_formats import (EXPORT_SCHEMA, foreign_to_hf_export, jsonl_lines, member_metadata, to_datasets,
                             with_metadata, write_hf_folder)
from .export_formats import file_sha256 as _sha256

FORMATS = ("jsonl", "parquet", "hf")
API_FORMATS = (*FORMATS, "datasets")    # datasets: a datasets.Dataset returned, nothing written


def export_selection(ws, ref: str, output: str | os.PathLike | None = None, fmt: str | None = None,
                     force: bool = False) -> dict:
    """Write selection `ref` to `output` (default: <workspace>/exports/<selection_id>.<fmt>). The format is
    `fmt`, else the output's suffix (see `resolve_target`). An existing `output` is refused unless `force`
    (the default path inside the workspace is lessdb's own and rewritten). Written to a temporary file in the
    same folder and renamed into place: nothing half-written on failure. Returns {selection_id, path, format,
    n_rows, sha256}. `hf` writes a folder (its data shard's sha256 is recorded); format "datasets" returns a
    `datasets.Dataset` instead and records nothing. `-` is standard output (jsonl or parquet)."""
    if fmt == "datasets":
        sel = meta.get_selection(ws, ref)
        require_members_unchanged(ws, sel)
        table = selection_table(ws, sel)
        return to_datasets(with_metadata(table, member_metadata(ws, sel, table.column("lessdb_id").to_pylist())))
    path, fmt = resolve_target(output, fmt, force, workspace=ws)
    sel = meta.get_selection(ws, ref)
    require_members_unchanged(ws, sel)
    if path is None:
        path, force = ws.exports_dir / f"{sel['selection_id']}.{fmt}", True
        if fmt == "hf":
            path = check_destination(path, force, workspace=ws, folder=foreign_to_hf_export)
    table = selection_table(ws, sel)
    extras = member_metadata(ws, sel, table.column("lessdb_id").to_pylist())

    def write(fh) -> None:
        if fmt == "parquet":
            pq.write_table(with_metadata(table, extras), fh)
        else:
            for i, line in enumerate(jsonl_lines(table, extras)):
                fh.write(line)
                if i == table.num_rows // 2:
                    fh.flush()
                    faults.point("export.mid_write")

    if path == STDOUT:
        _, digest = write_stdout(write)
        shown = STDOUT
    elif fmt == "hf":
        digest = write_hf_folder(path, with_metadata(table, extras), f"lessdb selection {sel['selection_id']}")
        shown = str(path.resolve())
    else:
        write_atomically(path, write, overwrite=force)
        digest = _sha256(path)
        shown = str(path.resolve())
    faults.point("export.before_record")
    meta.record_export(ws, sel["selection_id"], shown, fmt, table.num_rows, digest)
    return {"selection_id": sel["selection_id"], "path": shown, "format": fmt,
            "n_rows": table.num_rows, "sha256": digest}


def require_members_unchanged(ws, sel: dict) -> None:
    """Export only what was selected: members that no longer match the digest recorded at selection time were
    changed afterwards (by hand, or by damage) and are refused."""
    from ..storage.member_digest import digest_status

    status = digest_status(ws, sel["selection_id"])
    if status.state == "mismatch":
        raise LessdbError(f"selection {sel['selection_id']}: its members no longer match the digest recorded when "
                          f"it was made (recorded {status.recorded[:12]}…, now {status.actual[:12]}…): they were "
                          "changed afterwards, so this is not what was selected; nothing was exported. Run "
                          "`lessdb verify` for details, and `lessdb select --replay "
                          f"{sel['selection_id']}` to recompute the selection")


SUFFIX_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


def resolve_target(output: str | os.PathLike | None, fmt: str | None, force: bool = False, workspace=None,
                   stdout: bool = True) -> tuple[Path | str | None, str]:
    """(path, None for the default, or STDOUT for `-`; format) for an export, refused before any work if it
    cannot be written.

    The rule: a `.parquet`/`.pq` suffix means parquet and a `.jsonl`/`.ndjson`/`.json` suffix means jsonl;
    without `fmt` the suffix decides (anything else: jsonl); with `fmt`, a suffix meaning the other format is
    an error. The destination must be writable (`lessdb.output_file.check_destination`: never one of the
    workspace's own files or an existing non-regular file); an existing file needs `force`. `-` is standard
    output (jsonl, or parquet into a pipe) where `stdout`."""
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"{fmt!r}: choose jsonl, parquet or hf", field=ref("format"))
    if output is None:
        return None, fmt or "jsonl"
    if is_stdout(output) and stdout and fmt != "hf":
        fmt = fmt or "jsonl"
        check_stdout(fmt == "parquet", "parquet")
        return STDOUT, fmt
    if fmt == "hf":     # a folder in datasets' save_to_disk layout; the same rules as a file otherwise
        return check_destination(output, force, workspace=workspace, folder=foreign_to_hf_export), fmt
    path = check_destination(output, force, workspace=workspace)
    implied = SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is not None and implied is not None and implied != fmt:
        raise InputError(f"the suffix {path.suffix!r} means {implied}, but {ref('format')} is {fmt}; use a "
                         f"matching suffix or leave {ref('format')} out (the suffix then decides)", file=str(path),
                         field=ref("output"))
    return path, fmt or implied or "jsonl"


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
