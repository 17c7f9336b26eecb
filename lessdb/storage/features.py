"""Gradient feature vectors in LanceDB: one table per feature set, `features_<feature_set_id>`.

Columns: key ("<role>/<epoch>/<example_id>", unenforced primary key), example_id, epoch (int32), role
("candidate" | "validation"), vector (fixed_size_list<float32 | float16>[dim], L2-normalised), norm (float32:
the L2 norm of the sketched vector before normalisation, so vector × norm is the raw sketch that the
unnormalised-gradient ablation scores with; null where the writer had none). Tables created before the norm
column existed lack it: they are still read and written as they are (see `has_norm_column`).
Writes are `merge_insert` on `key` inserting only absent keys, so a batch re-sent after a crash, or the same
example written by two processes, is stored once (LanceDB keeps concurrent merge_inserts duplicate-free only
with the primary key set; see notes/lance-duckdb-facts.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa

from ..choices import FEATURE_BATCH_ROWS
from ..errors import LessdbError
from . import meta_features
from .sql_text import sql_in_list

ROLES = ("candidate", "validation")
STORED_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}
_PK_METADATA = b"lance-schema:unenforced-primary-key:position"


@dataclass(frozen=True)
class FeatureSetInfo:
    feature_set_id: str
    run_id: str
    grad_kind: str
    bias_correction: bool
    sketch_kind: str
    sketch_seed: int
    sketch_nnz: int | None
    dim: int
    dtype: str
    compute_dtype: str
    n_params: int
    lance_table: str
    max_seq_length: int
    tokenizer_id: str
    module_order: list
    model_sha256: str
    params: dict

    @property
    def sketch(self) -> dict:
        """The sketch identity as selections record it."""
        return {"kind": self.sketch_kind, "seed": self.sketch_seed, "dim": self.dim, "dtype": self.dtype,
                "n_params": self.n_params, "nnz": self.sketch_nnz}

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def table_name(feature_set_id: str) -> str:
    return f"features_{feature_set_id}"


def feature_schema(dim: int, dtype: str, with_norm: bool = True) -> pa.Schema:
    """The schema of a new feature table (`with_norm=False`: the layout of tables made before the norm column)."""
    if dtype not in STORED_DTYPES:
        raise LessdbError(f"stored dtype {dtype!r} is not one of {', '.join(STORED_DTYPES)}")
    fields = [
        pa.field("key", pa.string(), nullable=False),
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("epoch", pa.int32(), nullable=False),
        pa.field("role", pa.string(), nullable=False),
        pa.field("vector", pa.list_(STORED_DTYPES[dtype], dim), nullable=False),
    ]
    if with_norm:
        # nullable: writers that only have unit vectors (benchmarks, hand-built stores) leave it empty, and the
        # unnormalised method refuses such rows instead of scoring them with a made-up norm
        fields.append(pa.field("norm", pa.float32(), nullable=True))
    return pa.schema(fields)


def feature_key(role: str, epoch: int, example_id: str) -> str:
    return f"{role}/{int(epoch)}/{example_id}"


def _info_from_row(row: dict) -> FeatureSetInfo:
    fields = FeatureSetInfo.__dataclass_fields__
    return FeatureSetInfo(**{k: row[k] for k in fields})


def get_feature_set(ws, feature_set_id: str) -> FeatureSetInfo:
    row = meta_features.feature_set_row(ws, feature_set_id)
    if row is None:
        raise LessdbError(f"no feature set {feature_set_id!r} in this workspace (see `lessdb feature-sets`)")
    return _info_from_row(row)


def list_feature_sets(ws, run_id: str | None = None) -> list[dict]:
    """Feature sets with, per "<role>/<epoch>", the vectors stored (counted in the table, not taken from job
    progress, which a kill between a Lance write and its DuckDB record leaves behind), the examples excluded,
    and the jobs' status (`interrupted`: marked running, but no live process owns it)."""
    from .. import owners

    rows = meta_features.feature_set_rows(ws, run_id)
    for row in rows:
        fsid = row["feature_set_id"]
        stored = stored_counts(ws, row["lance_table"])
        excluded = meta_features.exclusion_counts(ws, fsid)
        status: dict[tuple[str, int], set] = {}
        for job in meta_features.job_rows(ws, fsid):
            status.setdefault((job["role"], int(job["epoch"])), set()).add(
                owners.live_status(ws, owners.FEATURE_JOB, job["job_id"], job["status"]))
        keys = sorted(set(stored) | set(excluded) | set(status))
        row["jobs"] = {f"{role}/{epoch}": {"done": stored.get((role, epoch), 0),
                                           "excluded": excluded.get((role, epoch), 0),
                                           "status": _overall(status.get((role, epoch), set()))}
                       for role, epoch in keys}
    return rows


