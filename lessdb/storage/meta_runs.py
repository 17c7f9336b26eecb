"""Metadata of models, training runs, their checkpoints (with eta-bar per epoch) and per-tokenizer token
counts (migrations/0003_warmup_runs.sql). Every call takes a short-lived DuckDB connection."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa

from .. import owners
from ..errors import LessdbError
from .paths import (resolved_model_name, resolved_path, stored_model_name, stored_model_source,
                    stored_path)


@dataclass(frozen=True)
class CheckpointInfo:
    run_id: str
    epoch: int
    path: str
    adapter_sha256: str
    optimizer_sha256: str
    optimizer_step: int
    mean_lr: float
    train_loss: float | None
    created_at: object = None

    def as_dict(self) -> dict:
        return {"run_id": self.run_id, "epoch": self.epoch, "path": self.path, "mean_lr": self.mean_lr,
                "optimizer_step": self.optimizer_step, "train_loss": self.train_loss,
                "adapter_sha256": self.adapter_sha256, "optimizer_sha256": self.optimizer_sha256,
                "created_at": self.created_at}


# -- models ----------------------------------------------------------------------------------------------
def upsert_model(ws, loaded) -> None:
    with ws.duck.transaction() as con:
        exists = con.execute("SELECT count(*) FROM models WHERE model_sha256 = ?", [loaded.sha256]).fetchone()[0]
        if exists:
            return
        con.execute("INSERT INTO models (model_sha256, name, source, path, n_params, config) VALUES (?, ?, ?, ?, ?, ?)",
                    [loaded.sha256, stored_model_name(ws.root, loaded.name),
                     stored_model_source(ws.root, loaded.source), stored_path(ws.root, loaded.path),
                     loaded.n_params, json.dumps(loaded.config, default=str)])


def list_models(ws) -> list[dict]:
    with ws.duck.connect(read_only=True) as con:
        cur = con.execute("SELECT model_sha256, name, source, path, n_params, created_at FROM models "
                          "ORDER BY created_at")
        cols = [d[0] for d in cur.description]
        rows = [dict(zip(cols, row)) for row in cur.fetchall()]
    for row in rows:   # stored relative to the workspace: where it is now
        row["path"] = resolved_path(ws.root, row["path"])
        row["name"] = resolved_model_name(ws.root, row["name"])
    return rows


# -- runs ------------------------------------------------------------------------------------------------
_RUN_COLUMNS = ("run_id", "kind", "pool", "selection_id", "model_name", "model_sha256", "is_transfer", "seed",
                "percentage", "n_examples", "n_excluded", "config", "device", "status", "lessdb_version",
                "created_at", "finished_at")


def create_run(ws, *, run_id: str, kind: str, pool: str | None, model_name: str, model_sha256: str, seed: int,
               percentage: float | None, n_examples: int, n_excluded: int, config: dict, device: str,
               lessdb_version: str, selection_id: str | None = None, is_transfer: bool = False,
               examples: list[tuple[str, bool]] = ()) -> None:
    """Insert the run (status 'running') and its examples (candidate_id, excluded) in one transaction."""
    from ..names import check_name

    check_name(run_id, "run_id")   # it becomes the folder checkpoints/<run id>/ (configs check it earlier)
    with ws.duck.transaction() as con:
        if con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).fetchone()[0]:
            raise LessdbError(f"run {run_id} already exists")
        con.execute(
            "INSERT INTO runs (run_id, kind, pool, selection_id, model_name, model_sha256, is_transfer, seed, "
            "percentage, n_examples, n_excluded, config, device, status, lessdb_version) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?)",
            [run_id, kind, pool, selection_id, stored_model_name(ws.root, model_name), model_sha256, is_transfer,
             seed, percentage, n_examples, n_excluded, json.dumps(config, default=str), device, lessdb_version])
        if examples:
            table = pa.table({"run_id": pa.array([run_id] * len(examples), pa.string()),
                              "candidate_id": pa.array([c for c, _ in examples], pa.string()),
                              "excluded": pa.array([bool(e) for _, e in examples], pa.bool_())})
            con.register("new_run_examples", table)
            con.execute("INSERT INTO run_examples SELECT run_id, candidate_id, excluded FROM new_run_examples")
            con.unregister("new_run_examples")


def set_run_status(ws, run_id: str, status: str) -> None:
    with ws.duck.transaction() as con:
        if status == "complete":
            con.execute("UPDATE runs SET status = ?, finished_at = current_timestamp WHERE run_id = ?", [status, run_id])
        else:
            con.execute("UPDATE runs SET status = ?, finished_at = NULL WHERE run_id = ?", [status, run_id])


def _run_row(con, run_id: str, root) -> dict | None:
    row = con.execute(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE run_id = ?", [run_id]).fetchone()
    if row is None:
        return None
    d = dict(zip(_RUN_COLUMNS, row))
    d["model_name"] = resolved_model_name(root, d["model_name"])   # a folder inside the workspace: where it is now
    d["config"] = json.loads(d["config"]) if isinstance(d["config"], str) else d["config"]
    return d


def get_run(ws, run_id: str) -> dict:
    with ws.duck.connect(read_only=True) as con:
        run = _run_row(con, run_id, ws.root)
    if run is None:
        raise LessdbError(f"no run {run_id!r} in this workspace (see `lessdb runs`)")
    return run


def run_model(ws, run_id: str | None, name: str, sha256: str) -> str:
    """The model to load for what a selection recorded (`name`, pinned by `sha256`): run `run_id`'s model as this
    workspace has it now when it is the same weights (a copied or moved workspace then reads its own model folder,
    not the one the record names), else `name`."""
    if run_id is not None:
        with ws.duck.connect(read_only=True) as con:
            run = _run_row(con, run_id, ws.root)
        if run is not None and run["model_sha256"] == sha256:
            return run["model_name"]
    return name


def list_runs(ws, kind: str | None = None, pool: str | None = None) -> list[dict]:
    """Runs, newest last, each with its checkpoints as dicts (epoch, path, mean_lr, ...)."""
    cond, params = [], []
    if kind:
        cond.append("kind = ?")
        params.append(kind)
    if pool:
        cond.append("pool = ?")
        params.append(pool)
    where = (" WHERE " + " AND ".join(cond)) if cond else ""
    with ws.duck.connect(read_only=True) as con:
        ids = [r[0] for r in con.execute(f"SELECT run_id FROM runs{where} ORDER BY created_at, run_id",
                                         params).fetchall()]
        runs = [_run_row(con, rid, ws.root) for rid in ids]
        for run in runs:
            run["checkpoints"] = [c.as_dict() for c in _checkpoints(con, run["run_id"], ws.root)]
    for run in runs:   # `running` with no live owner process: killed (resume it with --resume)
        run["status"] = owners.live_status(ws, owners.RUN, run["run_id"], run["status"])
    return runs


def latest_unfinished_run(ws, kind: str, pool: str | None) -> str | None:
    with ws.duck.connect(read_only=True) as con:
        row = con.execute("SELECT run_id FROM runs WHERE kind = ? AND status <> 'complete' "
                          "AND (? IS NULL OR pool = ?) ORDER BY created_at DESC, run_id DESC LIMIT 1",
                          [kind, pool, pool]).fetchone()
    return row[0] if row else None


def run_examples(ws, run_id: str, include_excluded: bool = False) -> list[str]:
    """Candidate ids of a run, sorted by id."""
    with ws.duck.connect(read_only=True) as con:
        rows = con.execute("SELECT candidate_id FROM run_examples WHERE run_id = ? AND (? OR NOT excluded) "
                           "ORDER BY candidate_id", [run_id, include_excluded]).fetchall()
    return [r[0] for r in rows]


# -- checkpoints ------------------------------------------------------------------------------------------
def add_checkpoint(ws, info: CheckpointInfo) -> None:
    with ws.duck.transaction() as con:
        con.execute("DELETE FROM checkpoints WHERE run_id = ? AND epoch = ?", [info.run_id, info.epoch])
        con.execute("INSERT INTO checkpoints (run_id, epoch, path, adapter_sha256, optimizer_sha256, optimizer_step, "
                    "mean_lr, train_loss) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [info.run_id, info.epoch, stored_path(ws.root, info.path), info.adapter_sha256,
                     info.optimizer_sha256,
                     info.optimizer_step, info.mean_lr, info.train_loss])


def _checkpoints(con, run_id: str, root) -> list[CheckpointInfo]:
    """The run's checkpoints, each `path` resolved against the workspace root (stored relative: paths.py)."""
    rows = con.execute("SELECT run_id, epoch, path, adapter_sha256, optimizer_sha256, optimizer_step, mean_lr, "
                       "train_loss, created_at FROM checkpoints WHERE run_id = ? ORDER BY epoch", [run_id]).fetchall()
    return [CheckpointInfo(r[0], r[1], resolved_path(root, r[2]), *r[3:]) for r in rows]


