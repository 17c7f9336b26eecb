"""The pipeline's inputs: candidate pools (`ingest`, `pools`) and target tasks (`tasks`, `task add`, `task show`)."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError, ref
from .base import Record, command, config_fields, make_config


class InputsAPI:
    @command(config_fields("IngestConfig"))
    def ingest(self, files=(), *, config=None, **settings):
        """`lessdb ingest`: add instruction data to a pool, as one new version of the candidates table ->
        IngestReport. `files`: paths (files, folders, globs, s3:// URIs) of JSON/JSONL (.gz/.zst), Parquet, Arrow
        IPC or Hugging Face `save_to_disk` folders; or an object in memory: a `datasets.Dataset`/
        `IterableDataset`, a `pyarrow.Table`/`RecordBatchReader`, a pandas DataFrame, or an iterable of dicts.
        Or a `builtin` pool ('sharegpt'). `settings`: IngestConfig fields (`pool`, `format`: a record shape
        and/or a file format, `columns`: {lessdb field: input column}, `skip_invalid`, `limit`, `minhash`,
        `dataset`, ...); every other input column is kept as the candidate's `metadata`."""
        from ..config import IngestConfig
        from ..ingest import ingest_builtin, ingest_files, ingest_object

        config = make_config(IngestConfig, settings, base=config)
        config.validate()
        paths = _as_paths(files)
        given = paths is None or bool(paths)
        if config.builtin and given:
            raise InputError(f"give either files or {ref('builtin')}, not both")
        if not config.builtin and not given:
            raise InputError(f"no input files (or use {ref('builtin')} sharegpt)")
        if config.builtin:
            return ingest_builtin(self, config.builtin, pool=config.pool, limit=config.limit,
                                  progress=config.progress, minhash=config.minhash)
        if not config.pool:
            raise InputError(f"{ref('pool')} is required when ingesting " + ("files" if paths else "an object"))
        common = dict(fmt=config.format, skip_invalid=config.skip_invalid, limit=config.limit,
                      progress=config.progress, columns=config.columns, minhash=config.minhash)
        if paths is None:
            return ingest_object(self, files, config.pool, dataset=config.dataset, **common)
        return ingest_files(self, paths, config.pool, **common)

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


def _as_paths(files) -> list | None:
    """`files` as a list of paths (str or path-like), or None when it is an object to read from memory (a list
    of dicts included)."""
    if files is None:
        return []
    if isinstance(files, (str, os.PathLike)):
        return [files]
    if isinstance(files, (list, tuple)) and all(isinstance(f, (str, os.PathLike)) for f in files):
        return list(files)
    return None
