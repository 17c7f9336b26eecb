"""LoRA runs: `warmup` (LESS step 1), `train` (step 4, on a selection) and `runs`."""
from __future__ import annotations

from .base import command


def _flat_training_settings(config_name: str):
    """`takes` of warmup and train: the config's own fields plus the LoRA (`lora_r`, ...) and optimizer (`lr`,
    `epochs`, ...) settings, flat, as the command line and the presets name them."""
    def names() -> list[str]:
        import dataclasses

        from .. import config

        own = [f.name for f in dataclasses.fields(getattr(config, config_name)) if f.name not in ("lora", "training")]
        return own + list(config.flat_settings()) + ["target_modules"]
    return names


class RunsAPI:
    @command(_flat_training_settings("WarmupConfig"))
    def warmup(self, pool: str | None = None, *, preset: str | None = None, resume: bool = False,
               run_id: str | None = None, device: str | None = None, progress: bool = True, config=None,
               **settings):
        """`lessdb warmup`: LoRA-train the base model on a random p% of `pool` -> RunSummary.

        `settings`: WarmupConfig fields (model, percentage, max_examples), `lora_` + LoraSettings fields
        (lora_r, lora_alpha, lora_dropout, lora_target_modules) and TrainingSettings fields (lr, epochs, seed,
        batch_size, ...), over `preset`'s values; or pass a whole `config` (a WarmupConfig). `resume=True`
        continues the `run_id` run (else the latest unfinished one of `pool`) with its recorded settings."""
        from ..config import build_warmup_config
        from ..errors import LessdbError, ref
        from ..runs.lifecycle import refuse_settings_with_resume
        from ..runs.warmup import resume_warmup, run_warmup

        if resume:
            refuse_settings_with_resume(settings, preset)
            return resume_warmup(self, run_id, pool, device=device, progress=progress)
        if config is None:
            if not pool:
                raise LessdbError(f"{ref('pool')} is required (the pool to draw the warmup subset from)")
            config = build_warmup_config(pool, preset=preset, run_id=run_id, device=device, **settings)
        return run_warmup(self, config, progress=progress)

    @command(_flat_training_settings("TrainConfig"), passes=("percentage", "max_examples"))
    def train(self, selection: str | None = None, *, pool: str | None = None, preset: str | None = None,
              resume: bool = False, run_id: str | None = None, device: str | None = None, progress: bool = True,
              config=None, **settings):
        """`lessdb train`: LoRA-train on a selection's examples ('full' / 'random:P' for the baselines)
        -> RunSummary. `settings` as for `warmup` (plus `model`); `resume=True` continues a run."""
        from ..config import TrainConfig, build_train_config
        from ..runs.lifecycle import refuse_settings_with_resume
        from ..runs.train import resume_train, run_train

        if resume:
            refuse_settings_with_resume({"selection": selection, **settings}, preset, TrainConfig)
            return resume_train(self, run_id, pool, device=device, progress=progress)
        if config is None:
            config = build_train_config(selection, preset=preset, pool=pool, device=device, run_id=run_id,
                                        **settings)
        return run_train(self, config, progress=progress)

    @command()
    def runs(self, kind: str | None = None, pool: str | None = None) -> list[dict]:
        """`lessdb runs`: training runs (warmup and train) with their status, checkpoints and eta-bar."""
        from ..storage.meta_runs import list_runs

        return list_runs(self, kind=kind, pool=pool)
