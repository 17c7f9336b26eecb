"""Storage for selections: recording selections and members, reading what selection needs from other
stages' tables (runs, feature sets, task versions), pinned Lance scans, and the audit queries.

Every DuckDB connection here is short-lived (see storage/duck.py); Lance reads are pinned to versions.
"""
from __future__ import annotations

import json
from typing import Iterator

import pyarrow as pa

from ..choices import FEATURE_BATCH_ROWS
from ..errors import LessdbError
from ..settings import SettingError, ref
from .lance_tables import CANDIDATES
from .member_digest import members_on, record_digest
from .paths import resolved_path, stored_path
from .user_filter import filtered_candidates
from .sql_text import decode_json_columns, sql_in_list, sql_literal


# -- selections and members --------------------------------------------------------------------------------
SELECTION_COLUMNS = ["selection_id", "name", "task", "task_hash", "method", "params", "run_id", "feature_set_id",
                     "checkpoints", "weights", "sketch", "table_versions", "sql_filter", "k", "percentage", "seed",
                     "n_scored", "n_unscorable", "replay_of", "lessdb_version", "created_at"]
_JSON_COLUMNS = ("params", "checkpoints", "weights", "sketch", "table_versions")


def insert_selection(ws, row: dict, members: pa.Table, extras: dict[str, pa.Table] | None = None) -> None:
    """One selection and its members (rank, candidate_id, pool, score, best_subtask), atomically; `extras`:
    claiming targets, budget tokens and skipped candidates (meta_selection_extras.py)."""
    cols = [c for c in SELECTION_COLUMNS if c != "created_at"]
    values = [json.dumps(row[c]) if c in _JSON_COLUMNS and row.get(c) is not None else row.get(c) for c in cols]
    with ws.duck.transaction() as con:
        if row.get("name") is not None and con.execute(
                "SELECT count(*) FROM selections WHERE name = ?", [row["name"]]).fetchone()[0]:
            raise SettingError(None, f"a selection named {row['name']!r} already exists; choose another {ref('name')}")
        con.execute(f"INSERT INTO selections ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", values)
        con.register("new_members", members)
        con.execute("INSERT INTO selection_members (selection_id, rank, candidate_id, pool, score, best_subtask) "
                    "SELECT ?, rank, candidate_id, pool, score, best_subtask FROM new_members",
                    [row["selection_id"]])
        con.unregister("new_members")
        record_digest(con, row["selection_id"], members)   # what export and verify check the members against
        if extras:
            from .meta_selection_extras import insert_extras

            insert_extras(con, extras)


def _decode(row: dict) -> dict:
    return decode_json_columns(row, _JSON_COLUMNS)


def list_selections(ws) -> list[dict]:
    with ws.duck.connect(read_only=True) as con:
        cur = con.execute(f"SELECT {', '.join(SELECTION_COLUMNS)} FROM selections ORDER BY created_at, selection_id")
        return [_decode(dict(zip(SELECTION_COLUMNS, r))) for r in cur.fetchall()]


def get_selection(ws, ref: str) -> dict:
    """A selection by id, by name, or by a unique id prefix."""
    with ws.duck.connect(read_only=True) as con:
        rows = con.execute(f"SELECT {', '.join(SELECTION_COLUMNS)} FROM selections "
                           "WHERE selection_id = ? OR name = ? ORDER BY created_at", [ref, ref]).fetchall()
        if not rows:
            rows = con.execute(f"SELECT {', '.join(SELECTION_COLUMNS)} FROM selections "
                               "WHERE starts_with(selection_id, ?)", [ref]).fetchall()
    if not rows:
        raise LessdbError(f"no selection {ref!r} (see `lessdb selections`)")
    if len(rows) > 1:
        raise LessdbError(f"{ref!r} matches {len(rows)} selections: " + ", ".join(r[0] for r in rows))
    return _decode(dict(zip(SELECTION_COLUMNS, rows[0])))


def selection_members(ws, selection_id: str) -> pa.Table:
    """rank, candidate_id, pool, score, best_subtask, ordered by rank."""
    with ws.duck.connect(read_only=True) as con:
        return members_on(con, selection_id)


def record_export(ws, selection_id: str, path: str, fmt: str, n_rows: int, sha256: str) -> None:
    with ws.duck.transaction() as con:
        con.execute("INSERT INTO exports (selection_id, path, format, n_rows, sha256) VALUES (?, ?, ?, ?, ?)",
                    [selection_id, stored_path(ws.root, path), fmt, n_rows, sha256])


def list_exports(ws, selection_id: str) -> list[dict]:
    with ws.duck.connect(read_only=True) as con:
        rows = con.execute("SELECT path, format, n_rows, sha256, created_at FROM exports WHERE selection_id = ? "
                           "ORDER BY created_at", [selection_id]).fetchall()
    return [dict(zip(["path", "format", "n_rows", "sha256", "created_at"], (resolved_path(ws.root, r[0]), *r[1:])))
            for r in rows]


