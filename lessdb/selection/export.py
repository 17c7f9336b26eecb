"""Write a selection's training set (SPEC §4 `lessdb export`): the candidates' conversations in the
`messages` format open-instruct and TRL's SFTTrainer read, in rank order, with their original ids; the file's
sha256 is recorded in the `exports` table."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import LessdbError
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


def export_selection(ws, ref: str, output: str | os.PathLike | None = None, fmt: str | None = None) -> dict:
    """Write selection `ref` to `output` (default: <workspace>/exports/<selection_id>.<fmt>); the format is
    `fmt`, else the file suffix, else jsonl. Returns {selection_id, path, format, n_rows, sha256}."""
    sel = meta.get_selection(ws, ref)
    if fmt is None:
        fmt = "parquet" if output is not None and str(output).endswith(".parquet") else "jsonl"
    if fmt not in FORMATS:
        raise LessdbError(f"--format {fmt!r}: choose jsonl or parquet")
    path = Path(output) if output is not None else ws.exports_dir / f"{sel['selection_id']}.{fmt}"
    table = selection_table(ws, sel)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")   # nothing half-written at `path` on error
    try:
        if fmt == "parquet":
            pq.write_table(table, tmp)
        else:
            with open(tmp, "w", encoding="utf-8") as fh:
                for rec in table.to_pylist():
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        digest = _sha256(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    meta.record_export(ws, sel["selection_id"], str(path.resolve()), fmt, table.num_rows, digest)
    return {"selection_id": sel["selection_id"], "path": str(path.resolve()), "format": fmt,
            "n_rows": table.num_rows, "sha256": digest}


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
