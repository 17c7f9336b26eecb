"""Every command's settings, importable from here: `help(lessdb.config.SelectConfig)` lists each setting with its
type, default, flag and help (generated from the fields: `settings.settings_doc`).

Each config is declared with its stage (`CONFIGS` names the module) and loads on first use, so that
`import lessdb.config` stays light (no torch) and no stage imports this facade.
"""
from __future__ import annotations

from .lazy import lazy_exports

# every command's config (and the training helpers scripts use) -> the module that declares it
CONFIGS = {
    "IngestConfig": "lessdb.ingest.config",
    "LoraSettings": "lessdb.runs.config", "TrainingSettings": "lessdb.runs.config",
    "WarmupConfig": "lessdb.runs.config", "TrainConfig": "lessdb.runs.config",
    "FeaturizeConfig": "lessdb.featurize.config", "EmbedConfig": "lessdb.featurize.config",
    "RayOptions": "lessdb.scale.options",
    "SelectConfig": "lessdb.selection.config",
    "EvalConfig": "lessdb.evaluate.config",
    "ValidateConfig": "lessdb.validate.config",
    "QuickstartConfig": "lessdb.quickstart",
}
HELPERS = {name: "lessdb.runs.config" for name in
           ("PRESETS", "LORA_PREFIX", "flat_settings", "build_warmup_config", "build_train_config")}
__getattr__ = lazy_exports(__name__, {**CONFIGS, **HELPERS})


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(CONFIGS) | set(HELPERS))
