"""Input columns: mapping non-standard names onto lessdb's fields (`--map messages=conversation`), the record
shape of a columnar file, and every other column kept as the candidate's `metadata` (one JSON object).

`metadata` is queryable from `--where` and `lessdb sql` with DuckDB's JSON operators:
`metadata->>'source' = 'flan_v2'` (text), `(metadata->>'n_turns')::INT > 2`, `metadata->'tags'` (JSON).
Values are kept as JSON: Parquet timestamps and dates become ISO text, decimals text, binary base64, and
NaN/infinite floats null (JSON has none of them).
"""
from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import json
import math
from typing import Iterable, Mapping

from ..errors import InputError
from ..jsontext import unicode_problem
from .formats import CONSUMED, FIELDS, FORMATS, REQUIRED, RecordError, detect_format


def parse_column_map(given: Mapping[str, str] | Iterable[str] | None) -> dict[str, str]:
    """{lessdb field: input column} from a dict or `FIELD=COLUMN` strings (the API's `columns`, the CLI's --map);
    raises InputError for an unknown field, an empty name or a column mapped twice."""
    if not given:
        return {}
    pairs = list(given.items()) if isinstance(given, Mapping) else [_split(p) for p in given]
    out: dict[str, str] = {}
    for target, source in pairs:
        if not isinstance(target, str) or not isinstance(source, str) or not target or not source:
            raise InputError(f"column map {target}={source}: give FIELD=COLUMN with both names")
        if target not in FIELDS:
            raise InputError(f"column map {target}={source}: {target!r} is not a field lessdb reads; map one of "
                             f"{', '.join(FIELDS)}")
        if target in out:
            raise InputError(f"column map: {target!r} is mapped twice")
        if source in out.values():
            raise InputError(f"column map: column {source!r} is mapped to two fields")
        out[target] = source
    return {t: s for t, s in out.items() if t != s}


def _split(pair: str) -> tuple[str, str]:
    target, sep, source = str(pair).partition("=")
    if not sep:
        raise InputError(f"column map {pair!r}: expected FIELD=COLUMN, e.g. messages=conversation")
    return target.strip(), source.strip()


def rename_record(record: dict, column_map: dict[str, str]) -> None:
    """Apply the map to one JSON record, in place (a field present under both names is an error)."""
    for target, source in column_map.items():
        if source in record:
            if target in record:
                raise RecordError(source, f"the record has both {target!r} and {source!r}, which --map "
                                          f"{target}={source} would merge")
            record[target] = record.pop(source)


def renamed_columns(names: list[str], column_map: dict[str, str], file: str) -> list[str]:
    """A columnar file's column names after the map (raises InputError if a mapped name collides)."""
    present = set(names)
    out = []
    for name in names:
        target = next((t for t, s in column_map.items() if s == name), name)
        if target != name and target in present:
            raise InputError(f"has both columns {target!r} and {name!r}, which --map {target}={name} would merge",
                             file=file)
        out.append(target)
    return out


def columnar_shape(names: list[str], forced: str | None, file: str, column_map: dict[str, str]) -> str:
    """The record shape of a Parquet/Arrow file or table, from its (mapped) column names."""
    present = dict.fromkeys(names)
    if forced:
        missing = [c for c in REQUIRED[forced] if c not in present]
        if missing:
            raise InputError(f"has no column {missing[0]!r} (required by the {forced} format); its columns: "
                             f"{_list(names)}{_map_hint(missing[0], column_map)}", file=file)
        return forced
    try:
        return detect_format(present)
    except RecordError:
        raise InputError(f"no record shape fits its columns ({_list(names)}): expected 'messages', "
                         "'conversations', 'instruction'+'output' or 'prompt'+'completion'; map yours with "
                         "--map FIELD=COLUMN (e.g. --map messages=conversation)", file=file) from None


def _list(names: list[str]) -> str:
    return ", ".join(names[:12]) + (f", … ({len(names)} in all)" if len(names) > 12 else "")


def _map_hint(field: str, column_map: dict[str, str]) -> str:
    return "" if field in column_map else f"; if it has another name: --map {field}=COLUMN"


def metadata_json(record: dict, shape: str) -> str | None:
    """The record's other fields as one JSON object (None: it has none). Raises RecordError for text that
    cannot be stored (a lone surrogate)."""
    consumed = CONSUMED[shape]
    extra = {k: v for k, v in record.items() if k not in consumed}
    if not extra:
        return None
    try:
        text = json.dumps(extra, ensure_ascii=False, allow_nan=False, default=_json_default)
    except ValueError:          # NaN / infinity somewhere inside: JSON has no such numbers
        text = json.dumps(_finite(extra), ensure_ascii=False, default=_json_default)
    if not text.isascii():
        problem = unicode_problem(text)
        if problem:
            bad = next((k for k in extra if unicode_problem(json.dumps(extra[k], ensure_ascii=False,
                                                                        default=_json_default))), None)
            raise RecordError(bad, problem)
    return text


def _json_default(value):
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if hasattr(value, "item"):      # numpy scalars (pandas columns)
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def schema_hash(description: str) -> str:
    """24 hex digits of sha256 over a schema's text (an Arrow schema's, or the sorted JSON keys)."""
    return hashlib.sha256(description.encode("utf-8")).hexdigest()[:24]


def arrow_schema_text(schema) -> str:
    """`name: type` per column, the same for the same columns whatever file format carried them (Parquet names a
    list's item `element`, Arrow `item`; nullability and metadata left out)."""
    return "\n".join(f"{f.name}: {_type_text(f.type)}" for f in schema)


def _type_text(t) -> str:
    import pyarrow as pa

    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return f"list<{_type_text(t.value_type)}>"
    if pa.types.is_struct(t):
        return "struct<" + ", ".join(f"{f.name}: {_type_text(f.type)}" for f in t) + ">"
    if pa.types.is_large_string(t):
        return "string"
    return str(t)


assert set(FORMATS) == set(CONSUMED)
