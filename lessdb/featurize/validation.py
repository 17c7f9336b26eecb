"""Validation features: plain-gradient ("sgd") features of task examples through the candidates' code path
(compute.py), cached in the feature table with role "validation" under the content hash of the messages.

One filler per (feature set, checkpoint) at a time: the fill holds an owner lock (lessdb/owners.py), so two
concurrent selects never compute the same vectors; the job row (one per feature set and checkpoint, shared by
every task) counts what is stored, recounted from the table, and a fill killed mid-way is settled by the next
select (`settle_validation_jobs`).
"""
from __future__ import annotations

import numpy as np

from .. import owners
from ..conversation import content_hash
from ..errors import LessdbError
from ..progress import Progress
from ..storage import features as fstore
from ..storage import meta_features
from ..models.tokenization import check_truncation
from .adam import GradTransform
from .engine import FeatureEngine
from .compute import FeatureWriter, check_same_model, compute_features, load_checkpoint, sketch_for


def validation_key(messages: list[dict], set_max_len: int, max_len: int | None = None,
                   truncation: str = "right") -> str:
    """Id under which a validation example's features are cached: the content hash of its messages, plus the
    token window when it differs from the feature set's (the same example in another window is another vector)."""
    max_len = max_len or set_max_len
    window = "" if (max_len == set_max_len and truncation == "right") else f"@{max_len}{truncation[0]}"
    return content_hash(messages) + window


def _validation_cache(ws, feature_set_id: str, epoch: int, examples: list[tuple[str, list[dict]]],
                      max_seq_length: int | None, truncation: str):
    """Reads only: (info, caller id -> cache key, cache key -> messages, cached vectors, keys still to compute)."""
    info = fstore.get_feature_set(ws, feature_set_id)
    check_truncation(truncation)   # before any model is loaded
    max_len = max_seq_length or info.max_seq_length
    by_content: dict[str, list[dict]] = {}
    caller_to_content = {}
    for example_id, messages in examples:
        cid = validation_key(messages, info.max_seq_length, max_len, truncation)
        caller_to_content[example_id] = cid
        by_content.setdefault(cid, messages)
    cached: dict[str, np.ndarray] = {}
    for ids, vecs in fstore.iter_feature_batches(ws, feature_set_id, epoch, "validation", ids=list(by_content),
                                                 info=info):
        cached.update(zip(ids, vecs))
    skipped = meta_features.excluded_ids(ws, feature_set_id, "validation", epoch)
    todo = [c for c in sorted(by_content) if c not in cached and c not in skipped]
    return info, caller_to_content, by_content, cached, todo


def validation_missing(ws, feature_set_id: str, epoch: int, examples: list[tuple[str, list[dict]]],
                       max_seq_length: int | None = None, truncation: str = "right") -> bool:
    """Whether `validation_features` would compute anything (reads only: the caller may batch these reads)."""
    return bool(_validation_cache(ws, feature_set_id, epoch, examples, max_seq_length, truncation)[-1])


def validation_features(ws, feature_set_id: str, epoch: int, examples: list[tuple[str, list[dict]]],
                        device: str = "auto", batch_size: int = 8, progress: bool = False,
                        max_seq_length: int | None = None, truncation: str = "right") -> dict[str, np.ndarray]:
    """Plain-gradient ("sgd") features of validation examples at checkpoint `epoch`, with the feature set's
    sketch, max_seq_length and precision: {example_id: float32 [dim]}.

    Cached in the feature table with role="validation" under the content hash of the messages (so a changed
    example under a reused id is recomputed, and equal examples of different tasks share one vector).
    Examples with no completion token after truncation are omitted from the result (and recorded)."""
    info, caller_to_content, by_content, cached, todo = _validation_cache(ws, feature_set_id, epoch, examples,
                                                                          max_seq_length, truncation)
    if todo:
        # one filler per (feature set, checkpoint): a concurrent select waits here, then reads what was stored
        with owners.owning(ws, owners.VALIDATION, f"{feature_set_id}-{int(epoch)}", wait=True,
                           what=f"validation features of {feature_set_id} checkpoint {epoch}"):
            info, caller_to_content, by_content, cached, todo = _validation_cache(
                ws, feature_set_id, epoch, examples, max_seq_length, truncation)
            if todo:
                _fill_validation(ws, info, int(epoch), by_content, todo, cached, device, batch_size, progress,
                                 max_seq_length or info.max_seq_length, truncation)
    return {eid: cached[cid] for eid, cid in caller_to_content.items() if cid in cached}


