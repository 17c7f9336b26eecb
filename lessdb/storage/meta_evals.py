"""DuckDB reads and writes of evaluations (migrations/0006_evals.sql)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from .paths import resolved_model_name


@dataclass
class EvalRecord:
    eval_id: str
    method: str
    model_name: str
    task: str
    split: str
    params: dict[str, Any]
    lessdb_version: str
    run_id: str | None = None
    epoch: int | None = None
    selection_id: str | None = None
    model_sha256: str | None = None
    is_transfer: bool = False
    seed: int | None = None
    task_hash: str | None = None
    items_source: str | None = None
    items_sha256: str | None = None
    n_items: int | None = None
    item_limit: int | None = None
    sample_seed: int | None = None
    device: str | None = None
    seconds: float | None = None


@dataclass
class MetricValue:
    metric: str
    subtask: str      # '' = task-level aggregate
    value: float
    n_items: int


@dataclass
class ItemResult:
    subtask: str
    item_id: str
    answers: list[str]
    score: float
    prediction: str | None = None
    output: str | None = None


_EVAL_COLUMNS = [f for f in EvalRecord.__dataclass_fields__]


def record_eval(ws, record: EvalRecord, metrics: list[MetricValue], items: list[ItemResult]) -> str:
    """Write one evaluation, its metrics and its per-item results in a single transaction."""
    row = asdict(record)
    row["params"] = json.dumps(row["params"], sort_keys=True, default=str)
    placeholders = ", ".join("?" for _ in _EVAL_COLUMNS)
    with ws.duck.transaction() as con:
        con.execute(f"INSERT INTO evals ({', '.join(_EVAL_COLUMNS)}) VALUES ({placeholders})",
                    [row[c] for c in _EVAL_COLUMNS])
        if metrics:
            con.executemany("INSERT INTO eval_results VALUES (?, ?, ?, ?, ?)",
                            [[record.eval_id, m.metric, m.subtask, float(m.value), int(m.n_items)] for m in metrics])
        if items:
            con.executemany(
                "INSERT INTO eval_items VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [[record.eval_id, i, it.subtask, it.item_id, it.prediction, it.output,
                  json.dumps(it.answers, ensure_ascii=False), float(it.score)] for i, it in enumerate(items)])
    return record.eval_id


def run_context(ws, run_id: str) -> dict | None:
    """A run with its latest checkpoint epoch and, when it trained on one, its selection's method."""
    with ws.duck.connect(read_only=True) as con:
        row = con.execute(
            """SELECT r.run_id, r.kind, r.selection_id, r.model_name, r.model_sha256, r.is_transfer, r.seed,
                      r.percentage, r.config, r.status, s.method AS selection_method, s.percentage AS sel_percentage,
                      s.k AS sel_k, (SELECT max(epoch) FROM checkpoints c WHERE c.run_id = r.run_id) AS last_epoch
               FROM runs r LEFT JOIN selections s ON s.selection_id = r.selection_id
               WHERE r.run_id = ?""", [run_id]).fetchone()
        if row is None:
            return None
        cols = [d[0] for d in con.description]
    ctx = dict(zip(cols, row))
    ctx["model_name"] = resolved_model_name(ws.root, ctx["model_name"])   # stored relative inside the workspace
    ctx["config"] = json.loads(ctx["config"]) if isinstance(ctx["config"], str) else (ctx["config"] or {})
    return ctx


def checkpoint_epochs(ws, run_id: str) -> list[int]:
    with ws.duck.connect(read_only=True) as con:
        return [r[0] for r in con.execute("SELECT epoch FROM checkpoints WHERE run_id = ? ORDER BY epoch",
                                          [run_id]).fetchall()]


def task_level_results(ws, task: str) -> list[dict]:
    """Task-level metric values of every evaluation of `task`, with what the compare table groups by.
    Only the latest evaluation of the same (run or base model, checkpoint, test items) counts."""
    with ws.duck.connect(read_only=True) as con:
        cur = con.execute(
            """WITH latest AS (
                   SELECT * FROM evals WHERE task = ?
                   QUALIFY row_number() OVER (
                       PARTITION BY coalesce(run_id, 'model:' || model_name), coalesce(epoch, -1),
                                    coalesce(items_sha256, ''), coalesce(task_hash, '')
                       ORDER BY created_at DESC, eval_id DESC) = 1)
               SELECT l.eval_id, l.run_id, l.epoch, l.selection_id, l.method, l.model_name, l.is_transfer, l.seed,
                      l.items_sha256, l.n_items, l.item_limit, l.task_hash,
                      coalesce(s.percentage, ru.percentage) AS percentage, s.k AS k,
                      r.metric, r.value, l.created_at
               FROM latest l
               JOIN eval_results r ON r.eval_id = l.eval_id AND r.subtask = ''
               LEFT JOIN selections s ON s.selection_id = l.selection_id
               LEFT JOIN runs ru ON ru.run_id = l.run_id
               ORDER BY l.created_at, l.eval_id, r.metric""", [task])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]


def get_eval(ws, eval_id: str) -> dict | None:
    with ws.duck.connect(read_only=True) as con:
        cur = con.execute("SELECT * FROM evals WHERE eval_id = ?", [eval_id])
        row = cur.fetchone()
        if row is None:
            return None
        cols = [d[0] for d in cur.description]
        rec = dict(zip(cols, row))
        rec["params"] = json.loads(rec["params"]) if isinstance(rec["params"], str) else rec["params"]
        rec["results"] = [dict(zip(("metric", "subtask", "value", "n_items"), r)) for r in con.execute(
            "SELECT metric, subtask, value, n_items FROM eval_results WHERE eval_id = ? ORDER BY metric, subtask",
            [eval_id]).fetchall()]
    return rec


def list_evals(ws, task: str | None = None) -> list[dict]:
    with ws.duck.connect(read_only=True) as con:
        cur = con.execute(
            """SELECT e.eval_id, e.task, e.method, e.model_name, e.run_id, e.epoch, e.seed, e.n_items,
                      e.item_limit, substr(e.items_sha256, 1, 12) AS items, e.created_at,
                      string_agg(r.metric || '=' || round(r.value, 4)::VARCHAR, ' ' ORDER BY r.metric) AS results
               FROM evals e LEFT JOIN eval_results r ON r.eval_id = e.eval_id AND r.subtask = ''
               WHERE ? IS NULL OR e.task = ?
               GROUP BY ALL ORDER BY e.created_at, e.eval_id""", [task, task])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]
