"""DuckDB reads and writes of validations (migrations/0025_validations.sql)."""
from __future__ import annotations

import json

from .sql_text import decode_json_columns

VALIDATION_COLUMNS = ("validation_id", "selection_id", "task", "config", "items_hash", "items", "training_sets",
                      "cost", "status", "lessdb_version", "created_at", "finished_at")
RESULT_COLUMNS = ("comparison", "metric", "n_items", "n_runs", "n_comparison_runs", "selection_mean",
                  "comparison_mean", "improvement", "low", "high", "level", "n_boot", "verdict", "line")
_JSON = ("config", "items", "training_sets", "cost")


def get_eval(ws, run_id: str, epoch: int, items_hash: str) -> dict | None:
    with ws.duck.connect(read_only=True) as con:
        row = con.execute("SELECT scores, answer_loss, choice_accuracy, seconds FROM validation_evals "
                          "WHERE run_id = ? AND epoch = ? AND items_hash = ?", [run_id, epoch, items_hash]).fetchone()
    if row is None:
        return None
    return {"scores": json.loads(row[0]), "answer_loss": row[1], "choice_accuracy": row[2], "seconds": row[3]}


def put_eval(ws, run_id: str, epoch: int, items_hash: str, scores: list, summary: dict, device: str,
             seconds: float) -> None:
    with ws.duck.transaction() as con:
        con.execute("DELETE FROM validation_evals WHERE run_id = ? AND epoch = ? AND items_hash = ?",
                    [run_id, epoch, items_hash])
        con.execute("INSERT INTO validation_evals (run_id, epoch, items_hash, n_items, answer_loss, choice_accuracy, "
                    "scores, device, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [run_id, epoch, items_hash, summary["n_items"], summary["answer_loss"],
                     summary["choice_accuracy"], json.dumps(scores), device, seconds])


def start_validation(ws, row: dict) -> None:
    """Insert a validation, or mark an existing one (same id: same selection, settings, items) running again."""
    with ws.duck.transaction() as con:
        if con.execute("SELECT 1 FROM validations WHERE validation_id = ?", [row["validation_id"]]).fetchone():
            con.execute("UPDATE validations SET status = 'running' WHERE validation_id = ?", [row["validation_id"]])
            return
        con.execute("INSERT INTO validations (validation_id, selection_id, task, config, items_hash, items, status, "
                    "lessdb_version) VALUES (?, ?, ?, ?, ?, ?, 'running', ?)",
                    [row["validation_id"], row["selection_id"], row["task"], json.dumps(row["config"]),
                     row["items_hash"], json.dumps(row["items"]), row["lessdb_version"]])


def finish_validation(ws, validation_id: str, training_sets: dict, cost: dict, results: list[dict]) -> None:
    """The results replace any earlier ones of this validation, in one transaction with its completion."""
    with ws.duck.transaction() as con:
        con.execute("DELETE FROM validation_results WHERE validation_id = ?", [validation_id])
        for r in results:
            con.execute(f"INSERT INTO validation_results (validation_id, {', '.join(RESULT_COLUMNS)}) VALUES "
                        f"(?, {', '.join('?' * len(RESULT_COLUMNS))})", [validation_id, *(r[c] for c in RESULT_COLUMNS)])
        con.execute("UPDATE validations SET status = 'complete', training_sets = ?, cost = ?, "
                    "finished_at = current_timestamp WHERE validation_id = ?",
                    [json.dumps(training_sets), json.dumps(cost), validation_id])


def _decode(row: dict) -> dict:
    decode_json_columns(row, _JSON)
    for key in ("created_at", "finished_at"):
        if row.get(key) is not None:
            row[key] = str(row[key])
    return row


def list_validations(ws, selection_id: str | None = None) -> list[dict]:
    """Validations (newest last), each with its `results` rows."""
    where, params = ("WHERE selection_id = ?", [selection_id]) if selection_id else ("", [])
    with ws.duck.connect(read_only=True) as con:
        rows = con.execute(f"SELECT {', '.join(VALIDATION_COLUMNS)} FROM validations {where} ORDER BY created_at",
                           params).fetchall()
        out = [_decode(dict(zip(VALIDATION_COLUMNS, r))) for r in rows]
        for v in out:
            res = con.execute(f"SELECT {', '.join(RESULT_COLUMNS)} FROM validation_results WHERE validation_id = ? "
                              "ORDER BY comparison, metric", [v["validation_id"]]).fetchall()
            v["results"] = [dict(zip(RESULT_COLUMNS, r)) for r in res]
    return out


def run_seconds(ws, run_ids: list[str]) -> dict[str, float]:
    """Wall seconds of finished runs (finished_at - created_at)."""
    if not run_ids:
        return {}
    with ws.duck.connect(read_only=True) as con:
        rows = con.execute("SELECT run_id, epoch(finished_at) - epoch(created_at) FROM runs "
                           "WHERE run_id IN (SELECT unnest(?)) AND finished_at IS NOT NULL", [run_ids]).fetchall()
    return {r: float(s) for r, s in rows}


def feature_set_seconds(ws, feature_set_id: str) -> dict:
    """Compute recorded by a feature set's jobs: seconds and examples, candidates and validation rows apart."""
    with ws.duck.connect(read_only=True) as con:
        rows = con.execute("SELECT role, sum(seconds), sum(n_done) FROM feature_jobs WHERE feature_set_id = ? "
                           "GROUP BY role", [feature_set_id]).fetchall()
    return {role: {"seconds": float(s or 0), "examples": int(n or 0)} for role, s, n in rows}
