"""Step 2 of LESS: per-example LoRA gradient features (Adam/SGD/sign), sketched, L2-normalised, stored.

Entry points: `featurize_run(ws, FeaturizeConfig)` for a run's candidates (resumable, shardable jobs) and
`validation_features(ws, feature_set_id, epoch, examples)` for task examples (plain gradients, cached).
The math lives in small modules: per_example_grads (one batched backward → exact per-example gradients),
adam (Γ), sketch (dense Rademacher, CountSketch / sparse sign), engine (fused per module).
"""
from .job import (FeaturizeConfig, FeaturizeSummary, featurize_run, parse_shard, shard_of, validation_features,
                  validation_key)

__all__ = ["FeaturizeConfig", "FeaturizeSummary", "featurize_run", "validation_features", "parse_shard", "shard_of", "validation_key"]
