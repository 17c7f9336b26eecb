"""A user's SQL filter over candidates (`select --where`, `featurize --where`, and a selection's recorded
`sql_filter` when a report or replay reads it again): checked to be ONE boolean expression before it goes
anywhere near a query.

Interpolating the text into `... WHERE pool = ? AND (<filter>)` once let `1=1) OR (1=1` close the parenthesis
and select members of another pool. So, before use, a filter is parsed by DuckDB's own parser as the WHERE
clause of `SELECT * FROM candidates WHERE <filter>` and refused unless
- the text is exactly one statement, with no comments (a `--` or `/*` could hide the rest of our query);
- the parsed statement is that query and nothing else: every part but the WHERE clause equals the parse of
  `SELECT * FROM candidates WHERE TRUE` (no ORDER BY / LIMIT / GROUP BY / UNION smuggled after it);
- the expression holds only plain expression nodes (no subquery, `*`, parameter or window) and names only
  columns of `candidates` (or lambda parameters).
A new filter (`select --where`, `featurize --where`) must also give the same rows every time it runs, since it is
recorded and replayed: functions whose value changes between runs or sessions (random(), now(), current_setting(),
gen_random_uuid(), ...: those DuckDB's catalogue marks volatile or consistent only within a query, the macros
built on them, and a few it marks consistent that read the clock, the session or the DuckDB version) are refused.
The parse tree is walked with an explicit stack (no recursion), and DuckDB's own limit of 1000 nested levels
bounds how deep it can be.
Then it is applied over a subquery that has already restricted the pool, `SELECT * FROM (SELECT * FROM
candidates WHERE pool = ?) AS candidates WHERE (<filter>)`, so even a filter that got past the checks could
only narrow the pool, never widen it.
"""
from __future__ import annotations

import json
import re
import sys
from contextlib import contextmanager

import duckdb

from ..errors import InputError, ref
from ..jsontext import unicode_problem

PREFIX = "SELECT * FROM candidates WHERE "
# Expression node classes a filter may contain (everything else -- SUBQUERY, STAR, PARAMETER, WINDOW,
# POSITIONAL_REFERENCE, DEFAULT -- reaches outside one row of `candidates` or into the query around it).
ALLOWED_NODES = frozenset({"COMPARISON", "CONJUNCTION", "OPERATOR", "FUNCTION", "CONSTANT", "COLUMN_REF", "CAST",
                           "CASE", "BETWEEN", "LAMBDA", "COLLATE", "TYPE"})
NODE_WORDS = {"SUBQUERY": "a subquery", "STAR": "'*' / COLUMNS(*)", "PARAMETER": "a query parameter",
              "WINDOW": "a window or aggregate function", "POSITIONAL_REFERENCE": "a positional reference (#n)",
              "DEFAULT": "DEFAULT"}


def candidate_columns() -> list[str]:
    from .lance_tables import CANDIDATE_SCHEMA   # lazily: keeps lancedb out of light imports
    return list(CANDIDATE_SCHEMA.names)


# DuckDB marks these consistent, yet they read the clock, the session or the DuckDB version (or parse as columns)
ALSO_VOLATILE = frozenset({"current_date", "current_time", "current_timestamp", "localtime", "localtimestamp",
                           "current_localtime", "current_localtimestamp", "current_user", "session_user", "user",
                           "current_role", "current_catalog", "version", "pragma_version", "epoch_ms_now"})