def _overall(statuses: set) -> str:
    for status in ("running", "interrupted", "failed"):
        if status in statuses:
            return status
    return "complete" if statuses else "no job"


def stored_counts(ws, lance_table: str, version: int | None = None) -> dict[tuple[str, int], int]:
    """(role, epoch) -> rows stored in a feature table (reads two small columns)."""
    if not ws.lance.has_table(lance_table):
        return {}
    table = ws.lance.dataset(lance_table, version).to_table(columns=["role", "epoch"])
    if table.num_rows == 0:
        return {}
    grouped = table.group_by(["role", "epoch"]).aggregate([([], "count_all")])
    return {(r, int(e)): int(n) for r, e, n in zip(grouped.column("role").to_pylist(), grouped.column("epoch").to_pylist(),
                                                  grouped.column("count_all").to_pylist())}


def ensure_feature_table(ws, info: FeatureSetInfo):
    """Create the table with its primary key, atomically with respect to other lessdb processes
    (a process killed between create and set_unenforced_primary_key is repaired by the next one)."""
    schema = feature_schema(info.dim, info.dtype)
    with ws.write_lock("features"), ws.lance.writing():
        db = ws.lance.db
        if info.lance_table in db.list_tables().tables:
            table = db.open_table(info.lance_table)
        else:
            table = db.create_table(info.lance_table, schema=schema)
        if _PK_METADATA not in (table.schema.field("key").metadata or {}):
            table.set_unenforced_primary_key("key")
    return table


def has_norm_column(ws, info: FeatureSetInfo) -> bool:
    """Whether the feature table stores raw norms (True for a table not created yet: it will)."""
    schema = ws.lance.schema(info.lance_table)
    return schema is None or "norm" in schema.names


def write_features(ws, info: FeatureSetInfo, epoch: int, role: str, example_ids: list[str],
                   vectors: np.ndarray, norms: np.ndarray | None = None) -> tuple[int, int, int]:
    """Insert the rows whose key is absent. Returns (table version, rows inserted, vector bytes sent).

    `norms`: each row's norm before L2 normalisation (None: stored as null). A table made before the norm
    column existed keeps its layout, so the norms are not stored there."""
    schema = feature_schema(info.dim, info.dtype, with_norm=has_norm_column(ws, info))
    table, nbytes = feature_rows(info.dim, info.dtype, schema, epoch, role, example_ids, vectors, norms)
    version, inserted = ws.lance.insert_missing(info.lance_table, table, schema)
    return version, inserted, nbytes


