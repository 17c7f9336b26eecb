"""The folded low-d copy of a feature set that `select --prefilter LOWDxFACTOR` scores first (issue 14 item 6).

A CountSketch at d folds exactly into the CountSketch at d' = d/m with the same hash reduced mod d' and the
same signs (`fold`), so the folded copy is itself a sketch of the same gradients. Other
projections are refused: a fold of the dense Rademacher sketch is not that sketch at d' (its d'-sketch is the
first d' columns), a fold of sparse-sign blocks collides buckets across blocks, and a fold of `none` (the raw
gradient) is an unrandomised hash.

`sync_folded` brings the copy up to a version of the full table, resumably and exactly once: under a per-copy
lock it lists the full table's keys (first occurrence, stored order), drops those the folded table already holds
(at its latest version: rows a killed sync appended are valid folds and are kept), folds the rest in commits of
`COMMIT_ROWS` rows read by row address, and records the folded version and the full version it covers in DuckDB
(`folded_copies`). A reader pins the version recorded with its selection, so nothing half-synced is ever read.
The copy is made on the first `select --prefilter` (or `lessdb fold`), and every later featurize run extends the
copies that exist (`refresh_folded_copies`), so they stay beside the full vectors.
"""
from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from .. import faults
from ..choices import FEATURE_BATCH_ROWS
from ..errors import LessdbError

COMMIT_ROWS = 65536     # rows per Lance commit of the folded table (a kill loses at most this much work)
TAKE_ROWS = FEATURE_BATCH_ROWS   # rows per read of the full table
_SPEC = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def fold(vectors: np.ndarray, low_dim: int) -> np.ndarray:
    """[n, d] -> [n, low_dim]: sum of the buckets b with b mod low_dim equal (exact CountSketch fold)."""
    n, d = vectors.shape
    if d % low_dim:
        raise ValueError(f"{low_dim} does not divide {d}")
    return vectors.reshape(n, d // low_dim, low_dim).sum(axis=1, dtype=np.float32)


def parse_prefilter(text) -> tuple[int, int]:
    """"1024x20" -> (1024, 20); a clear error for anything else."""
    if isinstance(text, dict):
        return int(text["low_dim"]), int(text["factor"])
    m = _SPEC.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not LOWDxFACTOR, e.g. 1024x20 (score at d=1024, rescan the best 20·k at "
                         "full d)")
    low, factor = int(m.group(1)), int(m.group(2))
    if low < 1 or factor < 1:
        raise ValueError(f"{text!r}: LOWD and FACTOR must both be at least 1")
    return low, factor


def check_foldable(fs, low_dim: int) -> None:
    """Refuse a feature set whose features do not fold exactly into a d' = `low_dim` sketch."""
    if fs.sketch_kind != "countsketch":
        raise LessdbError(f"feature set {fs.feature_set_id} uses the {fs.sketch_kind!r} projection, whose fold is not "
                          f"a {fs.sketch_kind} sketch at a lower dimension; a folded copy needs CountSketch features "
                          "(featurize with sketch countsketch, the default)")
    if not (1 <= low_dim < fs.dim) or fs.dim % low_dim:
        raise LessdbError(f"the folded dimension {low_dim} must divide the feature set's d = {fs.dim} and be "
                          f"smaller (e.g. {max(1, fs.dim // 8)})")


def sync_folded(ws, fs, low_dim: int, source_version: int | None = None, progress: bool = True) -> dict:
    """Make the folded table hold every row of the feature table at `source_version` (None: the latest);
    returns its `folded_copies` row (lance_version: the folded version to read)."""
    from ..progress import Progress
    from ..storage.features import vector_view
    from ..storage.folded_copies import folded_copy, folded_schema, folded_table_name, record_folded_copy

    check_foldable(fs, low_dim)
    name = folded_table_name(fs.feature_set_id, low_dim)
    with ws.write_lock(f"fold-{fs.feature_set_id}-{low_dim}"):
        version = source_version if source_version is not None else ws.lance.version(fs.lance_table)
        if version is None:
            raise LessdbError(f"feature set {fs.feature_set_id} has no features yet; run `lessdb featurize`")
        rec = folded_copy(ws, fs.feature_set_id, low_dim)
        latest = ws.lance.version(name)
        if rec and rec["source_version"] >= version and rec["lance_version"] == latest:
            return rec    # up to date (a newer copy holds every row of an older full version too)
        full = ws.lance.dataset(fs.lance_table, version)
        with_norm = "norm" in full.schema.names
        schema = folded_schema(low_dim, fs.dtype, with_norm)
        have = set()
        if latest is not None:
            for batch in ws.lance.dataset(name, latest).to_batches(columns=["key"], batch_size=65536):
                have.update(batch.column(0).to_pylist())
        todo = []
        for batch in full.to_batches(columns=["key"], with_row_address=True, batch_size=65536):
            for key, addr in zip(batch.column("key").to_pylist(), batch.column("_rowaddr").to_pylist()):
                if key not in have:   # first stored occurrence only, as every reader takes it
                    have.add(key)
                    todo.append(addr)
        meter = Progress(f"folding feature set {fs.feature_set_id} to d={low_dim}", total=len(todo), unit="rows",
                         enabled=None if progress else False)
        columns = ["key", "example_id", "epoch", "role", "vector"] + (["norm"] if with_norm else [])
        dtype = np.float16 if fs.dtype == "float16" else np.float32

        def batches(addrs):
            for start in range(0, len(addrs), TAKE_ROWS):
                part = addrs[start:start + TAKE_ROWS]
                rows = full._take_rows(part, columns=columns)
                low = fold(vector_view(rows.column("vector"), fs.dim), low_dim).astype(dtype)
                cols = {c: rows.column(c) for c in columns if c != "vector"}
                cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(low.reshape(-1)), low_dim)
                cols["source_row"] = pa.array(part, pa.uint64())
                yield from pa.table(cols).select(schema.names).cast(schema).to_batches()
                meter.update(len(part))

        for start in range(0, len(todo), COMMIT_ROWS):
            with ws.write_lock("features"):   # vacuum waits: this commit's files are not referenced yet
                ws.lance.append(name, batches(todo[start:start + COMMIT_ROWS]), schema)
            faults.point("fold.after_append")
        meter.close()
        latest = ws.lance.version(name)
        if latest is None:   # an empty feature table: an empty copy
            ws.lance.ensure_table(name, schema)
            latest = ws.lance.version(name)
        row = {"feature_set_id": fs.feature_set_id, "low_dim": int(low_dim), "lance_table": name,
               "lance_version": int(latest), "source_version": int(version),
               "n_rows": int(ws.lance.dataset(name, latest).count_rows())}
        record_folded_copy(ws, row)
        return row


def refresh_folded_copies(ws, feature_set_id: str, progress: bool = True) -> list[dict]:
    """Extend every folded copy of a feature set to its latest version (called when featurize finishes)."""
    from ..storage.features import get_feature_set
    from ..storage.folded_copies import folded_copies

    copies = folded_copies(ws, feature_set_id)
    if not copies:
        return []
    fs = get_feature_set(ws, feature_set_id)
    return [sync_folded(ws, fs, c["low_dim"], progress=progress) for c in copies]
