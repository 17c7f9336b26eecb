"""Write a selection's training set (SPEC §4 `lessdb export`): the candidates' conversations in the
`messages` format open-instruct and TRL's SFTTrainer read, in rank order, with their original ids and columns
(export_formats.py); the file's sha256 is recorded in the `exports` table."""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError, ref
from ..output_file import check_destination, write_atomically
from ..storage import meta_selections as meta
from ..storage.candidates import read_candidates
from ..storage.lance_tables import CANDIDATES
from .export_formats import (EXPORT_SCHEMA, check_hf_destination, jsonl_lines, member_metadata, to_datasets,
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
    `datasets.Dataset` instead and records nothing."""
    if fmt == "datasets":
        sel = meta.get_selection(ws, ref)
        table = selection_table(ws, sel)
        return to_datasets(with_metadata(table, member_metadata(ws, sel, table.column("lessdb_id").to_pylist())))
    path, fmt = resolve_target(output, fmt, force)
    sel = meta.get_selection(ws, ref)
    if path is None:
        path, force = ws.exports_dir / f"{sel['selection_id']}.{fmt}", True
        if fmt == "hf":
            path = check_hf_destination(path, force)
    table = selection_table(ws, sel)
    extras = member_metadata(ws, sel, table.column("lessdb_id").to_pylist())

    def write(fh) -> None:
        if fmt == "parquet":
            pq.write_table(with_metadata(table, extras), fh)
        else:
            fh.writelines(jsonl_lines(table, extras))

    if fmt == "hf":
        digest = write_hf_folder(path, with_metadata(table, extras), f"lessdb selection {sel['selection_id']}")
    else:
        write_atomically(path, write, overwrite=force)
        digest = _sha256(path)
    meta.record_export(ws, sel["selection_id"], str(path.resolve()), fmt, table.num_rows, digest)
    return {"selection_id": sel["selection_id"], "path": str(path.resolve()), "format": fmt,
            "n_rows": table.num_rows, "sha256": digest}


SUFFIX_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


def resolve_target(output: str | os.PathLike | None, fmt: str | None, force: bool = False) -> tuple[Path | None, str]:
    """(path or None for the default, format) for an export, refused before any work if it cannot be written.

    The rule: a `.parquet`/`.pq` suffix means parquet and a `.jsonl`/`.ndjson`/`.json` suffix means jsonl;
    without `fmt` the suffix decides (anything else: jsonl); with `fmt`, a suffix meaning the other format is
    an error. The destination must be writable (`lessdb.output_file.check_destination`); an existing file
    needs `force`."""
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"{fmt!r}: choose jsonl, parquet or hf", field=ref("format"))
    if output is None:
        return None, fmt or "jsonl"
    if fmt == "hf":     # a folder in datasets' save_to_disk layout
        return check_hf_destination(output, force), fmt
    path = check_destination(output, force)
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
