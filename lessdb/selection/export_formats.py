"""What an export holds and how each format writes it: lessdb's columns (`id`, `dataset`, `messages`,
`lessdb_id`, `rank`, `score`) and, beside them, each member's original input columns (its candidate
`metadata`; a name lessdb already uses gets the prefix `input_`). Formats: JSONL (the values as ingested),
Parquet, a Hugging Face `save_to_disk` folder (`hf`: written with pyarrow alone, opened by
`datasets.load_from_disk`), or a `datasets.Dataset` in memory (the API's format="datasets").

In the Arrow formats a metadata key whose values have no one Arrow type (an int in one row, text in another)
is written as JSON text.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa

from ..errors import InputError, ref
from ..storage.candidates import has_column, read_candidates
from ..storage.lance_tables import CANDIDATES, MESSAGE_TYPE

# lessdb's own columns of every export, in this order; the members' original columns follow
EXPORT_SCHEMA = pa.schema([
    pa.field("id", pa.string()),            # the source's own id when it had one, else lessdb's
    pa.field("dataset", pa.string()),       # source dataset (open-instruct's field name)
    pa.field("messages", pa.list_(MESSAGE_TYPE)),
    pa.field("lessdb_id", pa.string()),     # content hash in the candidates table
    pa.field("rank", pa.int64()),
    pa.field("score", pa.float64()),
])
COLLISION_PREFIX = "input_"
HF_SHARD = "data-00000-of-00001.arrow"
HF_FILES = ("state.json", "dataset_info.json", HF_SHARD)


def member_metadata(ws, sel: dict, ids: list[str]) -> list[dict]:
    """Each member's original columns (parsed `metadata`; {} where none), renamed where they collide with
    lessdb's export columns; read at the candidates version the selection used."""
    version = (sel["table_versions"] or {}).get(CANDIDATES)
    ds = ws.lance.dataset(CANDIDATES, version)
    if not ids or not has_column(ds, "metadata"):     # a pool ingested before lessdb kept metadata
        return [{} for _ in ids]
    taken = set(EXPORT_SCHEMA.names)
    texts = read_candidates(ws, ids, pool=sel["params"].get("pool"), version=version,
                            columns=["id", "metadata"]).column("metadata").to_pylist()
    out = []
    for text in texts:
        extra = json.loads(text) if text else {}
        out.append({(COLLISION_PREFIX + k if k in taken else k): v for k, v in extra.items()})
    return out


def with_metadata(table: pa.Table, extras: list[dict]) -> pa.Table:
    """`table` with one column per metadata key (first-seen order; missing values null)."""
    keys = list(dict.fromkeys(k for e in extras for k in e))
    for key in keys:
        values = [e.get(key) for e in extras]
        try:
            column = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError, ValueError):
            column = pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in values], pa.string())
        table = table.append_column(key, column)
    return table


def jsonl_lines(table: pa.Table, extras: list[dict]):
    """One JSON line (bytes) per member: lessdb's fields, then its original ones as ingested."""
    for rec, extra in zip(table.to_pylist(), extras):
        rec.update(extra)
        yield (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")


def to_datasets(table: pa.Table):
    """A `datasets.Dataset` over the table (needs the optional `datasets` package: pip install 'lessdb[hf]')."""
    try:
        import datasets
        from datasets.table import InMemoryTable
    except ImportError:
        raise InputError("format 'datasets' needs the datasets package: pip install 'lessdb[hf]' (or write a folder "
                         "that datasets.load_from_disk opens with format 'hf', which needs only pyarrow)",
                         field=ref("format")) from None
    return datasets.Dataset(InMemoryTable(table))


# -- the hf folder -------------------------------------------------------------------------------------------------
def foreign_to_hf_export(entries: set[str]) -> str | None:
    """Why a folder holding `entries` is not an earlier `hf` export (None: it is one, and `--force` may replace
    it); `lessdb.output_file.check_destination(..., folder=foreign_to_hf_export)` checks an hf destination."""
    if entries <= set(HF_FILES) and "state.json" in entries:
        return None
    return f"holds files that are not an earlier hf export ({', '.join(sorted(entries)[:5])})"


def write_hf_folder(path: Path, table: pa.Table, description: str) -> str:
    """Write `table` as a `datasets.save_to_disk` folder (one Arrow IPC stream shard, state.json,
    dataset_info.json; features left to datasets to infer from the Arrow schema) into a temporary folder beside
    `path`, then move it into place. Returns the shard's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".lessdb-{path.name}-{os.getpid()}.tmp"
    old = path.parent / f".lessdb-{path.name}-{os.getpid()}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        with pa.OSFile(str(tmp / HF_SHARD), "wb") as sink:
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table, max_chunksize=1000)
        digest = file_sha256(tmp / HF_SHARD)
        state = {"_data_files": [{"filename": HF_SHARD}], "_fingerprint": digest[:16], "_format_columns": None,
                 "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False, "_split": None}
        info = {"citation": "", "description": description, "features": None, "homepage": "", "license": ""}
        (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
        (tmp / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n")
        if path.exists():           # checked by check_destination: empty, or an earlier hf export
            os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise InputError(exc.strerror or str(exc), file=str(path), field=ref("output")) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return digest


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
