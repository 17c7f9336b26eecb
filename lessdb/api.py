"""The Python API: one `Workspace` method per CLI command, taking the same settings as typed keyword arguments
(the config dataclasses' field names) or a config object. Each method only delegates to its stage module,
imported inside the method so `import lessdb` stays light; the CLI commands are thin skins over these.

    import lessdb
    ws = lessdb.Workspace.open("lessdb-workspace")
    ws.ingest(["data.jsonl"], pool="mix")
    run = ws.warmup("mix", preset="cpu-small")
    fs = ws.featurize(run.run_id)
    sel = ws.select(task="bbh", percentage=0.05, name="bbh-5pct")
    ws.sql("SELECT * FROM selection_members WHERE selection_id = ?", params=[sel.selection_id]).to_pandas()

Settings left out take the config's default (`help(lessdb.config.WarmupConfig)` lists them with their help).
"""
from __future__ import annotations

from pathlib import Path


class WorkspaceAPI:
    """Mixed into `lessdb.Workspace` (which has the storage); every method here is one CLI command."""

    # -- data ------------------------------------------------------------------------------------------
    def ingest(self, files=(), *, pool: str | None = None, format: str = "auto", builtin: str | None = None,
               skip_invalid: bool = False, limit: int | None = None, progress: bool = True):
        """`lessdb ingest`: add JSON/JSONL files (or a `builtin` pool) to a pool -> IngestReport."""
        from .errors import LessdbError
        from .ingest import ingest_builtin, ingest_files

        files = [files] if isinstance(files, (str, Path)) else list(files)
        if builtin:
            if files:
                raise LessdbError("give either files or builtin, not both")
            return ingest_builtin(self, builtin, pool=pool, limit=limit, progress=progress)
        if not files:
            raise LessdbError("no input files (or use builtin='sharegpt')")
        if not pool:
            raise LessdbError("pool is required when ingesting files")
        return ingest_files(self, files, pool, fmt=format, skip_invalid=skip_invalid, limit=limit, progress=progress)

    # -- LESS steps ------------------------------------------------------------------------------------
    def warmup(self, pool: str | None = None, *, preset: str | None = None, resume: bool = False,
               run_id: str | None = None, device: str | None = None, progress: bool = True, config=None,
               **settings):
        """`lessdb warmup`: LoRA-train the base model on a random p% of `pool` -> WarmupSummary.

        `settings`: WarmupConfig fields (model, percentage, max_examples), `lora_` + LoraSettings fields
        (lora_r, lora_alpha, lora_dropout, lora_target_modules) and TrainingSettings fields (lr, epochs, seed,
        batch_size, ...), over `preset`'s values; or pass a whole `config` (a WarmupConfig). `resume=True`
        continues the `run_id` run (else the latest unfinished one of `pool`) with its recorded settings."""
        from .runs.config import build_warmup_config
        from .errors import LessdbError
        from .runs.lifecycle import refuse_settings_with_resume
        from .runs.warmup import resume_warmup, run_warmup

        if resume:
            refuse_settings_with_resume(settings, preset)
            return resume_warmup(self, run_id, pool, device=device, progress=progress)
        if config is None:
            if not pool:
                raise LessdbError("pool is required (the pool to draw the warmup subset from)")
            config = build_warmup_config(pool, preset=preset, run_id=run_id, device=device, **settings)
        return run_warmup(self, config, progress=progress)

    def featurize(self, run_id: str | None = None, *, ray=None, config=None, **settings):
        """`lessdb featurize`: gradient features of a warmup run's candidates -> FeaturizeSummary.
        `settings`: FeaturizeConfig fields (dim, sketch, grad_kind, checkpoints, shard=(i, n), ...);
        `engine="ray"` computes on Ray actors (`ray`: a lessdb.scale.RayOptions, default its defaults)."""
        from .featurize import FeaturizeConfig

        given = {k: v for k, v in settings.items() if v is not None}
        if config is None:
            config = FeaturizeConfig(run_id=run_id, **given)
        elif given:   # a config plus a few settings (engine="ray"): the settings win
            from dataclasses import replace

            config = replace(config, **given)
        config.validate()
        if config.engine == "ray":
            from .featurize.ray_engine import featurize_ray
            from .scale import RayOptions

            return featurize_ray(self, config, ray or RayOptions())
        from .featurize.job import featurize_run

        return featurize_run(self, config)

    def fold(self, feature_set: str, low_dim: int, *, progress: bool = True) -> dict:
        """`lessdb fold`: make or extend a feature set's folded copy at d = `low_dim` (what `select
        --prefilter` scores first); resumable, exactly once. -> its `folded_copies` row."""
        from .featurize.folding import sync_folded
        from .storage.features import get_feature_set

        return sync_folded(self, get_feature_set(self, feature_set), int(low_dim), progress=progress)

    def select(self, task: str | None = None, *, config=None, **settings):
        """`lessdb select`: pick a task's most useful candidates and record the selection -> SelectionResult.
        `settings`: SelectConfig fields (method, percentage or count, where, run, feature_set, name, output,
        method_params={...}, ...)."""
        from .selection import SelectConfig, select

        if config is None:
            config = SelectConfig(task=task, **settings)
        return select(self, config)

    def replay(self, selection: str, *, name: str | None = None, output: str | None = None, force: bool = False,
               progress: bool = True):
        """`lessdb select --replay`: re-run a recorded selection at the table versions it read."""
        from .selection import replay

        return replay(self, selection, name=name, output=None if output is None else str(output), force=force,
                      progress=progress)

    def export(self, selection: str, output: str | Path | None = None, *, format: str | None = None,
               force: bool = False) -> dict:
        """`lessdb export`: write a selection's training set (JSONL/Parquet) and record its sha256; an existing
        `output` is refused unless `force`."""
        from .selection import export_selection

        return export_selection(self, selection, output, format, force=force)

    def train(self, selection: str | None = None, *, pool: str | None = None, preset: str | None = None,
              resume: bool = False, run_id: str | None = None, device: str | None = None, progress: bool = True,
              config=None, **settings):
        """`lessdb train`: LoRA-train on a selection's examples ('full' / 'random:P' for the baselines)
        -> TrainSummary. `settings` as for `warmup` (plus `model`); `resume=True` continues a run."""
        from .runs.config import TrainConfig, build_train_config
        from .runs.train import resume_train, run_train
        from .runs.lifecycle import refuse_settings_with_resume

        if resume:
            refuse_settings_with_resume({"selection": selection, **settings}, preset, TrainConfig)
            return resume_train(self, run_id, pool, device=device, progress=progress)
        if config is None:
            config = build_train_config(selection, preset=preset, pool=pool, device=device, run_id=run_id,
                                        **settings)
        return run_train(self, config, progress=progress)

    def evaluate(self, task: str | None = None, *, config=None, **settings):
        """`lessdb eval`: evaluate a run's checkpoint (`run_id=`) or a base model (`model=`) on a task and record
        it -> EvalSummary. `settings`: EvalConfig fields (epoch, limit, metrics, data_dir, ...)."""
        from .evaluate import EvalConfig
        from .evaluate.run_eval import run_eval

        if config is None:
            config = EvalConfig(task=task, **{k: v for k, v in settings.items() if v is not None})
        return run_eval(self, config)

    # -- reading ---------------------------------------------------------------------------------------
    def sql(self, query: str, params=None):
        """`lessdb sql`: a read-only query over the workspace (DuckDB metadata + Lance tables) -> pyarrow.Table
        (`.to_pandas()` with pandas installed). `params` binds `?` (list) or `$name` (dict) placeholders."""
        from .storage.user_sql import readonly_arrow

        return readonly_arrow(self, query, params)

    def pools(self) -> list[dict]:
        """`lessdb pools`."""
        from .storage.meta_pools import list_pools

        return list_pools(self)

    def runs(self, kind: str | None = None, pool: str | None = None) -> list[dict]:
        """`lessdb runs`: training runs (warmup and train) with their checkpoints."""
        from .storage.meta_runs import list_runs

        return list_runs(self, kind=kind, pool=pool)

    def feature_sets(self, run_id: str | None = None) -> list[dict]:
        """`lessdb feature-sets`."""
        from .storage.features import list_feature_sets

        return list_feature_sets(self, run_id)

    def selections(self) -> list[dict]:
        """`lessdb selections`."""
        from .selection import list_selections

        return list_selections(self)

    def show(self, selection: str, top: int = 10) -> dict:
        """`lessdb show`: provenance, source mix, lengths, score histogram and top members of a selection."""
        from .selection import show_selection

        return show_selection(self, selection, top=top)

    def diff(self, a: str, b: str) -> dict:
        """`lessdb diff`: overlap of two selections."""
        from .selection import diff_selections

        return diff_selections(self, a, b)

    def evals(self, task: str | None = None) -> list[dict]:
        """`lessdb evals`."""
        from .storage.meta_evals import list_evals

        return list_evals(self, task)

    def compare(self, task: str) -> list[dict]:
        """`lessdb compare`: methods x metrics of a task's evaluations."""
        from .evaluate.run_eval import compare

        return compare(self, task)

    def tasks(self) -> list[dict]:
        """`lessdb tasks`."""
        from .tasks.catalog import list_tasks

        return list_tasks(self)