def feature_rows(dim: int, dtype: str, schema: pa.Schema, epoch: int, role: str, example_ids: list[str],
                 vectors: np.ndarray, norms: np.ndarray | None = None) -> tuple[pa.Table, int]:
    """The Arrow rows of one batch in the table's `schema` (with or without the norm column) and the vector
    bytes: shared by the local insert-if-absent and the distributed fragment writers (lessdb.scale)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float16 if dtype == "float16" else np.float32)
    if vectors.shape != (len(example_ids), dim):
        raise ValueError(f"vectors {vectors.shape} do not match {len(example_ids)} ids × dim {dim}")
    if norms is not None:
        norms = np.asarray(norms, dtype=np.float32).reshape(-1)
        if len(norms) != len(example_ids):
            raise ValueError(f"{len(norms)} norms do not match {len(example_ids)} ids")
    columns = {
        "key": pa.array([feature_key(role, epoch, e) for e in example_ids], pa.string()),
        "example_id": pa.array(example_ids, pa.string()),
        "epoch": pa.array([int(epoch)] * len(example_ids), pa.int32()),
        "role": pa.array([role] * len(example_ids), pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
    }
    if "norm" in schema.names:
        columns["norm"] = pa.nulls(len(example_ids), pa.float32()) if norms is None else pa.array(norms, pa.float32())
    return pa.table(columns, schema=schema), vectors.nbytes


def _filter(epoch: int, role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    return f"epoch = {int(epoch)} AND role = '{role}'"


def present_example_ids(ws, feature_set_id: str, epoch: int, role: str = "candidate") -> set[str]:
    """Example ids already stored for (epoch, role), read at the latest version."""
    name = table_name(feature_set_id)
    if not ws.lance.has_table(name):
        return set()
    ds = ws.lance.dataset(name)
    col = ds.to_table(columns=["example_id"], filter=_filter(epoch, role)).column("example_id")
    return set(col.to_pylist())


def features_version(ws, feature_set_id: str) -> int:
    name = get_feature_set(ws, feature_set_id).lance_table
    version = ws.lance.version(name)
    if version is None:
        raise LessdbError(f"feature set {feature_set_id} has no feature table yet; run `lessdb featurize`")
    return version


def vector_view(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """[n, dim] view of a fixed_size_list vector column in its stored dtype (zero-copy where Arrow allows;
    `flatten` honours a sliced column's offset, `.values` would not)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


def iter_feature_batches(ws, feature_set_id: str, epoch: int, role: str = "candidate", version: int | None = None,
                         ids=None, batch_rows: int = FEATURE_BATCH_ROWS, info: FeatureSetInfo | None = None,
                         raw: bool = False) -> Iterator[tuple[list[str], np.ndarray]]:
    """Stream (example ids, float32 [n, dim]) of one checkpoint's features, optionally only `ids`, read at
    `version` (None: latest). Memory is bounded by `batch_rows`. `info`: the feature set, if already read.
    `raw`: the sketches before L2 normalisation (unit vector × stored norm); refused where norms are missing."""
    info = info or get_feature_set(ws, feature_set_id)
    if not ws.lance.has_table(info.lance_table):
        return
    ds = ws.lance.dataset(info.lance_table, version)
    if raw and "norm" not in ds.schema.names:
        raise LessdbError(f"feature set {feature_set_id} stores no gradient norms (made before lessdb stored "
                          "them); featurize the run again into a new feature set")
    filt = _filter(epoch, role)
    wanted = None
    if ids is not None:
        wanted = set(ids)
        if not wanted:
            return
        if len(wanted) <= 1000:
            filt += " AND example_id IN " + sql_in_list(sorted(wanted))
    columns = ["example_id", "vector"] + (["norm"] if raw else [])
    for batch in ds.to_batches(columns=columns, filter=filt, batch_size=batch_rows):
        if batch.num_rows == 0:
            continue
        got = batch.column("example_id").to_pylist()
        vecs = vector_view(batch.column("vector"), info.dim).astype(np.float32, copy=False)
        if raw:
            norms = batch.column("norm")
            if norms.null_count:
                raise LessdbError(f"feature set {feature_set_id}: {norms.null_count} {role} rows of checkpoint "
                                  f"{epoch} have no stored norm")
            vecs = vecs * norms.to_numpy(zero_copy_only=False).astype(np.float32)[:, None]
        if wanted is not None and len(wanted) > 1000:
            keep = [i for i, e in enumerate(got) if e in wanted]
            if not keep:
                continue
            got = [got[i] for i in keep]
            vecs = vecs[keep]
        yield got, vecs
