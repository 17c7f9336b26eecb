"""Step 2 of LESS: per-example LoRA gradient features (Adam/SGD/sign), sketched, L2-normalised, stored.

Entry points: `featurize_run(ws, FeaturizeConfig)` for a run's candidates (resumable, shardable jobs) and
`validation_features(ws, feature_set_id, epoch, examples)` for task examples (plain gradients, cached).
- `planning` (the run, its checkpoints, this shard's ids, the resume rule) and `compute` (a checkpoint's model
  and engine, encode → batch → features → writer) serve both engines: `job` (this process) and `ray_engine` +
  `ray_worker` (Ray actors compute, the driver commits); `validation` and `embeddings` (RDS hidden states) use
  the same writer and jobs; `folding` keeps the folded low-d copies beside the stored vectors.
- The math lives in small modules: per_example_grads (one batched backward → exact per-example gradients),
  adam (Γ), sketch (dense Rademacher, CountSketch / sparse sign), engine (fused per module).
`config` (the settings) is light; the rest (torch) is imported on first use, so `lessdb --help` stays fast.
"""
from __future__ import annotations

from ..lazy import lazy_exports
from .config import FeaturizeConfig

_LAZY = {"FeaturizeSummary": "job", "featurize_run": "job", "parse_shard": "planning", "shard_of": "planning",
         "validation_features": "validation", "validation_key": "validation"}
__all__ = ["FeaturizeConfig", *_LAZY]

__getattr__ = lazy_exports(__name__, {name: "." + module for name, module in _LAZY.items()})
