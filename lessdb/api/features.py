"""Stored features of a run's candidates: `featurize` (LESS step 2: gradient features), `embed` (RDS / RDS+
hidden-state embeddings), `fold` (a feature set's low-d copy for `select --prefilter`), `feature-sets`."""
from __future__ import annotations

from .base import Record, command, config_fields, make_config


class FeaturesAPI:
    @command(lambda: config_fields("FeaturizeConfig")() + config_fields("RayOptions", prefix="ray_")())
    def featurize(self, run_id: str | None = None, *, ray=None, config=None, **settings):
        """`lessdb featurize`: gradient features of a warmup run's candidates -> FeaturizeSummary.

        `settings`: FeaturizeConfig fields (dim, sketch, grad_kind, checkpoints=[1, 2] or "1,2", shard=(i, n) or
        "i/n", ...), over `config` (a whole FeaturizeConfig) when one is given; `engine="ray"` computes on Ray
        actors, run as `ray` (a RayOptions) or the `ray_` + RayOptions fields say (ray_workers=8, ...)."""
        from ..config import FeaturizeConfig, RayOptions

        ray_settings = {name[len("ray_"):]: settings.pop(name) for name in list(settings) if name.startswith("ray_")}
        config = make_config(FeaturizeConfig, settings, base=config, run_id=run_id)
        config.validate()
        if config.engine == "ray":
            from ..featurize.ray_engine import featurize_ray

            return featurize_ray(self, config, ray or make_config(RayOptions, ray_settings))
        from ..featurize.job import featurize_run

        return featurize_run(self, config)

    @command(config_fields("EmbedConfig"))
    def embed(self, run_id: str | None = None, *, config=None, **settings) -> Record:
        """`lessdb embed`: RDS (pooling="last") or RDS+ (pooling="mean") embeddings of a run's pool, stored once
        per (model, pooling, window) for every later rds/rds+ selection; resumable and shardable. `settings`:
        EmbedConfig fields -> the job's summary (feature_set_id, lance_table, shard, examples, ...)."""
        from dataclasses import asdict

        from ..config import EmbedConfig
        from ..featurize.embeddings import embed_run

        config = make_config(EmbedConfig, settings, base=config, run_id=run_id)
        config.validate()
        return Record(asdict(embed_run(self, config.run_id, config.pooling, config.max_seq_length, config.shard,
                                       config.where, config.device, config.batch_size, progress=config.progress)))

    @command()
    def fold(self, feature_set: str, low_dim: int, *, progress: bool = True) -> Record:
        """`lessdb fold`: make or extend a feature set's folded copy at d = `low_dim` (what `select
        --prefilter` scores first); resumable, exactly once -> its `folded_copies` row."""
        from ..featurize.folding import sync_folded
        from ..storage.features import get_feature_set

        return Record(sync_folded(self, get_feature_set(self, feature_set), int(low_dim), progress=progress))

    @command()
    def feature_sets(self, run_id: str | None = None) -> list[dict]:
        """`lessdb feature-sets`: feature sets with their sketch, dimension, dtype and vectors per checkpoint."""
        from ..storage.features import list_feature_sets

        return list_feature_sets(self, run_id)
