"""`lessdb quickstart`: the whole pipeline on the bundled real defaults, sized for a 2-core laptop CPU.

ingest (a sample of ShareGPT V3) -> warmup (real SmolLM2-135M, preset cpu-small) -> featurize (Adam
features, CountSketch) -> select for the built-in `bbh` task with LESS, plus random and BM25 to compare.
Every step reuses what an earlier quickstart in the same workspace already made, so a rerun (or a rerun after
an interruption) only finishes what is missing.

What is scaled down from the paper, and why (the GPU recipe in the README uses the paper's settings):
- pool: the first `pool_size` valid ShareGPT conversations, not 270K examples;
- warmup: `cpu-small` (256 tokens, LoRA r=8, 2 epochs) on `warmup_percentage` of the pool — 20% rather than
  5%, so that each epoch still has several optimizer steps and both checkpoints carry weight;
- validation: BBH's 3-shot prompts are ~800 tokens (up to 2.3K); a CPU cannot take 162 gradients at that
  length in minutes, so each validation example keeps its last `val_max_seq_length` tokens (left
  truncation: the completion and the question stay, the earliest demonstration text goes). Recorded.
"""
from __future__ import annotations

import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from .choices import DEFAULT_MODEL, MODEL_HELP
from .settings import setting


@dataclass(frozen=True)
class QuickstartConfig:
    """The quickstart's settings (`lessdb quickstart`'s options are generated from the `cli` ones). Light to
    import: the command's --help reads it."""
    workspace: Path | None = setting(None, "Workspace directory.", cli=False)
    pool: str = setting("sharegpt-sample", "Pool the ShareGPT sample goes into.", cli=False)
    pool_size: int = setting(100, "How many ShareGPT conversations to put in the pool.")
    model: str = setting(DEFAULT_MODEL, "Base model: " + MODEL_HELP + ".")
    task: str = setting("bbh", "Target task.")
    warmup_percentage: float = setting(0.2, "Fraction of the pool the warmup trains on.", cli=False)
    dim: int = setting(8192, "Sketch dimension d.", cli=False)
    percentage: float = setting(0.05, "Fraction selected.", cli=False)
    val_max_seq_length: int = setting(256, "Token window of validation examples.", cli=False)
    device: str = setting("auto", "auto, cpu or cuda.")


def _say(text: str) -> None:
    print(f"quickstart: {text}", file=sys.stderr, flush=True)


def _pool_size(ws, pool: str) -> int:
    from .storage.meta_pools import list_pools
    return next((p["candidates"] for p in list_pools(ws) if p["pool"] == pool), 0)


def _reusable_run(ws, pool: str, model: str) -> str | None:
    from .storage.meta_runs import list_runs
    for run in reversed(list_runs(ws, kind="warmup", pool=pool)):
        if run["model_name"] == model and (run.get("config") or {}).get("warmup", {}).get("preset") == "cpu-small":
            return run["run_id"]
    return None


def run_quickstart(ws, cfg: QuickstartConfig) -> dict:
    """The whole pipeline in `ws` (a Workspace: `Workspace.quickstart` opens it; reruns reuse what exists)."""
    from .featurize import FeaturizeConfig, featurize_run
    from .ingest import ingest_builtin
    from .runs.checkpoint_models import reuse_checkpoint_models
    from .models.loading import prepare_model
    from .phase_meter import PhaseMeter, release_freed_memory
    from .selection import SelectConfig, list_selections, select, show_selection
    from .runs.warmup import resume_warmup

    meter, stack = PhaseMeter(), ExitStack()
    try:
        with meter.phase("ingest"):
            _say(f"1/5 ingest: first {cfg.pool_size} valid ShareGPT V3 conversations into pool {cfg.pool!r}")
            have = _pool_size(ws, cfg.pool)
            if have < cfg.pool_size:
                ingest_builtin(ws, "sharegpt", pool=cfg.pool, limit=cfg.pool_size - have)
            else:
                _say(f"   reusing pool {cfg.pool!r} ({have} candidates)")

        with meter.phase("convert"):
            _say(f"2/5 model: {cfg.model} (its GGUF is converted to safetensors once per workspace)")
            prepare_model(ws, cfg.model)

        with meter.phase("warmup"):
            _say(f"3/5 warmup: {cfg.model}, preset cpu-small, {cfg.warmup_percentage:.0%} of the pool")
            run_id = _reusable_run(ws, cfg.pool, cfg.model)
            if run_id is None:
                summary = ws.warmup(cfg.pool, preset="cpu-small", model=cfg.model,
                                    percentage=cfg.warmup_percentage, device=cfg.device)
                run_id = summary.run_id
                del summary
            else:
                from .storage.meta_runs import get_run
                if get_run(ws, run_id)["status"] != "complete":
                    _say(f"   resuming warmup run {run_id}")
                    resume_warmup(ws, run_id)
                else:
                    _say(f"   reusing warmup run {run_id}")
            release_freed_memory()   # the trainer's model and optimizer are garbage now: return them first

        stack.enter_context(reuse_checkpoint_models())   # featurize and select load the same checkpoints
        with meter.phase("featurize"):
            _say(f"4/5 featurize: Adam gradient features of every candidate at each checkpoint (d={cfg.dim})")
            feat = featurize_run(ws, FeaturizeConfig(run_id=run_id, dim=cfg.dim, device=cfg.device))
            release_freed_memory()

        with meter.phase("select"):
            _say(f"5/5 select: top {cfg.percentage:.0%} for task {cfg.task!r} with LESS, then random and BM25 "
                 "to compare")
            existing = {s["name"]: s for s in list_selections(ws)}
            names = {}
            for method in ("less", "random", "bm25"):
                name = f"quickstart-{cfg.task}-{method}-{run_id[-6:]}"
                names[method] = name
                if name in existing:
                    _say(f"   reusing selection {name}")
                    continue
                select(ws, SelectConfig(task=cfg.task, method=method, run=run_id,
                                        feature_set=feat.feature_set_id if method == "less" else None,
                                        percentage=cfg.percentage, name=name,
                                        val_max_seq_length=cfg.val_max_seq_length, val_truncation="left",
                                        device="cpu" if cfg.device == "auto" else cfg.device))
    finally:
        stack.close()
        meter.close()
    measured = meter.summary()
    timings = {f"{name}_s": p["seconds"] for name, p in measured["phases"].items()}
    timings["total_s"] = measured["total_seconds"]
    return {"workspace": str(ws.root), "run_id": run_id, "feature_set_id": feat.feature_set_id,
            "selections": names, "less": show_selection(ws, names["less"], top=5),
            "timings": timings, "measured": measured}
