"""Planning a featurize call from the catalogue, shared by every engine (local `featurize_run`, Ray
`ray_engine.featurize_ray`): the run and its checkpoints, this shard's candidate ids, the resume rule
(ids − stored − excluded), the job row, and the read chunk that fixes how batches are formed."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..errors import LessdbError
from ..settings import parse_setting
from ..storage import features as fstore
from ..storage import meta_features
from .config import FeaturizeConfig


def unit_rows(cfg: FeaturizeConfig) -> int:
    """Examples read and encoded together; batches are formed within such a chunk (length-sorted), so an engine
    that hands out work units of this size computes exactly the local engine's batches."""
    return max(cfg.commit_rows, cfg.batch_size * 16)


@dataclass
class RunPlan:
    """What both engines plan from the catalogue before computing: the run, its checkpoints, this shard's ids."""
    run: dict
    ckpts: dict
    epochs: list[int]
    device: str
    compute: str
    max_len: int
    pool: str | None
    cand_version: int
    mine: list[str]


def plan_run(ws, cfg: FeaturizeConfig, device: str | None = None) -> RunPlan:
    """`device`: where the vectors will be computed (default: cfg.device resolved here)."""
    from ..models.loading import resolve_device
    from ..storage import meta_runs
    from ..storage.candidates import candidates_version, select_candidate_ids
    from .precision import resolve_compute_dtype
    from ..runs.config import run_max_seq_length

    cfg.validate()
    if cfg.where is not None:   # before any lookup or model load: a bad filter is refused first
        from ..storage.user_filter import check_filter
        check_filter(cfg.where)
    run = meta_runs.get_run(ws, cfg.run_id)
    ckpts = {c.epoch: c for c in meta_runs.list_checkpoints(ws, cfg.run_id)}
    if not ckpts:
        raise LessdbError(f"run {cfg.run_id} has no checkpoints yet; finish `lessdb warmup` first")
    epochs = sorted(ckpts) if cfg.checkpoints is None else sorted(set(int(e) for e in cfg.checkpoints))
    missing = [e for e in epochs if e not in ckpts]
    if missing:
        raise LessdbError(f"run {cfg.run_id} has no checkpoint for epoch(s) {missing}; it has {sorted(ckpts)}")
    device = device or resolve_device(cfg.device)
    compute = resolve_compute_dtype(cfg.compute_dtype, device)
    max_len = cfg.max_seq_length or run_max_seq_length(run)
    pool = run.get("pool")
    cand_version = candidates_version(ws)
    all_ids = select_candidate_ids(ws, pool, cfg.where, version=cand_version)
    if cfg.where is not None and not all_ids:   # else an empty feature set with `complete` jobs is recorded
        from ..settings import SettingError
        from .config import FeaturizeConfig

        raise SettingError(FeaturizeConfig, [("where", f"{cfg.where!r} matches no candidate of pool {pool!r}: "
                                                       "nothing to featurize")])
    i, n = cfg.shard
    return RunPlan(run, ckpts, epochs, device, compute, max_len, pool, cand_version,
                   [e for e in all_ids if shard_of(e, n) == i])


def todo_ids(ws, info: fstore.FeatureSetInfo, epoch: int, mine: list[str]) -> list[str]:
    """The resume rule of every engine: this shard's ids minus those stored (latest version) or excluded."""
    present = fstore.present_example_ids(ws, info.feature_set_id, epoch, "candidate")
    skipped = meta_features.excluded_ids(ws, info.feature_set_id, "candidate", epoch)
    return [e for e in mine if e not in present and e not in skipped]


def job_row(info: fstore.FeatureSetInfo, cfg: FeaturizeConfig, plan: RunPlan, epoch: int) -> dict:
    i, n = cfg.shard
    ckpt = plan.ckpts[epoch]
    return {"job_id": f"{info.feature_set_id}/candidate/{epoch}/{i}of{n}", "feature_set_id": info.feature_set_id,
            "role": "candidate", "epoch": epoch, "shard_index": i, "shard_count": n, "where_sql": cfg.where,
            "candidates_version": plan.cand_version, "adapter_sha256": ckpt.adapter_sha256,
            "optimizer_sha256": ckpt.optimizer_sha256, "optimizer_step": ckpt.optimizer_step,
            "n_total": len(plan.mine)}


# -- shards -------------------------------------------------------------------------------------------------
def shard_of(example_id: str, n: int) -> int:
    """Deterministic shard of an example: sha256 of its id, mod n (independent of order and pool size)."""
    return int(hashlib.sha256(example_id.encode("utf-8")).hexdigest()[:15], 16) % n


def parse_shard(text: str | None) -> tuple[int, int]:
    """`--shard i/n` -> (i, n); none given: (0, 1), the whole pool (the one parser: `settings.parse_setting`)."""
    return parse_setting(FeaturizeConfig, "shard", text or "")
