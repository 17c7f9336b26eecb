"""The pipeline's inputs: candidate pools (`ingest`, `pools`) and target tasks (`tasks`, `task add`, `task show`)."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError, ref
from .base import Record, command


class InputsAPI:
    @command()
    def ingest(self, files=(), *, pool: str | None = None, format="auto", columns=None, builtin: str | None = None,
               skip_invalid: bool = False, limit: int | None = None, minhash: bool = False,
               dataset: str | None = None, progress: bool = True):
        """`lessdb ingest`: add instruction data to a pool, as one new version of the candidates table ->
        IngestReport. `files`: paths (files, folders, globs, s3:// URIs) of JSON/JSONL (.gz/.zst), Parquet, Arrow
        IPC or Hugging Face `save_to_disk` folders; or an object in memory: a `datasets.Dataset`/
        `IterableDataset`, a `pyarrow.Table`/`RecordBatchReader`, a pandas DataFrame, or an iterable of dicts
        (`dataset`: their source_dataset when they name none). Or a `builtin` pool ('sharegpt'). `format`: a
        record shape (Tulu messages, ShareGPT, Alpaca, prompt-completion; auto-detected by default) and/or a
        file format (jsonl, parquet, arrow; from the first bytes by default), one name or a list; `columns`:
        {lessdb field: input column} (or FIELD=COLUMN strings), e.g. {"messages": "conversation"}; other
        columns are kept as the candidate's `metadata`. `skip_invalid` skips and records bad records instead of
        failing; `limit` keeps the first N new candidates; `minhash` computes the --dedup-text signatures now
        rather than at the first selection that uses them."""
        from ..ingest import ingest_builtin, ingest_files, ingest_object

        paths = _as_paths(files)
        given = paths is None or bool(paths)
        if builtin and given:
            raise InputError(f"give either files or {ref('builtin')}, not both")
        if not builtin and not given:
            raise InputError(f"no input files (or use {ref('builtin')} sharegpt)")
        if builtin:
            return ingest_builtin(self, builtin, pool=pool, limit=limit, progress=progress, minhash=minhash)
        if not pool:
            raise InputError(f"{ref('pool')} is required when ingesting " + ("files" if paths else "an object"))
        if paths is None:
            return ingest_object(self, files, pool, fmt=format, skip_invalid=skip_invalid, limit=limit,
                                 progress=progress, columns=columns, minhash=minhash, dataset=dataset)
        return ingest_files(self, paths, pool, fmt=format, skip_invalid=skip_invalid, limit=limit,
                            progress=progress, columns=columns, minhash=minhash)

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
