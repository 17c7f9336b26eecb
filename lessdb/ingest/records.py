"""Streaming record readers for JSONL and JSON files, located by line for error messages.

A JSON file (an array of objects, or one object) is parsed incrementally, record by record, so a 125 MB
file is never held whole; the same parser recovers the complete records of a file cut off mid-record
(the ShareGPT file on PyPI is) and reports the unterminated tail instead of failing.
"""
from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .. import jsontext
from ..errors import InputError

CHUNK_CHARS = 1 << 20


@dataclass
class RawRecord:
    line: int                  # 1-based line where the record starts
    value: object              # the decoded JSON value (validated later)
    error: str | None = None   # not valid JSON, or JSON Python cannot decode (the next records stay readable)


@dataclass
class ReadStats:
    truncated_tail_chars: int = 0   # characters of an unterminated last record (tolerant mode only)
    truncated_tail_line: int | None = None


def iter_records(path: Path, stats: ReadStats | None = None, tolerate_truncation: bool = False) -> Iterator[RawRecord]:
    """Records of a .jsonl/.json file. Raises InputError (file, line) for anything unreadable."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", file=str(path))
    if path.is_dir():
        raise InputError("is a directory, not a JSON/JSONL file", file=str(path))
    if path.stat().st_size == 0:
        raise InputError("file is empty", file=str(path))
    first = _first_non_space_char(path)
    if first is None:
        raise InputError("file contains only whitespace", file=str(path))
    if first == "[":
        yield from _iter_json_array(path, stats or ReadStats(), tolerate_truncation)
    elif path.suffix.lower() == ".json" and not _looks_like_jsonl(path):
        yield from _iter_json_array(path, stats or ReadStats(), tolerate_truncation, single_object=True)
    else:
        yield from _iter_jsonl(path)


def _decode_lines(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"invalid UTF-8 at byte {exc.start} of the line", file=str(path), line=lineno) from None


def _first_non_space_char(path: Path) -> str | None:
    for _, text in _decode_lines(path):
        stripped = text.lstrip("\ufeff").strip()
        if stripped:
            return stripped[0]
    return None


def _looks_like_jsonl(path: Path) -> bool:
    """A .json file whose first line is a complete JSON value is treated as JSONL."""
    for _, text in _decode_lines(path):
        if text.strip():
            try:
                jsontext.loads(text)
                return True
            except (json.JSONDecodeError, jsontext.JSONLimitError):
                return False
    return False


def _iter_jsonl(path: Path) -> Iterator[RawRecord]:
    for lineno, text in _decode_lines(path):
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


def _iter_json_array(path: Path, stats: ReadStats, tolerate_truncation: bool,
                     single_object: bool = False) -> Iterator[RawRecord]:
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    buf, pos, line, eof = "", 0, 1, False
    with open(path, "rb") as fh:
        def fill() -> bool:
            nonlocal buf, pos, eof
            raw = fh.read(CHUNK_CHARS)
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
