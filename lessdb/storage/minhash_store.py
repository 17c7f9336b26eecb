"""LanceDB table `text_minhash`: one MinHash signature per (signature scheme, candidate id) for `--dedup-text`.

Candidate ids are content hashes, so a signature holds for the id in every pool and every table version; the key
"<scheme>/<id>" is the primary key and rows are only ever inserted when missing (`insert_missing`)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from .sql_text import sql_in_list, sql_literal

TABLE = "text_minhash"


def schema(num_perm: int) -> pa.Schema:
    return pa.schema([pa.field("key", pa.string(), nullable=False),
                      pa.field("scheme", pa.string(), nullable=False),
                      pa.field("candidate_id", pa.string(), nullable=False),
                      pa.field("signature", pa.list_(pa.uint32(), num_perm), nullable=False)])


def read_signatures(ws, scheme: str, ids: list[str], num_perm: int) -> dict[str, np.ndarray]:
    if not ids or not ws.lance.has_table(TABLE):
        return {}
    ds = ws.lance.dataset(TABLE)
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(ids), 2048):
        chunk = ids[start:start + 2048]
        filt = f"scheme = {sql_literal(scheme)} AND candidate_id IN " + sql_in_list(chunk)
        for batch in ds.to_batches(columns=["candidate_id", "signature"], filter=filt):
            flat = batch.column("signature").values.to_numpy(zero_copy_only=False).reshape(-1, num_perm)
            for cid, sig in zip(batch.column("candidate_id").to_pylist(), flat):
                out.setdefault(cid, sig.copy())
    return out


def write_signatures(ws, scheme: str, ids: list[str], signatures: np.ndarray) -> None:
    if not ids:
        return
    num_perm = signatures.shape[1]
    flat = pa.array(np.ascontiguousarray(signatures, dtype=np.uint32).reshape(-1), pa.uint32())
    data = pa.table({"key": [f"{scheme}/{i}" for i in ids], "scheme": [scheme] * len(ids), "candidate_id": ids,
                     "signature": pa.FixedSizeListArray.from_arrays(flat, num_perm)}, schema=schema(num_perm))
    ws.lance.insert_missing(TABLE, data, schema(num_perm))