def _fill_validation(ws, info, epoch: int, by_content: dict, todo: list[str], cached: dict, device: str,
                     batch_size: int, progress: bool, max_len: int, truncation: str) -> None:
    """Compute the `todo` validation features, store them, add them to `cached`. The job row (one per feature
    set and checkpoint, shared by every task) counts what is stored, recounted from the table."""
    from ..models.loading import resolve_device
    from ..storage import meta_runs

    ckpt = {c.epoch: c for c in meta_runs.list_checkpoints(ws, info.run_id)}.get(epoch)
    if ckpt is None:
        raise LessdbError(f"run {info.run_id} has no checkpoint for epoch {epoch}")
    dev = resolve_device(device)
    loaded = load_checkpoint(ws, info.run_id, epoch, dev, info.compute_dtype)
    check_same_model(info, loaded)
    transform = GradTransform("sgd", loaded.params)
    engine = FeatureEngine(loaded.model, loaded.params, transform, sketch_for(info, loaded, dev), loaded.autocast)
    job_id = f"{info.feature_set_id}/validation/{epoch}/0of1"

    before = _validation_counts(ws, info.feature_set_id, epoch)
    meta_features.start_job(ws, {"job_id": job_id, "feature_set_id": info.feature_set_id, "role": "validation",
                                 "epoch": epoch, "shard_index": 0, "shard_count": 1,
                                 "adapter_sha256": ckpt.adapter_sha256, "optimizer_sha256": ckpt.optimizer_sha256,
                                 "optimizer_step": ckpt.optimizer_step,
                                 **before, "n_total": before["n_total"] + len(todo)})
    writer = FeatureWriter(ws, info, epoch, "validation", job_id, commit_rows=1 << 30, commit_seconds=1e9)
    prog = Progress(f"validation features epoch {epoch}", total=len(todo), enabled=progress)
    compute_features(engine, loaded.base.tokenizer, [(c, by_content[c]) for c in todo], max_len,
             batch_size, writer, prog, truncation)
    got_ids, got_vecs = list(writer.ids), list(writer.vecs)
    writer.flush()
    meta_features.finish_job(ws, job_id, counts=_validation_counts(ws, info.feature_set_id, epoch))
    if got_ids:
        cached.update(zip(got_ids, np.concatenate(got_vecs).astype(np.float32)))
        if info.dtype == "float16":  # return exactly what is stored (and what a later call reads back)
            for c in got_ids:
                cached[c] = cached[c].astype(np.float16).astype(np.float32)



def _validation_counts(ws, feature_set_id: str, epoch: int) -> dict:
    """The validation job's counts, recounted from the stored rows and recorded exclusions of one checkpoint."""
    done = len(fstore.present_example_ids(ws, feature_set_id, epoch, "validation"))
    excluded = len(meta_features.excluded_ids(ws, feature_set_id, "validation", epoch))
    return {"n_done": done, "n_excluded": excluded, "n_total": done + excluded}


def settle_validation_jobs(ws, feature_set_id: str, epochs: list[int]) -> None:
    """A validation fill killed after storing its vectors leaves its job row `running` with stale counts, and
    the next select finds the cache full and fills nothing; it settles the row here (recount, complete)."""
    for job in meta_features.job_rows(ws, feature_set_id):
        epoch = int(job["epoch"])
        if job["role"] != "validation" or epoch not in epochs or job["status"] == "complete":
            continue
        ident = f"{feature_set_id}-{epoch}"
        if owners.is_alive(ws, owners.VALIDATION, ident):
            continue   # a live fill: it records its own counts
        with owners.owning(ws, owners.VALIDATION, ident, wait=True):
            meta_features.finish_job(ws, job["job_id"], counts=_validation_counts(ws, feature_set_id, epoch))
