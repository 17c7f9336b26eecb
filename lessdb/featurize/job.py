"""`featurize_run`: gradient features of a warmup run's candidates, as resumable, shardable jobs;
`validation_features` (validation.py): plain-gradient features of task examples through the same code path.

A job is one (feature set, role, checkpoint, shard). Its example list is recomputed on every run — the
shard's candidates (pool + optional SQL filter, split by a hash of the example id) minus those already in
the feature table or recorded as excluded — so a rerun after a kill, or after new candidates were
ingested, computes exactly the missing ones. Vectors are committed every `commit_rows` examples (or
`commit_seconds`) with an insert-if-absent on the primary key, so a batch re-sent after a crash, or
computed by two processes at once, is stored once.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field

from .. import __version__, owners
from ..choices import DEFAULT_STORED_DTYPE
from ..progress import Progress
from ..storage import features as fstore
from ..storage import meta_features
from ..storage.meta_leases import lease_owner
from .compute import (CheckpointModel, FeatureWriter, compute_features, engine_for, load_checkpoint,
                      sketch_for)
from .config import FeaturizeConfig
from .planning import job_row, plan_run, todo_ids, unit_rows
from .sketch import make_sketch

# 2: tables store each vector's raw norm (the `norm` column). Part of the feature set id, so featurizing
# again after the change makes a new feature set with norms instead of appending to a table without them.
FORMAT_VERSION = 2


@dataclass
class FeaturizeSummary:
    feature_set_id: str
    run_id: str
    lance_table: str
    epochs: list[int]
    shard: str
    examples: int = 0          # vectors computed and written by this call
    excluded: int = 0          # newly excluded by this call (no completion token / zero gradient)
    already_present: int = 0   # skipped: stored (or excluded) by an earlier run
    seconds: float = 0.0
    bytes_written: int = 0
    lance_version: int | None = None
    jobs: list[dict] = field(default_factory=list)
    engine: str = "local"                                    # local | ray
    timing: dict = field(default_factory=dict)               # engine-specific breakdown (ray: plan, commits, …)

    @property
    def examples_per_s(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "examples_per_s": round(self.examples_per_s, 3)}


def _identity(run: dict, loaded: CheckpointModel, tokenizer_id: str, max_len: int, grad_kind: str,
              bias_correction: bool, compute: str, dtype: str, sketch_identity: dict) -> dict:
    return {"format": FORMAT_VERSION, "run_id": run["run_id"], "model_sha256": loaded.base.sha256,
            "tokenizer_id": tokenizer_id, "max_seq_length": max_len, "grad_kind": grad_kind,
            "bias_correction": bool(bias_correction) if grad_kind == "adam" else False,
            "compute_dtype": compute, "dtype": dtype, "sketch": sketch_identity,
            "loss": "mean CE over completion tokens per example",
            "module_order": [[p.name, list(p.shape)] for p in loaded.params]}


def ensure_feature_set(ws, run: dict, loaded: CheckpointModel, cfg: FeaturizeConfig, max_len: int, compute: str,
                       device: str) -> fstore.FeatureSetInfo:
    """The run's feature set under these settings (its id hashes them), created with its table on first use;
    both engines featurize into it."""
    from ..models.tokenization import tokenizer_id

    sketch = make_sketch(cfg.sketch, [p.numel for p in loaded.params], cfg.dim, cfg.seed, "cpu", cfg.sketch_nnz)

    def identity(dtype: str) -> tuple[dict, str]:   # the stored dtype is part of the feature set's identity
        ident = _identity(run, loaded, tokenizer_id(loaded.base.tokenizer), max_len, cfg.grad_kind,
                          cfg.bias_correction, compute, dtype, sketch.identity())
        return ident, hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    dtype = cfg.dtype or _stored_dtype(ws, lambda d: identity(d)[1])
    ident, fsid = identity(dtype)
    sk = ident["sketch"]
    row = {"feature_set_id": fsid, "run_id": run["run_id"], "lance_table": fstore.table_name(fsid),
           "grad_kind": cfg.grad_kind, "bias_correction": ident["bias_correction"], "sketch_kind": sk["kind"],
           "sketch_seed": sk["seed"], "sketch_nnz": sk.get("nnz"), "n_params": sk["n_params"], "dim": sk["dim"],
           "dtype": dtype, "compute_dtype": compute, "max_seq_length": max_len,
           "tokenizer_id": ident["tokenizer_id"], "module_order": ident["module_order"],
           "model_sha256": ident["model_sha256"], "params": ident, "lessdb_version": __version__}
    meta_features.insert_feature_set(ws, row)
    info = fstore.get_feature_set(ws, fsid)
    fstore.ensure_feature_table(ws, info)
    return info


def _stored_dtype(ws, feature_set_id_for) -> str:
    """The stored dtype when --dtype is not given: float16 (DEFAULT_STORED_DTYPE), unless the run already has a
    float32 feature set with every other setting equal and no float16 one (made before float16 became the
    default): featurizing again then extends that set instead of recomputing everything into a new one."""
    other = "float32" if DEFAULT_STORED_DTYPE == "float16" else "float16"
    if meta_features.feature_set_row(ws, feature_set_id_for(DEFAULT_STORED_DTYPE)) is None and \
            meta_features.feature_set_row(ws, feature_set_id_for(other)) is not None:
        return other
    return DEFAULT_STORED_DTYPE


def _shard_counts(ws, info, epoch: int, mine: list[str]) -> dict:
    """A job's n_done / n_excluded as the stored rows and recorded exclusions say."""
    present = fstore.present_example_ids(ws, info.feature_set_id, epoch, "candidate")
    skipped = meta_features.excluded_ids(ws, info.feature_set_id, "candidate", epoch)
    return {"n_done": sum(1 for e in mine if e in present), "n_excluded": sum(1 for e in mine if e in skipped)}


