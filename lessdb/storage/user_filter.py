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
Then it is applied over a subquery that has already restricted the pool, `SELECT * FROM (SELECT * FROM
candidates WHERE pool = ?) AS candidates WHERE (<filter>)`, so even a filter that got past the checks could
only narrow the pool, never widen it.
"""
from __future__ import annotations

import json

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


def check_filter(text: str, field: str = "where", columns: list[str] | None = None) -> str:
    """`text` if it is one boolean expression over candidates' columns (see the module docstring); raises
    InputError naming the setting `field` (the CLI shows its flag) saying what is wrong otherwise."""
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
        tree = _parse(con, text, fail)
        reference = _parse(con, "TRUE", fail)
    finally:
        con.close()
    where = tree.pop("where_clause")
    reference.pop("where_clause")
    if _without_locations(tree) != _without_locations(reference):
        extra = [k for k in tree if _without_locations(tree[k]) != _without_locations(reference.get(k))]
        fail("is more than one expression: it also has " + _clause_words(extra) +
             " (give only the condition, e.g. \"n_turns > 2 AND source_dataset <> 'x'\")")
    allowed = {c.lower() for c in (columns or candidate_columns())}
    _check_expression(where, allowed, _lambda_names(where), fail)
    return text


def filtered_candidates(where: str | None, with_pool: bool = True, field: str = "where") -> str:
    """A FROM-clause subquery named `candidates`: the rows of one pool (bound as the first `?` parameter when
    `with_pool`) that pass the checked user filter. Use as `SELECT ... FROM {filtered_candidates(w)} ...`."""
    inner = "SELECT * FROM candidates" + (" WHERE pool = ?" if with_pool else "")
    if where is None:
        return f"({inner}) AS candidates"
    expr = check_filter(where, field)
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
    out = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    if out.get("error"):
        fail(_parser_message(out.get("error_message", "cannot be parsed")))
    if len(out["statements"]) != 1 or out["statements"][0]["node"].get("type") != "SELECT_NODE":
        fail("is not a single expression")
    return out["statements"][0]["node"]


def _parser_message(exc) -> str:
    return f"not a valid SQL expression: {first_line(exc).replace('Parser Error: ', '')}"


def first_line(exc) -> str:
    """DuckDB's error without the 'LINE 1: ...' excerpt of our wrapping query."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _without_locations(node):
    if isinstance(node, dict):
        return {k: _without_locations(v) for k, v in node.items() if not k.startswith("query_location")}
    if isinstance(node, list):
        return [_without_locations(v) for v in node]
    return node


def _clause_words(keys: list[str]) -> str:
    words = {"modifiers": "ORDER BY / LIMIT / OFFSET", "group_expressions": "GROUP BY", "group_sets": "GROUP BY",
             "having": "HAVING", "qualify": "QUALIFY", "sample": "USING SAMPLE", "type": "UNION / EXCEPT",
             "cte_map": "WITH", "select_list": "a select list", "from_table": "a FROM clause"}
    return ", ".join(dict.fromkeys(words.get(k, k) for k in keys)) or "other clauses"


def _lambda_names(node) -> set[str]:
    """Parameter names of the lambdas in an expression (`m -> m.role = 'user'`), which look like columns."""
    names: set[str] = set()
    if isinstance(node, dict):
        if node.get("class") == "LAMBDA":
            names |= {n.lower() for n in _column_names(node.get("lhs"))}
        for v in node.values():
            names |= _lambda_names(v)
    elif isinstance(node, list):
        for v in node:
            names |= _lambda_names(v)
    return names


def _column_names(node) -> list[str]:
    if isinstance(node, dict):
        if node.get("class") == "COLUMN_REF":
            return [node["column_names"][0]]
        return [n for v in node.values() for n in _column_names(v)]
    if isinstance(node, list):
        return [n for v in node for n in _column_names(v)]
    return []


def _check_expression(node, columns: set[str], lambdas: set[str], fail) -> None:
    if isinstance(node, list):
        for v in node:
            _check_expression(v, columns, lambdas, fail)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("class")
    if kind is not None:
        if kind not in ALLOWED_NODES:
            fail(f"uses {NODE_WORDS.get(kind, kind.lower())}, which a filter may not")
        if kind == "COLUMN_REF":
            parts = [p.lower() for p in node["column_names"]]
            if parts[0] == "candidates" and len(parts) > 1:
                parts = parts[1:]
            if parts[0] not in columns and parts[0] not in lambdas:
                fail(f"unknown column {'.'.join(node['column_names'])!r}; a filter may use the columns of "
                     f"candidates: {', '.join(sorted(columns))}")
            return
        if kind == "FUNCTION" and node.get("over") is not None:
            fail(f"uses {NODE_WORDS['WINDOW']}, which a filter may not")
    for key, value in node.items():
        _check_expression(value, columns, lambdas, fail)
