"""The pipeline's inputs: candidate pools (`ingest`, `pools`) and target tasks (`tasks`, `task add`, `task show`)."""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError, ref
from .base import Record, command


class InputsAPI:
    @command()
    def ingest(self, files=(), *, pool: str | None = None, format: str = "auto", builtin: str | None = None,
               skip_invalid: bool = False, limit: int | None = None, progress: bool = True):
        """`lessdb ingest`: add JSON/JSONL files (Tulu messages, ShareGPT, Alpaca or prompt/completion; `format`
        auto-detects per file) or a `builtin` pool ('sharegpt') to a pool, as one new version of the candidates
        table -> IngestReport. `skip_invalid` skips and records bad records instead of failing; `limit` keeps the
        first N new candidates."""
        from ..ingest import ingest_builtin, ingest_files

        files = [files] if isinstance(files, (str, Path)) else list(files)
        if builtin and files:
            raise InputError(f"give either files or {ref('builtin')}, not both")
        if not builtin and not files:
            raise InputError(f"no input files (or use {ref('builtin')} sharegpt)")
        if builtin:
            return ingest_builtin(self, builtin, pool=pool, limit=limit, progress=progress)
        if not pool:
            raise InputError(f"{ref('pool')} is required when ingesting files")
        return ingest_files(self, files, pool, fmt=format, skip_invalid=skip_invalid, limit=limit, progress=progress)

    @command()
    def pools(self) -> list[dict]:
        """`lessdb pools`: pools with their candidate, duplicate and skipped counts."""
        from ..storage.meta_pools import list_pools

        return list_pools(self)

    @command()
    def tasks(self) -> list[dict]:
        """`lessdb tasks`: target tasks (built-in bbh and mmlu, and the ones added) with hash and counts."""
        from ..tasks.catalog import list_tasks

        return list_tasks(self)

    @command()
    def task_add(self, name: str | None = None, *, file: str | Path | None = None,
                 less_eval_dir: str | Path | None = None, replace: bool = False,
                 description: str | None = None) -> list[dict]:
        """`lessdb task add`: a target task from a JSONL `file` (named `name`), or the validation sets of a LESS
        data/eval folder (`less_eval_dir`: bbh-less, mmlu-less, tydiqa) -> one row per task added."""
        from ..tasks.catalog import add_tasks

        return add_tasks(self, name=name, file=file, less_eval_dir=less_eval_dir, replace=replace,
                         description=description)

    @command()
    def task_show(self, name: str) -> Record:
        """`lessdb task show`: one task's hash, source, subtasks and examples (every message in full)."""
        from ..tasks.catalog import describe_task

        return Record(describe_task(self, name))
