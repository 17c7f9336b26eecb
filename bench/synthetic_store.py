"""The synthetic workspace of the select benchmarks (select_speed, prefilter_select, dtype_select): a pool of
placeholder candidates, a 27-subtask × 3-example target task, a complete warmup run with its checkpoints and an
(empty) feature set, all through lessdb's own storage calls. The scripts then write the vectors they measure.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

N_SUBTASKS, N_VAL = 27, 3      # BBH's shape
CANDIDATE_CHUNK = 50_000       # candidates per ingest_rows call


def parse_shape(text: str) -> tuple[int, int, int]:
    """"NxCxD" (candidates × checkpoints × dim) as three ints."""
    n, c, d = (int(x) for x in text.lower().split("x"))
    return n, c, d


def add_candidates(ws, ids: list[str], rng: np.random.Generator | None = None,
                   datasets: tuple[str, ...] = ("flan",)) -> None:
    """Candidates `ids` in pool "bench": two-turn placeholder messages, source datasets cycling `datasets`;
    character counts drawn from `rng` (prompt 10-2000, completion 1-3000), or constant without one."""
    from lessdb.ingest.pipeline import ingest_rows
    from lessdb.storage.lance_tables import CANDIDATE_SCHEMA

    for start in range(0, len(ids), CANDIDATE_CHUNK):
        part = ids[start:start + CANDIDATE_CHUNK]
        m, idx = len(part), range(start, start + len(part))
        if rng is None:
            chars = {"prompt_chars": [5] * m, "completion_chars": [5] * m, "total_chars": [10] * m}
        else:
            chars = {"prompt_chars": rng.integers(10, 2000, m), "completion_chars": rng.integers(1, 3000, m),
                     "total_chars": rng.integers(11, 5000, m)}
        ingest_rows(ws, pa.table({
            "key": [f"bench/{c}" for c in part], "id": part, "pool": ["bench"] * m,
            "ingest_id": pa.array([1] * m, pa.int64()),
            "source_dataset": [datasets[i % len(datasets)] for i in idx],
            "source_id": [str(i) for i in idx],
            "messages": [[{"role": "user", "content": f"prompt {i}"}, {"role": "assistant", "content": f"answer {i}"}]
                         for i in idx],
            "n_turns": pa.array([2] * m, pa.int32()),
            **{k: pa.array(v, pa.int32()) for k, v in chars.items()}}, schema=CANDIDATE_SCHEMA), "bench")


def add_task(ws, root: Path, name: str):
    """A target task of N_SUBTASKS subtasks × N_VAL placeholder examples (written to root/task.jsonl); returns it."""
    from lessdb import tasks

    task_file = root / "task.jsonl"
    with open(task_file, "w") as fh:
        for s in range(N_SUBTASKS):
            for k in range(N_VAL):
                fh.write(json.dumps({"subtask": f"sub{s:02d}", "prompt": f"q {s} {k}", "completion": f"a {s} {k}"})
                         + "\n")
    tasks.add_tasks(ws, name, file=task_file)
    return tasks.load_task(ws, name)


def add_warmup_run(ws, run_id: str, checkpoints: int) -> None:
    """A complete warmup run on pool "bench" with `checkpoints` checkpoints (mean lr 2e-5 / epoch), no files."""
    from lessdb.storage import meta_runs

    meta_runs.create_run(ws, run_id=run_id, kind="warmup", pool="bench", model_name="tiny", model_sha256="bench",
                         seed=0, percentage=0.05, n_examples=0, n_excluded=0, config={}, device="cpu",
                         lessdb_version="bench")
    meta_runs.set_run_status(ws, run_id, "complete")
    for e in range(1, checkpoints + 1):
        meta_runs.add_checkpoint(ws, meta_runs.CheckpointInfo(run_id, e, "-", "-", "-", e, 2e-5 / e, None))


def add_feature_set(ws, fsid: str, run_id: str, dim: int, dtype: str):
    """A CountSketch Adam feature set of `run_id` (d = `dim`, stored as `dtype`) and its empty table; its info."""
    from lessdb.storage import features as fstore
    from lessdb.storage import meta_features

    meta_features.insert_feature_set(ws, {
        "feature_set_id": fsid, "run_id": run_id, "lance_table": fstore.table_name(fsid), "grad_kind": "adam",
        "bias_correction": True, "sketch_kind": "countsketch", "sketch_seed": 0, "sketch_nnz": 1, "n_params": 0,
        "dim": dim, "dtype": dtype, "compute_dtype": "float32", "max_seq_length": 512, "tokenizer_id": "-",
        "module_order": [], "model_sha256": "bench", "params": {}, "lessdb_version": "bench"})
    info = fstore.get_feature_set(ws, fsid)
    fstore.ensure_feature_table(ws, info)
    return info
