"""`lessdb select --engine ray`: score the candidate features fragment by fragment on a Ray cluster, at the
table version the selection pins, and merge on the driver.

Each task opens the pinned version itself (pylance; no workspace, no DuckDB), reads one fragment's rows of one
checkpoint and multiplies them with that checkpoint's folded queries using the local engine's accumulator
(fixed-size BLAS tiles, so a row's product does not depend on which rows share its tile). The driver adds the
per-row products in the local scan's order (checkpoint, then fragment, then row), so scores, members and the
recorded provenance are identical to `--engine local`. The top k is taken once on the driver: a candidate's
score sums checkpoints whose rows sit in different fragments, so no per-fragment top k could be exact.
"""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

from ..scale.cluster import ray_session, remote_error


def score_fragment(uri: str, version: int, storage_options, fragment_id: int, epoch: int, columns: tuple,
                   queries, row_scale: str, batch_rows: int, dim: int, fault: dict | None = None) -> dict:
    """One fragment's candidate rows of `epoch`: {ids, products [n, m] float64, zero [n] bool, bytes}."""
    os.environ["LESSDB_WORKER"] = "1"
    import torch

    torch.set_num_threads(1)
    from .scoring import QuerySet, ScoreAccumulator
    from ..storage.features import vector_view
    from ..scale.commits import open_dataset

    frag = open_dataset(uri, storage_options, version).get_fragment(fragment_id)
    table = frag.to_table(columns=list(columns), filter=f"role = 'candidate' AND epoch = {int(epoch)}")
    n = table.num_rows
    one = QuerySet(queries.subtasks, (epoch,), {epoch: queries.matrices[epoch]}, queries.aggregation)
    acc = ScoreAccumulator(n, one, row_scale=row_scale, batch_rows=batch_rows)
    vectors = vector_view(table.column("vector"), dim) if n else np.zeros((0, dim), np.float32)
    scale = table.column("norm").to_numpy(zero_copy_only=False) if row_scale == "given" else None
    if n:
        acc.add(epoch, np.arange(n), vectors, scale)
    if fault:
        from ..featurize.ray_worker import kill_once

        kill_once(fault, "select-worker")   # crash tests only: a task killed after its work, before returning it
    return {"ids": table.column("example_id").to_pylist(), "products": acc.scores, "zero": acc.zero_norm,
            "norms": scale, "bytes": int(vectors.nbytes)}


def score_ray(ws, table_name: str, version: int, epochs: list[int], columns: tuple, queries, acc, id_index,
              dim: int, batch_rows: int, address: str = "local", progress=None, check_norms=None) -> dict:
    """Fill the driver's ScoreAccumulator `acc` from fragment tasks; returns {fragments, tasks, bytes}.
    `check_norms(norms)`: the local engine's check of the raw norms of the rows used (row_scale "given")."""
    from ..scale.preflight import check_cluster

    with ray_session(address) as ray:
        # every node can open the pinned table (else: one error naming the node, before any work is sent)
        check_cluster(ray, ws.lance.table_uri(table_name), ws.lance.storage_options, version, address=address)
        return _score(ray, ws, table_name, version, epochs, columns, queries, acc, id_index, dim, batch_rows,
                      progress, check_norms)


def _score(ray, ws, table_name, version, epochs, columns, queries, acc, id_index, dim, batch_rows, progress,
           check_norms) -> dict:
    uri = ws.lance.table_uri(table_name)
    so = ws.lance.storage_options
    fragment_ids = [f.fragment_id for f in ws.lance.dataset(table_name, version).get_fragments()]
    task = ray.remote(num_cpus=1, max_retries=3)(score_fragment)
    q_ref = ray.put(queries)
    nbytes = 0
    fault = ({"fault": os.environ["LESSDB_FAULT"], "fault_marker": os.environ.get("LESSDB_FAULT_MARKER")}
             if os.environ.get("LESSDB_FAULT") else None)
    for epoch in epochs:
        refs = [task.remote(uri, version, so, fid, epoch, columns, q_ref, acc.row_scale, batch_rows, dim, fault)
                for fid in fragment_ids]
        for ref in refs:   # in fragment order: the local scan's order, so duplicate rows resolve alike
            try:
                part = ray.get(ref)
            except Exception as exc:   # noqa: BLE001
                raise remote_error(exc) from None
            if not part["ids"]:
                continue
            rows = id_index(pa.array(part["ids"], pa.string()))
            keep = rows >= 0
            if part["norms"] is not None and check_norms is not None:
                check_norms(part["norms"][keep])
            acc.add_scored(epoch, rows[keep], part["products"][keep], part["zero"][keep])
            nbytes += part["bytes"]
            if progress is not None:
                progress.update(len(part["ids"]))
    return {"fragments": len(fragment_ids), "tasks": len(fragment_ids) * len(epochs), "bytes": nbytes}