def featurize_run(ws, cfg: FeaturizeConfig) -> FeaturizeSummary:
    """Compute and append the gradient features of the run's candidates (see module docstring)."""
    from ..storage.cleanup import clean_up_after_kills
    from ..storage.candidates import read_candidates

    t_start = time.monotonic()
    clean_up_after_kills(ws)   # every write command first clears what killed processes left
    plan = plan_run(ws, cfg)
    device, i, n = plan.device, *cfg.shard
    loaded = load_checkpoint(ws, cfg.run_id, plan.epochs[0], device, plan.compute)
    info = ensure_feature_set(ws, plan.run, loaded, cfg, plan.max_len, plan.compute, device)
    from ..storage.meta_integrity import require_versions_present

    require_versions_present(ws, info.lance_table)   # a lost newest manifest: appending would reuse its number
    summary = FeaturizeSummary(info.feature_set_id, cfg.run_id, info.lance_table, plan.epochs, f"{i}/{n}")
    sketch = None
    for epoch in plan.epochs:
        job = job_row(info, cfg, plan, epoch)
        job_id = job["job_id"]
        # one live process per job: a second one waits, then finds the work done (the lock dies with its owner)
        with owners.owning(ws, owners.FEATURE_JOB, job_id, wait=True, what=f"featurize job {job_id}"):
            todo = todo_ids(ws, info, epoch, plan.mine)
            summary.already_present += len(plan.mine) - len(todo)
            # counts from the stored rows; the driver lease: refused while another driver (e.g. Ray) works here
            meta_features.start_job(ws, {**job, **_shard_counts(ws, info, epoch, plan.mine)}, owner=lease_owner(),
                                    engine="local")
            if todo:
                if loaded is None:
                    loaded = load_checkpoint(ws, cfg.run_id, epoch, device, plan.compute)
                sketch = sketch or sketch_for(info, loaded, device)
                engine = engine_for(info, loaded, plan.ckpts[epoch], device, sketch)
                writer = FeatureWriter(ws, info, epoch, "candidate", job_id, cfg.commit_rows, cfg.commit_seconds)
                progress = Progress(f"featurize epoch {epoch} shard {i}/{n}", total=len(todo),
                                    enabled=None if cfg.progress else False)  # None: on unless LESSDB_PROGRESS=0
                chunk = unit_rows(cfg)
                for start in range(0, len(todo), chunk):
                    ids = todo[start:start + chunk]
                    table = read_candidates(ws, ids, pool=plan.pool, version=plan.cand_version,
                                            columns=["id", "messages"])
                    items = list(zip(table.column("id").to_pylist(), table.column("messages").to_pylist()))
                    compute_features(engine, loaded.base.tokenizer, items, plan.max_len, cfg.batch_size, writer, progress)
                writer.flush()
                progress.close()
                summary.examples += writer.written
                summary.excluded += writer.excluded
                summary.bytes_written += writer.bytes
                summary.lance_version = writer.version or summary.lance_version
            # recount: another job over the same examples (e.g. another --shard split) may have stored some
            meta_features.finish_job(ws, job_id, counts=_shard_counts(ws, info, epoch, plan.mine))
        summary.jobs.append({"job_id": job_id, "epoch": epoch, "todo": len(todo), "shard_examples": len(plan.mine)})
        loaded = None  # the next epoch has its own adapter
    from .folding import refresh_folded_copies
    refresh_folded_copies(ws, info.feature_set_id, progress=cfg.progress)   # folded copies stay beside the vectors
    summary.seconds = time.monotonic() - t_start
    if summary.lance_version is None:
        summary.lance_version = ws.lance.version(info.lance_table)
    return summary