def check_filter(text: str, field: str = "where", columns: list[str] | None = None, recorded: bool = True) -> str:
    """`text` if it is one boolean expression over candidates' columns (see the module docstring); raises
    InputError naming the setting `field` (the CLI shows its flag) saying what is wrong otherwise. `recorded`:
    a new filter that will be recorded (refuse functions that would not replay); False for reading one that
    was recorded before."""
    def fail(reason: str):
        raise InputError(f"{reason} (filter: {text!r})", field=ref(field))

    if not isinstance(text, str) or not text.strip():
        fail("empty filter; leave it out to use every candidate")
    if "\x00" in text:
        fail("contains a NUL character")
    if unicode_problem(text):
        fail(unicode_problem(text))
    con = duckdb.connect(":memory:")
    try:
        tree, depth = _parse(con, text, fail)
        reference, _ = _parse(con, "TRUE", fail)
        volatile = volatile_functions(con) if recorded else frozenset()
    finally:
        con.close()
    where = tree.pop("where_clause")
    reference.pop("where_clause")
    with _recursion_limit(depth + 100):   # == on nested dicts recurses (in C), as deep as the parse tree
        extra = [k for k in tree if _without_locations(tree[k]) != _without_locations(reference.get(k))]
    if extra or set(reference) - set(tree):
        fail("is more than one expression: it also has " + _clause_words(extra) +
             " (give only the condition, e.g. \"n_turns > 2 AND source_dataset <> 'x'\")")
    allowed = {c.lower() for c in (columns or candidate_columns())}
    _check_expression(where, allowed, _lambda_names(where), volatile, fail)
    return text


def volatile_functions(con) -> frozenset[str]:
    """Functions whose value can change between two runs of the same filter, from DuckDB's catalogue (stability
    other than CONSISTENT), the macros that call them, and `ALSO_VOLATILE`."""
    global _VOLATILE
    if _VOLATILE is None:
        rows = con.execute("SELECT DISTINCT function_name, stability, macro_definition FROM duckdb_functions() "
                           "WHERE function_type IN ('scalar', 'macro')").fetchall()
        found = {name.lower() for name, stability, _ in rows if stability not in (None, "CONSISTENT")}
        found |= ALSO_VOLATILE
        macros = [(name.lower(), (body or "").lower()) for name, stability, body in rows if body]
        grew = True
        while grew:   # a macro calling a volatile function (or a macro that does) is volatile too
            words = re.compile(r"\b(" + "|".join(map(re.escape, sorted(found))) + r")\b")
            new = {name for name, body in macros if name not in found and words.search(body)}
            found |= new
            grew = bool(new)
        _VOLATILE = frozenset(found)
    return _VOLATILE


_VOLATILE: frozenset[str] | None = None


def filtered_candidates(where: str | None, with_pool: bool = True, field: str = "where") -> str:
    """A FROM-clause subquery named `candidates`: the rows of one pool (bound as the first `?` parameter when
    `with_pool`) that pass the checked user filter. Use as `SELECT ... FROM {filtered_candidates(w)} ...`."""
    inner = "SELECT * FROM candidates" + (" WHERE pool = ?" if with_pool else "")
    if where is None:
        return f"({inner}) AS candidates"
    expr = check_filter(where, field, recorded=False)   # read: a recorded filter replays as it was recorded
    # newlines around the filter: a trailing line comment could not reach our text even if one got through
    return f"(SELECT * FROM ({inner}) AS candidates WHERE (\n{expr}\n)) AS candidates"


def _parse(con, text: str, fail) -> dict:
    sql = PREFIX + text
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        fail(_parser_message(exc))
    if len(statements) != 1:
        fail(f"holds {len(statements)} SQL statements (a ';'?); a filter is one expression")
    try:
        tokens = duckdb.tokenize(sql)
    except duckdb.Error as exc:
        fail(_parser_message(exc))
    comments = [pos - len(PREFIX) for pos, kind in tokens if kind == duckdb.token_type.comment]
    if comments:
        fail(f"has a comment at character {comments[0] + 1}; comments are not allowed in a filter")
    serialized = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0]
    depth = _json_depth(serialized)
    with _recursion_limit(depth + 100):   # DuckDB caps the nesting; json's decoder recurses
        out = json.loads(serialized)
    if out.get("error"):
        fail(_parser_message(out.get("error_message", "cannot be parsed")))
    if len(out["statements"]) != 1 or out["statements"][0]["node"].get("type") != "SELECT_NODE":
        fail("is not a single expression")
    return out["statements"][0]["node"], depth