# -- what selection reads from other stages' tables (read-only) ---------------------------------------------
def pools(ws) -> list[str]:
    with ws.duck.connect(read_only=True) as con:
        return [r[0] for r in con.execute("SELECT name FROM pools ORDER BY name").fetchall()]


def feature_sets_of_run(ws, run_id: str, grad_kind: str | None = None) -> list[dict]:
    sql = ("SELECT feature_set_id, grad_kind, sketch_kind, dim, dtype, created_at FROM feature_sets "
           "WHERE run_id = ?")
    params = [run_id]
    if grad_kind is not None:
        sql += " AND grad_kind = ?"
        params.append(grad_kind)
    with ws.duck.connect(read_only=True) as con:
        rows = con.execute(sql + " ORDER BY created_at DESC, feature_set_id", params).fetchall()
    return [dict(zip(["feature_set_id", "grad_kind", "sketch_kind", "dim", "dtype", "created_at"], r)) for r in rows]


def feature_exclusions(ws, feature_set_id: str) -> set[str]:
    """Examples the feature set excluded (no completion token left after truncation)."""
    with ws.duck.connect(read_only=True) as con:
        return {r[0] for r in con.execute("SELECT DISTINCT example_id FROM feature_exclusions "
                                          "WHERE feature_set_id = ? AND role = 'candidate'",
                                          [feature_set_id]).fetchall()}


def excluded_examples(ws, feature_set_id: str, epoch: int, role: str = "candidate") -> list[str]:
    with ws.duck.connect(read_only=True) as con:
        return [r[0] for r in con.execute("SELECT example_id FROM feature_exclusions WHERE feature_set_id = ? "
                                          "AND role = ? AND epoch = ?", [feature_set_id, role, epoch]).fetchall()]


def candidate_ids_without_completion(ws, pool: str, where: str | None, version: int) -> set[str]:
    """Filtered candidates with no assistant text at all (never scorable, whatever the tokenizer)."""
    from .candidates import select_candidate_ids

    return set(select_candidate_ids(ws, pool, where, version, extra_condition="completion_chars = 0"))


# -- pinned Lance scans ------------------------------------------------------------------------------------
def scan_candidates(ws, version: int, pool: str, columns: list[str],
                    batch_rows: int = 2048) -> Iterator[pa.RecordBatch]:
    """Every candidate row of `pool` at `version` (one sequential scan; callers drop unwanted ids)."""
    ds = ws.lance.dataset(CANDIDATES, version)
    yield from ds.to_batches(columns=sorted(set(columns) | {"id"}), filter=f"pool = {sql_literal(pool)}",
                             batch_size=batch_rows)


def feature_table_columns(ws, table: str) -> list[str]:
    return list(ws.lance.dataset(table).schema.names)


