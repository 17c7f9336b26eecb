"""Step 2 of LESS: per-example LoRA gradient features (Adam/SGD/sign), sketched, L2-normalised, stored.

Entry points: `featurize_run(ws, FeaturizeConfig)` for a run's candidates (resumable, shardable jobs) and
`validation_features(ws, feature_set_id, epoch, examples)` for task examples (plain gradients, cached).
The math lives in small modules: per_example_grads (one batched backward → exact per-example gradients),
adam (Γ), sketch (dense Rademacher, CountSketch / sparse sign), engine (fused per module).
`config` (the settings) is light; the rest (torch) is imported on first use, so `lessdb --help` stays fast.
"""
from __future__ import annotations

from ..lazy import lazy_exports
from .config import FeaturizeConfig

_LAZY = {name: "job" for name in ("FeaturizeSummary", "featurize_run", "parse_shard", "shard_of",
                                  "validation_features", "validation_key")}
__all__ = ["FeaturizeConfig", *_LAZY]

__getattr__ = lazy_exports(__name__, {name: "." + module for name, module in _LAZY.items()})
