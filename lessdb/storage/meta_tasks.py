"""Metadata queries for target tasks: content-addressed versions, their examples, and name pointers."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa

STATUS_CREATED = "created"      # the name is new
STATUS_UPDATED = "updated"      # the name now points at a different version
STATUS_UNCHANGED = "unchanged"  # the name already pointed at this version


@dataclass(frozen=True)
class TaskVersionRows:
    """One task version ready to be written: its examples as (subtask_index, subtask, position,
    example_id, messages) tuples, already in order."""

    name: str
    task_hash: str
    origin: str
    source: str | None
    description: str | None
    n_subtasks: int
    examples: list[tuple[int, str, int, str, list[dict]]]


def task_pointers(ws) -> dict[str, dict]:
    """name -> {task_hash, origin, source, description, updated_at} for every registered task."""
    with ws.duck.connect(read_only=True) as con:
        rows = con.execute("SELECT name, task_hash, origin, source, description, updated_at FROM tasks "
                           "ORDER BY name").fetchall()
    return {r[0]: {"task_hash": r[1], "origin": r[2], "source": r[3], "description": r[4], "updated_at": r[5]}
            for r in rows}


def list_task_rows(ws) -> list[dict]:
    """Every named task with its version's counts and per-subtask example counts (in task order)."""
    with ws.duck.connect(read_only=True) as con:
        rows = con.execute(
            "SELECT t.name, t.origin, t.source, t.description, t.task_hash, v.n_subtasks, v.n_examples, "
            "       t.updated_at "
            "FROM tasks t JOIN task_versions v USING (task_hash) ORDER BY t.name").fetchall()
        counts = con.execute(
            "SELECT e.task_hash, e.subtask, count(*) AS n, min(e.subtask_index) AS idx "
            "FROM task_examples e WHERE e.task_hash IN (SELECT task_hash FROM tasks) "
            "GROUP BY e.task_hash, e.subtask ORDER BY e.task_hash, idx").fetchall()
    per_hash: dict[str, dict[str, int]] = {}
    for task_hash, subtask, n, _ in counts:
        per_hash.setdefault(task_hash, {})[subtask] = int(n)
    keys = ("name", "origin", "source", "description", "task_hash", "n_subtasks", "n_examples", "updated_at")
    out = []
    for row in rows:
        item = dict(zip(keys, row))
        item["subtasks"] = per_hash.get(item["task_hash"], {})
        out.append(item)
    return out


def read_task_examples(ws, task_hash: str) -> list[tuple[str, str, list[dict]]] | None:
    """(subtask, example_id, messages) of one version in order, or None if no such version exists."""
    with ws.duck.connect(read_only=True) as con:
        if con.execute("SELECT count(*) FROM task_versions WHERE task_hash = ?", [task_hash]).fetchone()[0] == 0:
            return None
        rows = con.execute("SELECT subtask, example_id, messages FROM task_examples WHERE task_hash = ? "
                           "ORDER BY subtask_index, position", [task_hash]).fetchall()
    return [(subtask, example_id, json.loads(messages)) for subtask, example_id, messages in rows]


def task_history(ws, name: str) -> list[dict]:
    with ws.duck.connect(read_only=True) as con:
        rows = con.execute("SELECT task_hash, origin, source, registered_at FROM task_history WHERE name = ? "
                           "ORDER BY registered_at, rowid", [name]).fetchall()
    return [dict(zip(("task_hash", "origin", "source", "registered_at"), r)) for r in rows]


def register_task_versions(ws, versions: list[TaskVersionRows]) -> list[str]:
    """Write the versions not yet stored and point each name at its version, all in one transaction
    (nothing is written if anything fails). Idempotent: a name already at its version is left alone.
    Returns one status per entry: created | updated | unchanged."""
    statuses = []
    with ws.duck.transaction() as con:
        for v in versions:
            exists = con.execute("SELECT count(*) FROM task_versions WHERE task_hash = ?",
                                 [v.task_hash]).fetchone()[0]
            if not exists:
                _insert_version(con, v)
            current = con.execute("SELECT task_hash FROM tasks WHERE name = ?", [v.name]).fetchone()
            if current is not None and current[0] == v.task_hash:
                statuses.append(STATUS_UNCHANGED)
                continue
            if current is None:
                con.execute("INSERT INTO tasks (name, task_hash, origin, source, description, updated_at) "
                            "VALUES (?, ?, ?, ?, ?, current_timestamp)",
                            [v.name, v.task_hash, v.origin, v.source, v.description])
                statuses.append(STATUS_CREATED)
            else:
                # UPDATE of non-key columns, not DELETE + INSERT: DuckDB can reject re-inserting a key
                # deleted earlier in the same transaction.
                con.execute("UPDATE tasks SET task_hash = ?, origin = ?, source = ?, description = ?, "
                            "updated_at = current_timestamp WHERE name = ?",
                            [v.task_hash, v.origin, v.source, v.description, v.name])
                statuses.append(STATUS_UPDATED)
            con.execute("INSERT INTO task_history (name, task_hash, origin, source, registered_at) "
                        "VALUES (?, ?, ?, ?, current_timestamp)", [v.name, v.task_hash, v.origin, v.source])
    return statuses


def _insert_version(con, v: TaskVersionRows) -> None:
    con.execute("INSERT INTO task_versions (task_hash, n_subtasks, n_examples, created_at) "
                "VALUES (?, ?, ?, current_timestamp)", [v.task_hash, v.n_subtasks, len(v.examples)])
    rows = pa.table({
        "task_hash": pa.array([v.task_hash] * len(v.examples), pa.string()),
        "subtask_index": pa.array([e[0] for e in v.examples], pa.int32()),
        "subtask": pa.array([e[1] for e in v.examples], pa.string()),
        "position": pa.array([e[2] for e in v.examples], pa.int32()),
        "example_id": pa.array([e[3] for e in v.examples], pa.string()),
        "messages": pa.array([json.dumps(e[4], ensure_ascii=False) for e in v.examples], pa.string()),
    })
    con.register("_task_example_rows", rows)
    try:
        con.execute("INSERT INTO task_examples SELECT task_hash, subtask_index, subtask, position, example_id, "
                    "CAST(messages AS JSON) FROM _task_example_rows")
    finally:
        con.unregister("_task_example_rows")
