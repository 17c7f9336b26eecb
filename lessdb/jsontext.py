"""Three ways valid-looking JSON still breaks a pipeline, checked where input is read (ingest, task files):

- nesting deeper than Python's recursion limit makes `json.loads` raise RecursionError (not a
  JSONDecodeError), which used to escape as a traceback naming no file or line;
- an integer literal longer than Python's 4,300-digit limit raises a plain ValueError, likewise;
- a `\\ud800`-style escape decodes to a lone UTF-16 surrogate: a Python str that cannot be encoded as UTF-8,
  so hashing it, writing it to LanceDB/DuckDB or printing it crashed later, far from the record.
"""
from __future__ import annotations

import json


class JSONLimitError(ValueError):
    """Valid JSON that Python cannot decode: nested too deeply, or a number too long."""


NESTING_MESSAGE = "JSON nested too deeply to decode (hundreds of levels of [ or {)"


def loads(text: str):
    """`json.loads`; JSONDecodeError for malformed JSON, JSONLimitError for what Python cannot decode."""
    return _limited(json.loads, text)


def raw_decode(decoder: json.JSONDecoder, text: str, pos: int):
    return _limited(decoder.raw_decode, text, pos)


def _limited(decode, *args):
    try:
        return decode(*args)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise JSONLimitError(NESTING_MESSAGE) from None
    except ValueError as exc:   # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise JSONLimitError(f"a JSON value Python cannot decode: {str(exc).split(';')[0]}") from None


def unicode_problem(text: str) -> str | None:
    """Why `text` cannot be stored as UTF-8 (a lone surrogate and where), or None when it can."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"holds a lone UTF-16 surrogate {text[exc.start]!r} at character {exc.start + 1} (a \\ud800-style "
                "escape without its pair): not valid Unicode")
    return None
