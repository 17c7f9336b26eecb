"""The Python API: `lessdb.Workspace` has one method per CLI command, of the same name (`METHOD_NAMES` lists the
few that differ), taking the command's settings as keyword arguments (the config dataclasses' fields,
`help(lessdb.config.SelectConfig)`) or a whole config object. The CLI commands are thin skins over these methods:
they parse flags, call the method and print its result.

    import lessdb
    ws = lessdb.Workspace.open("lessdb-workspace")
    ws.ingest(["data.jsonl"], pool="mix")
    run = ws.warmup("mix", preset="cpu-small")
    fs = ws.featurize(run.run_id)
    sel = ws.select(task="bbh", percentage=0.05, name="bbh-5pct")
    ws.sql("SELECT * FROM selection_members WHERE selection_id = ?", params=[sel.selection_id]).to_pandas()

Each method delegates to its stage module, imported inside the method so `import lessdb` stays light. One module
per pipeline stage: `inputs` (pools, tasks), `runs` (warmup, train), `features` (featurize, embed, fold),
`selection` (select and its audit), `evaluation`, `audit` (sql, versions, verify, vacuum). `base` holds what they
share: the keyword check (`command`), config building (`make_config`) and the result rule (`Record`).
"""
from __future__ import annotations

from pathlib import Path

from .audit import AuditAPI
from .base import Record, UnknownSettingError, command, config_fields, make_config
from .evaluation import EvaluationAPI
from .features import FeaturesAPI
from .inputs import InputsAPI
from .runs import RunsAPI
from .selection import SelectionAPI

__all__ = ["WorkspaceAPI", "Record", "UnknownSettingError", "METHOD_NAMES", "method_name"]

# `lessdb COMMAND` calls the Workspace method named like it (dashes and the space of a subcommand as underscores),
# except these; `lessdb select --replay SEL` is also `ws.replay(SEL)`.
METHOD_NAMES = {"eval": "evaluate"}   # eval is a Python builtin


def method_name(command: str) -> str:
    """The Workspace method behind `lessdb COMMAND` ('task add' -> 'task_add', 'eval' -> 'evaluate')."""
    return METHOD_NAMES.get(command, command.replace("-", "_").replace(" ", "_"))


class WorkspaceAPI(InputsAPI, RunsAPI, FeaturesAPI, SelectionAPI, EvaluationAPI, AuditAPI):
    """Mixed into `lessdb.Workspace` (which has the storage, `init` and `open`); every method is one command."""

    @classmethod
    @command(config_fields("QuickstartConfig", leave_out=("workspace",)))
    def quickstart(cls, path: str | Path | None = None, **settings) -> Record:
        """`lessdb quickstart`: the whole pipeline on the bundled real defaults, sized for a laptop CPU, in the
        workspace at `path` (created if needed; reruns reuse what exists) -> workspace, run_id, feature_set_id,
        selections, the LESS selection's `show`, timings and measured phases. `settings`: QuickstartConfig
        fields (pool_size, task, device, model, ...)."""
        from ..config import QuickstartConfig
        from ..quickstart import run_quickstart

        config = make_config(QuickstartConfig, settings, workspace=path)
        return Record(run_quickstart(cls.init(config.workspace), config))