def list_checkpoints(ws, run_id: str) -> list[CheckpointInfo]:
    with ws.duck.connect(read_only=True) as con:
        return _checkpoints(con, run_id, ws.root)


# -- token counts -----------------------------------------------------------------------------------------
TOKEN_COUNT_SCHEMA = pa.schema([
    pa.field("tokenizer_id", pa.string()), pa.field("max_seq_length", pa.int32()),
    pa.field("candidate_id", pa.string()), pa.field("prompt_tokens", pa.int32()),
    pa.field("completion_tokens", pa.int32()), pa.field("total_tokens", pa.int32()),
    pa.field("truncated", pa.bool_())])


def counted_candidate_ids(ws, tokenizer_id: str, max_seq_length: int) -> set[str]:
    with ws.duck.connect(read_only=True) as con:
        rows = con.execute("SELECT candidate_id FROM token_counts WHERE tokenizer_id = ? AND max_seq_length = ?",
                           [tokenizer_id, max_seq_length]).fetchall()
    return {r[0] for r in rows}


def insert_token_counts(ws, table: pa.Table) -> None:
    """Rows of TOKEN_COUNT_SCHEMA; rows already present are left as they are (same tokenizer, same counts)."""
    if table.num_rows == 0:
        return
    with ws.duck.transaction() as con:
        con.register("new_token_counts", table)
        con.execute("INSERT OR IGNORE INTO token_counts SELECT tokenizer_id, max_seq_length, candidate_id, "
                    "prompt_tokens, completion_tokens, total_tokens, truncated FROM new_token_counts")
        con.unregister("new_token_counts")


def token_counts(ws, tokenizer_id: str, max_seq_length: int, ids: list[str] | None = None) -> dict[str, dict]:
    with ws.duck.connect(read_only=True) as con:
        cur = con.execute("SELECT candidate_id, prompt_tokens, completion_tokens, total_tokens, truncated "
                          "FROM token_counts WHERE tokenizer_id = ? AND max_seq_length = ?",
                          [tokenizer_id, max_seq_length])
        rows = cur.fetchall()
    wanted = set(ids) if ids is not None else None
    return {r[0]: {"prompt_tokens": r[1], "completion_tokens": r[2], "total_tokens": r[3], "truncated": r[4]}
            for r in rows if wanted is None or r[0] in wanted}