def scan_features(ws, table: str, version: int, role: str, epoch: int | list[int] | None = None,
                  columns: tuple[str, ...] = ("example_id", "vector"),
                  batch_rows: int = FEATURE_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """Rows of a feature table at `version` with this role (and epoch, or any of a list of epochs), in the
    table's stored order."""
    ds = ws.lance.dataset(table, version)
    filt = f"role = {sql_literal(role)}"
    if isinstance(epoch, (list, tuple)):
        filt += " AND epoch IN (" + ", ".join(str(int(e)) for e in epoch) + ")"
    elif epoch is not None:
        filt += f" AND epoch = {int(epoch)}"
    yield from ds.to_batches(columns=list(columns), filter=filt, batch_size=batch_rows)


def scan_feature_rows(ws, table: str, version: int, role: str, epochs: list[int], example_ids: list[str],
                      columns=("example_id", "epoch", "vector")) -> Iterator[pa.RecordBatch]:
    """`columns` of the given examples at these epochs, in the table's stored order."""
    if not example_ids:
        return
    ds = ws.lance.dataset(table, version)
    for start in range(0, len(example_ids), 1000):   # filters of bounded size
        filt = (f"role = {sql_literal(role)} AND epoch IN ({', '.join(str(int(e)) for e in epochs)}) AND "
                "example_id IN " + sql_in_list(example_ids[start:start + 1000]))
        yield from ds.to_batches(columns=list(columns), filter=filt)


def feature_epochs(ws, table: str, version: int, role: str = "candidate") -> list[int]:
    ds = ws.lance.dataset(table, version)
    epochs = set()
    for batch in ds.to_batches(columns=["epoch"], filter=f"role = {sql_literal(role)}", batch_size=65536):
        epochs.update(batch.column(0).unique().to_pylist())
    return sorted(epochs)


def tag_versions(ws, versions: dict[str, int], tag: str) -> None:
    """Tag the table versions a selection read, so routine cleanup keeps them (replay needs them)."""
    for name, version in versions.items():
        table = ws.lance.open(name)
        try:
            with ws.lance.writing():
                table.tags.create(tag, version)
        except Exception as exc:  # an existing tag of that name: fine if it points at the same version
            try:
                if table.tags.get_version(tag) == version:
                    continue
            except Exception:
                pass
            raise LessdbError(f"could not tag {name} version {version} as {tag}: {exc}") from exc


# -- audit ---------------------------------------------------------------------------------------------------
def _pinned(ws, candidates_version: int | None) -> dict:
    return ws.lance_relations({CANDIDATES: candidates_version} if candidates_version is not None else None)


def source_mix(ws, selection: dict) -> list[dict]:
    """Per source dataset: n and share in the selection and in the filtered pool it was drawn from."""
    version = (selection["table_versions"] or {}).get(CANDIDATES)
    pool = selection["params"].get("pool")
    where = selection.get("sql_filter")
    pool_sql = f"SELECT source_dataset, count(*) AS n FROM {filtered_candidates(where)} GROUP BY ALL"
    with ws.duck.connect(read_only=True, relations=_pinned(ws, version)) as con:
        con.execute("SET enable_external_access = false")
        rows = con.execute(
            f"WITH sel AS (SELECT source_dataset, count(*) AS n FROM selection_audit WHERE selection_id = ? "
            f"GROUP BY ALL), pl AS ({pool_sql}) "
            "SELECT coalesce(sel.source_dataset, pl.source_dataset) AS source_dataset, "
            "coalesce(sel.n, 0) AS n_selected, coalesce(pl.n, 0) AS n_pool, "
            "coalesce(sel.n, 0) / sum(coalesce(sel.n, 0)) OVER () AS share_selected, "
            "coalesce(pl.n, 0) / sum(coalesce(pl.n, 0)) OVER () AS share_pool "
            "FROM sel FULL OUTER JOIN pl ON sel.source_dataset IS NOT DISTINCT FROM pl.source_dataset "
            "ORDER BY n_selected DESC, n_pool DESC, source_dataset",
            [selection["selection_id"], pool]).fetchall()
    cols = ["source_dataset", "n_selected", "n_pool", "share_selected", "share_pool"]
    return [dict(zip(cols, r)) for r in rows]


LENGTH_COLUMNS = ("total_chars", "prompt_chars", "completion_chars", "n_turns")


def length_stats(ws, selection: dict) -> list[dict]:
    """Mean / median / p10 / p90 of candidate lengths: selection vs the filtered pool."""
    version = (selection["table_versions"] or {}).get(CANDIDATES)
    pool = selection["params"].get("pool")
    where = selection.get("sql_filter")
    aggs = ", ".join(f"avg({c}), median({c}), quantile_cont({c}, 0.1), quantile_cont({c}, 0.9)"
                     for c in LENGTH_COLUMNS)
    with ws.duck.connect(read_only=True, relations=_pinned(ws, version)) as con:
        con.execute("SET enable_external_access = false")
        sel = con.execute(f"SELECT {aggs} FROM selection_audit WHERE selection_id = ?",
                          [selection["selection_id"]]).fetchone()
        pl = con.execute(f"SELECT {aggs} FROM {filtered_candidates(where)}", [pool]).fetchone()
    out = []
    for i, c in enumerate(LENGTH_COLUMNS):
        for label, row in (("selection", sel), ("pool", pl)):
            out.append({"column": c, "set": label, "mean": row[4 * i], "median": row[4 * i + 1],
                        "p10": row[4 * i + 2], "p90": row[4 * i + 3]})
    return out


def audit_rows(ws, selection_id: str, candidates_version: int | None, limit: int | None = None) -> list[dict]:
    """The selection_audit view (members with candidate metadata), pinned to the recorded candidates version."""
    with ws.duck.connect(read_only=True, relations=_pinned(ws, candidates_version)) as con:
        rel = con.execute("SELECT rank, score, best_subtask, candidate_id, pool, source_dataset, total_chars, "
                          "completion_chars FROM selection_audit WHERE selection_id = ? ORDER BY rank"
                          + (f" LIMIT {int(limit)}" if limit else ""), [selection_id])
        cols = [d[0] for d in rel.description]
        return [dict(zip(cols, r)) for r in rel.fetchall()]


def member_metadata(ws, selection_id: str, candidates_version: int | None) -> dict[str, dict]:
    """candidate_id -> {source_dataset, total_chars} for diff summaries."""
    with ws.duck.connect(read_only=True, relations=_pinned(ws, candidates_version)) as con:
        rows = con.execute("SELECT candidate_id, source_dataset, total_chars FROM selection_audit "
                           "WHERE selection_id = ?", [selection_id]).fetchall()
    return {r[0]: {"source_dataset": r[1], "total_chars": r[2]} for r in rows}




def member_completion_tokens(ws, selection_id: str) -> tuple[int, int]:
    """(sum of the members' completion tokens, members with no token count) from `selection_member_tokens`."""
    with ws.duck.connect(read_only=True) as con:
        total, missing = con.execute("SELECT coalesce(sum(completion_tokens), 0), count(*) - count(completion_tokens) "
                                     "FROM selection_member_tokens WHERE selection_id = ?", [selection_id]).fetchone()
    return int(total), int(missing)

