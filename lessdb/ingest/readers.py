"""Every input as one stream of records with their positions: JSON text (line), Parquet (row group, row), Arrow
IPC files and streams (record batch, row), and in-memory objects (`pyarrow.Table`/`RecordBatchReader`, a pandas
DataFrame, a `datasets.Dataset`/`IterableDataset`, an iterable of dicts: row). Columnar inputs are read
`BATCH_ROWS` at a time, so no reader holds a whole file; their record shape comes from their columns.

pandas and `datasets` are never imported here: objects are recognised by their class, so the file readers
(Hugging Face folders included) need nothing but pyarrow.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Iterator

import pyarrow as pa

from ..errors import InputError
from .columns import arrow_schema_text, columnar_shape, renamed_columns, schema_hash
from .records import RawRecord, ReadStats, TextSource, iter_records
from .sources import InputFile

BATCH_ROWS = 8192
ARROW_EOS = (b"\xff\xff\xff\xff\x00\x00\x00\x00", b"\x00\x00\x00\x00")   # end-of-stream marker (and the pre-1.0 one)


@dataclass
class Opened:
    """An input ready to read: its records, and what the ingest records about it."""
    records: Iterator[RawRecord]
    shape: str | None                 # the shape its columns give (columnar); None: detected per record (JSON)
    columns: list[str] | None         # its columns (columnar); JSON: None, the keys are collected in `keys`
    schema_hash: str | None
    total_rows: int | None            # when known up front (Parquet, tables): for the progress ETA
    group_word: str | None = None     # what RawRecord.group counts: "row group" (Parquet), "record batch" (IPC)
    keys: set = field(default_factory=set)

    def input_columns(self) -> list[str]:
        return list(self.columns) if self.columns is not None else sorted(self.keys)

    def final_schema_hash(self) -> str | None:
        if self.schema_hash is not None:
            return self.schema_hash
        return schema_hash(json.dumps(sorted(self.keys))) if self.keys else None


def open_file(inp: InputFile, stats: ReadStats, column_map: dict[str, str], forced_shape: str | None,
              tolerate_truncation: bool = False) -> Opened:
    if inp.file_format == "json":
        local = inp.compression is None and type(inp.fs).__name__ == "LocalFileSystem"
        opener = (lambda: open(inp.path, "rb")) if local else inp.open_stream
        text = TextSource(inp.uri, opener, inp.size, inp.path.lower().removesuffix(".gz").removesuffix(".zst")
                          .endswith(".json"))
        return Opened(iter_records(text, stats, tolerate_truncation), None, None, None, None)
    if inp.file_format == "parquet":
        schema, batches, total = _parquet(inp)
        return _columnar(schema, batches, inp.shown, column_map, forced_shape, total, "row group")
    schema, batches, total = _arrow_ipc(inp)
    return _columnar(schema, batches, inp.shown, column_map, forced_shape, total, "record batch")


def _columnar(schema: pa.Schema, batches, label: str, column_map: dict[str, str], forced_shape: str | None,
              total_rows: int | None, group_word: str | None = None) -> Opened:
    """`batches`: (group number or None, RecordBatch) pairs. Column names are mapped once, on the schema."""
    names = renamed_columns(schema.names, column_map, label)
    shape = columnar_shape(names, forced_shape, label, column_map)

    def records() -> Iterator[RawRecord]:
        row = 0
        for group, batch in batches:
            if column_map:
                batch = batch.rename_columns(renamed_columns(batch.schema.names, column_map, label))
            for start in range(0, batch.num_rows, BATCH_ROWS):
                part = batch.slice(start, BATCH_ROWS)
                for i, value in enumerate(part.to_pylist()):
                    yield RawRecord(None, value, row=row + i, group=group)
                row += part.num_rows

    return Opened(records(), shape, list(schema.names), schema_hash(arrow_schema_text(schema)), total_rows,
                  group_word)


def _damaged(inp: InputFile, what: str, exc: Exception, group: str | None = None) -> InputError:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return InputError(f"cannot be read as {what} (truncated or damaged?): {text}", file=inp.shown, group=group)


def _parquet(inp: InputFile):
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(inp.open_random_access(), pre_buffer=False, buffer_size=1 << 20)
        schema = pf.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise _damaged(inp, "Parquet", exc) from None

    def batches():
        for g in range(pf.num_row_groups):
            try:
                for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[g], use_threads=False):
                    yield g, batch
            except (pa.ArrowException, OSError) as exc:
                raise _damaged(inp, "Parquet", exc, f"row group {g}") from None

    return schema, batches(), pf.metadata.num_rows


def _arrow_ipc(inp: InputFile):
    try:
        with inp.open_random_access() as fh:
            head = fh.read(8)
            size = fh.size()
            tail = fh.read_at(8, size - 8) if size >= 8 else b""
    except OSError as exc:
        raise _damaged(inp, "Arrow IPC", exc) from None
    if head.startswith(b"ARROW1"):       # the IPC file format (Feather v2): a footer lists the batches
        try:
            reader = pa.ipc.open_file(inp.open_random_access())
        except (pa.ArrowException, OSError) as exc:
            raise _damaged(inp, "an Arrow IPC file", exc) from None

        def file_batches():
            for i in range(reader.num_record_batches):
                try:
                    batch = reader.get_batch(i)
                except (pa.ArrowException, OSError) as exc:
                    raise _damaged(inp, "an Arrow IPC file", exc, f"record batch {i}") from None
                yield i, batch

        return reader.schema, file_batches(), None
    if head.startswith(b"FEA1"):
        raise InputError("is a Feather v1 file; convert it to Feather v2 / Arrow IPC (pyarrow.feather.write_feather)",
                         file=inp.shown)
    # the IPC stream format (what datasets' save_to_disk writes): a stream cut at a batch boundary reads
    # as a shorter valid stream, so a missing end-of-stream marker is refused up front
    if not tail.endswith(ARROW_EOS):
        raise InputError("cannot be read as an Arrow IPC stream (truncated or damaged?): it does not end with the "
                         "end-of-stream marker", file=inp.shown)
    try:
        reader = pa.ipc.open_stream(inp.open_stream())
    except (pa.ArrowException, OSError) as exc:
        raise _damaged(inp, "an Arrow IPC stream", exc) from None

    def stream_batches():
        for i in itertools.count():
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as exc:
                raise _damaged(inp, "an Arrow IPC stream", exc, f"record batch {i}") from None
            yield i, batch

    return reader.schema, stream_batches(), None


# -- Python objects ------------------------------------------------------------------------------------------------
def object_kind(obj) -> str | None:
    """What `ws.ingest` can read from memory: its name, or None if `obj` is none of them."""
    cls = type(obj)
    module = cls.__module__.split(".")[0]
    if isinstance(obj, pa.Table):
        return "pyarrow.Table"
    if isinstance(obj, pa.RecordBatch):
        return "pyarrow.RecordBatch"
    if isinstance(obj, pa.RecordBatchReader):
        return "pyarrow.RecordBatchReader"
    if module == "pandas" and cls.__name__ == "DataFrame":
        return "pandas.DataFrame"
    if module == "datasets" and cls.__name__ in ("Dataset", "IterableDataset"):
        return f"datasets.{cls.__name__}"
    if module == "datasets" and cls.__name__ in ("DatasetDict", "IterableDatasetDict"):
        raise InputError(f"a datasets.{cls.__name__} holds several splits; pass one, e.g. ds['train']")
    if isinstance(obj, dict):
        raise InputError("a single dict: pass an iterable of records (a list of dicts)")
    if hasattr(obj, "__iter__") and not isinstance(obj, (str, bytes)):
        return "records"
    return None


def open_object(obj, kind: str, column_map: dict[str, str], forced_shape: str | None) -> Opened:
    if kind == "records":
        return Opened(_dict_records(obj), None, None, None, len(obj) if hasattr(obj, "__len__") else None)
    if kind == "pyarrow.Table":
        return _columnar(obj.schema, ((None, b) for b in obj.to_batches(BATCH_ROWS)), kind, column_map,
                         forced_shape, obj.num_rows)
    if kind == "pyarrow.RecordBatch":
        return _columnar(obj.schema, iter([(None, obj)]), kind, column_map, forced_shape, obj.num_rows)
    if kind == "pyarrow.RecordBatchReader":
        return _columnar(obj.schema, ((None, b) for b in obj), kind, column_map, forced_shape, None)
    if kind == "pandas.DataFrame":
        schema, batches = _peeked(_pandas_batches(obj), kind)
        return _columnar(schema, batches, kind, column_map, forced_shape, len(obj))
    # datasets: its arrow formatting yields pyarrow tables, `BATCH_ROWS` rows at a time (indices applied)
    total = len(obj) if kind == "datasets.Dataset" else None
    tables = obj.with_format("arrow").iter(batch_size=BATCH_ROWS)
    schema, batches = _peeked(((None, b) for t in tables for b in t.to_batches()), kind)
    return _columnar(schema, batches, kind, column_map, forced_shape, total)


def _dict_records(items) -> Iterator[RawRecord]:
    for i, value in enumerate(items):
        # a copy: mapping columns renames keys, and the caller's dicts stay as they were
        yield RawRecord(None, dict(value) if isinstance(value, dict) else value, row=i)


def _pandas_batches(df):
    for start in range(0, len(df), BATCH_ROWS):
        try:
            yield None, pa.RecordBatch.from_pandas(df.iloc[start:start + BATCH_ROWS], preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise InputError(f"rows {start}-{start + BATCH_ROWS - 1} cannot be converted to Arrow: {exc}",
                             file="pandas.DataFrame") from None


def _peeked(batches, kind: str):
    """(schema of the first batch, all batches): objects whose schema is only known once read."""
    first = next(batches, None)
    if first is None:
        raise InputError("holds no rows", file=kind)
    return first[1].schema, itertools.chain([first], batches)