def _parser_message(exc) -> str:
    return error_message(exc, "not a valid SQL expression: ")


def error_message(exc, prefix: str = "") -> str:
    """DuckDB's complaint about a filter, in the user's terms."""
    text = first_line(exc).replace("Parser Error: ", "")
    if "expression depth" in text.lower():
        return "nested too deeply: DuckDB takes at most 1000 nested levels of operators and function calls"
    return prefix + text


def _json_depth(text: str) -> int:
    """How deeply the JSON text nests (strings skipped), counted without recursion."""
    depth = deepest = 0
    for match in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[{]|[\]}]', text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


@contextmanager
def _recursion_limit(needed: int):
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(max(before, needed + 200))
    try:
        yield
    finally:
        sys.setrecursionlimit(before)


def _nodes(node):
    """Every dict in a parsed tree, with an explicit stack (a filter nests up to DuckDB's 1000 levels)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))


def first_line(exc) -> str:
    """DuckDB's error without the 'LINE 1: ...' excerpt of our wrapping query."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _without_locations(node):
    """A copy of a parsed tree without its query_location keys, built with an explicit stack."""
    def shell(item):
        if isinstance(item, dict):
            return {}
        return [] if isinstance(item, list) else item

    root = shell(node)
    stack = [(node, root)]
    while stack:
        src, dst = stack.pop()
        items = src.items() if isinstance(src, dict) else enumerate(src) if isinstance(src, list) else ()
        for key, value in items:
            if isinstance(key, str) and key.startswith("query_location"):
                continue
            copy = shell(value)
            if isinstance(dst, dict):
                dst[key] = copy
            else:
                dst.append(copy)
            if copy is not value:
                stack.append((value, copy))
    return root


def _clause_words(keys: list[str]) -> str:
    words = {"modifiers": "ORDER BY / LIMIT / OFFSET", "group_expressions": "GROUP BY", "group_sets": "GROUP BY",
             "having": "HAVING", "qualify": "QUALIFY", "sample": "USING SAMPLE", "type": "UNION / EXCEPT",
             "cte_map": "WITH", "select_list": "a select list", "from_table": "a FROM clause"}
    return ", ".join(dict.fromkeys(words.get(k, k) for k in keys)) or "other clauses"


def _lambda_names(node) -> set[str]:
    """Parameter names of the lambdas in an expression (`m -> m.role = 'user'`), which look like columns."""
    return {n.lower() for d in _nodes(node) if d.get("class") == "LAMBDA" for n in _column_names(d.get("lhs"))}


def _column_names(node) -> list[str]:
    return [d["column_names"][0] for d in _nodes(node) if d.get("class") == "COLUMN_REF"]


def _check_expression(node, columns: set[str], lambdas: set[str], volatile: frozenset[str], fail) -> None:
    for d in _nodes(node):
        kind = d.get("class")
        if kind is None:
            continue
        if kind not in ALLOWED_NODES:
            fail(f"uses {NODE_WORDS.get(kind, kind.lower())}, which a filter may not")
        if kind == "COLUMN_REF":
            parts = [p.lower() for p in d["column_names"]]
            if parts[0] == "candidates" and len(parts) > 1:
                parts = parts[1:]
            if parts[0] not in columns and parts[0] not in lambdas:
                if parts[0] in volatile:
                    fail(_volatile_words(parts[0]))
                fail(f"unknown column {'.'.join(d['column_names'])!r}; a filter may use the columns of "
                     f"candidates: {', '.join(sorted(columns))}")
        if kind == "FUNCTION":
            if d.get("over") is not None:
                fail(f"uses {NODE_WORDS['WINDOW']}, which a filter may not")
            if str(d.get("function_name", "")).lower() in volatile:
                fail(_volatile_words(str(d["function_name"]).lower() + "()"))


def _volatile_words(name: str) -> str:
    return (f"uses {name}, whose value changes from one run to the next: a filter is recorded with the selection "
            "and must pick the same candidates when it is replayed (filter on the candidates' columns instead)")
