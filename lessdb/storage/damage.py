"""Telling a damaged workspace from a bug (issue 23): an exception raised while reading a Lance data file or
manifest that is missing or truncated, or a DuckDB file that fails its checksums or ends early, is not the
user's input and not a defect of lessdb; it becomes a `WorkspaceDamaged` (exit 1, one line pointing to `lessdb
verify`). Everything else passes through unchanged, so a real bug still exits 70.

The libraries raise these as ArrowInvalid, ValueError, OSError or a duckdb.Error whose text names the failure;
the patterns below are the texts lance 13 and duckdb 2.0 use (tests/test_corruption.py makes each damage).
"""
from __future__ import annotations

import functools
import re

from ..errors import LessdbError, WorkspaceDamaged

# lance: a data file, deletion file or manifest missing or shorter than written
_LANCE = re.compile(r"LanceError\((IO|Corrupt\w*)\)|Not found: \S*\.(lance|manifest|arrow|bin)\b|"
                    r"file size is too small|failed to fill whole buffer|unexpected end of file|"
                    r"Invalid (lance|manifest) file|corrupt(ed)? (file|manifest|data)", re.IGNORECASE)
# duckdb: block checksums, a file that ends early, a header that is not DuckDB's
_DUCK = re.compile(r"Corrupt database file|Could not read enough bytes|does not match stored checksum|"
                   r"not a valid DuckDB database file|Failed to (read|load) (block|database)|Serialization Error",
                   re.IGNORECASE)
# noise in library messages: Rust source locations, repeated "External error:" prefixes
_RUST_LOCATION = re.compile(r",?\s*/(home/runner|rustc|root/\.cargo)\S*:\d+:\d+")
_PREFIX = re.compile(r"^(External error: |Invalid: |Invalid Input Error: |IO Error: |Error: )+")


def damage_of(exc: BaseException) -> WorkspaceDamaged | None:
    """The `WorkspaceDamaged` an exception means, or None when it is anything else."""
    if isinstance(exc, (WorkspaceDamaged, LessdbError)) or not isinstance(exc, Exception):
        return None
    text = " ".join(str(exc).split())
    if _is_duckdb(exc):
        if "Could not set lock" in text or "Conflicting lock" in text:
            return None
        if "reading the stream registered as" in text and _LANCE.search(text):
            return WorkspaceDamaged(f"a Lance table cannot be read ({_short(text)})")
        if _DUCK.search(text):
            return WorkspaceDamaged(f"the metadata database cannot be read ({_short(text)})")
        return None
    if isinstance(exc, (ValueError, OSError, RuntimeError)) and _LANCE.search(text):
        return WorkspaceDamaged(f"a Lance table cannot be read ({_short(text)})")
    return None


def describe(exc: BaseException) -> str:
    """The library's message, without Rust source locations and wrapper prefixes."""
    return _short(" ".join(str(exc).split()))


def raise_if_damage(exc: BaseException) -> None:
    """In an `except` block that would otherwise report `exc` as something else (a bad filter, a SQL error):
    raise the `WorkspaceDamaged` it means, if it means one."""
    damaged = damage_of(exc)
    if damaged is not None:
        raise damaged from exc


def guard(fn):
    """Decorate an entry point (a Workspace method): damage surfaces as `WorkspaceDamaged`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise_if_damage(exc)
            raise
    return wrapper


def _is_duckdb(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in ("duckdb", "_duckdb")


def _short(text: str) -> str:
    text = _PREFIX.sub("", _RUST_LOCATION.sub("", text)).strip()
    text = re.sub(r"^reading the stream registered as '\w+' failed: ", "", text)
    text = _PREFIX.sub("", text)
    return text if len(text) <= 240 else text[:237] + "..."
