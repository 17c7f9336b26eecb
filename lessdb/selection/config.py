"""The settings of `select` (light: no storage, no torch), declared once — the CLI's options are generated from
them — and `invalid(...)`, the error about them that every planning module raises."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..choices import DEFAULT_VAL_TRUNCATION, FEATURE_BATCH_ROWS, TRUNCATION_SIDES
from ..names import check_names
from ..scale.options import ENGINES, ray_address_setting
from ..settings import SettingError, check_choices, check_ranges, field_named, raise_problems, setting
from .picking import BALANCES

DEFAULT_PERCENTAGE = 0.05
# what a percentage is a share of, recorded with every selection: "filtered" = the candidates that pass the filter.
# Selections recorded without it took p of the candidates that got a score, and their replays still do.
PERCENTAGE_OF = "filtered"
VAL_AGGREGATIONS = ("paper", "reference")
BUDGET_ON = ("completion", "total")   # which tokens a --max-tokens budget counts


@dataclass
class SelectConfig:
    task: str | list[str] | None = setting(None, "Target task (see `lessdb tasks`), e.g. bbh, mmlu, tydiqa. Repeat for "
                                           "several targets in one selection (a list); NAME:WEIGHT weights a "
                                           "target for --balance proportional.", multiple=True)
    method: str = setting("less", "LESS, an ablation (sgd, sign, unnormalized), a baseline (random, bm25, dsir, rds, "
                          "rds+) or hybrid (LESS and BM25 fused; --method-param fusion=rrf|zscore).")
    pool: str | None = setting(None, "Candidate pool.", show="the run's pool")
    run: str | None = setting(None, "Warmup run.", show="the feature set's run, else the newest complete one")
    feature_set: str | None = setting(None, "Feature set.", show="the run's newest of the method's gradient kind")
    percentage: float | None = setting(None, "Select floor(p*N), N the candidates that pass the filter (the filtered "
                                       "pool, whether or not each could be scored; at most those with a score; 0.05 "
                                       "means 5%).",
                                       show=str(DEFAULT_PERCENTAGE), short="-p", above=0, max=1)
    count: int | None = setting(None, "Select exactly this many instead.", short="-k", min=1)
    where: str | None = setting(None, "SQL condition on candidate metadata, applied before scoring.")
    val_aggregation: str = setting("paper", "paper: cosine with the subtask's mean gradient; reference: mean of "
                                   "per-example cosines.", choices=VAL_AGGREGATIONS)
    checkpoints: list[int] | None = setting(None, "Epochs to sum over, e.g. 1,2.", show="all")
    seed: int = setting(0, "Seed (random baseline).")
    name: str | None = setting(None, "A unique name for the selection.")
    output: str | None = setting(None, "Also export it (.jsonl or .parquet).", short="-o")
    force: bool = setting(False, "Overwrite --output if it exists.")
    max_seq_length: int | None = setting(None, "RDS/RDS+ truncation.", show="the run's", min=2)
    device: str = setting("cpu", "RDS/RDS+ device.")
    batch_rows: int = setting(FEATURE_BATCH_ROWS, "Feature rows per BLAS product (bounds memory).", cli=False,
                              min=1)
    val_max_seq_length: int | None = setting(None, "Token window of validation examples, for gradient methods and "
                                             "RDS/RDS+.", show="the feature set's, or the RDS window", min=2)
    val_truncation: str = setting(DEFAULT_VAL_TRUNCATION, "left keeps each validation example's completion and drops "
                                  "the earliest prompt tokens when it does not fit (long few-shot prompts on small "
                                  "windows); right drops the end instead (the paper's cut, which can leave no "
                                  "completion). An example that fits is the same either way.", choices=TRUNCATION_SIDES)
    replay: str | None = setting(None, "Re-run this recorded selection at the table versions it read.")
    progress: bool = setting(True, "Progress on stderr.", cli=False)
    method_params: dict | None = setting(None, "A parameter of the method, e.g. k1=1.2 for bm25 (repeatable; in "
                                         "Python a dict such as {'k1': 1.2}; recorded with the selection).",
                                         flag="--method-param", multiple=True, metavar="KEY=VALUE")
    allow_partial: bool = setting(False, "Select even if the feature set lacks vectors of some filtered candidates "
                                  "(a featurize job killed or still running, candidates added since): only those "
                                  "with one are scored. Refused otherwise; recorded with the selection.")
    engine: str = setting("local", "Where gradient features are scored: this process, or fragment by fragment on Ray "
                          "(same result).", choices=ENGINES)
    ray_address: str = ray_address_setting()
    balance: str = setting("max", "Several targets: max over all their subtasks (the paper), round-robin turns, or k "
                           "split by target weights.", choices=BALANCES)
    max_tokens: int | None = setting(None, "Token budget: take candidates best first until the next one would exceed "
                                     "it (run's tokenizer and window). With --count/--percentage, whichever is "
                                     "reached first.", min=1)
    budget_on: str = setting("completion", "Which tokens --max-tokens counts.", choices=BUDGET_ON)
    dedup: float | None = setting(None, "Skip a candidate whose feature cosine (at the selection's checkpoints) with a "
                                  "selected member exceeds this, e.g. 0.9.", above=0, max=1)
    dedup_text: float | None = setting(None, "Skip a candidate whose MinHash Jaccard estimate with a selected member "
                                       "exceeds this, e.g. 0.8.", above=0, max=1)
    prefilter: str | None = setting(None, "Two-stage selection for huge stores, LOWDxFACTOR (e.g. 1024x20): "
                                    "score every candidate on the feature set's folded copy at d=LOWD (made on "
                                    "first use, kept beside the full vectors), then rescan only the best FACTOR*k "
                                    "at full d. Scores are exact; a top-k candidate is missed only if it ranked "
                                    "below FACTOR*k at LOWD. CountSketch features, gradient methods.")

    def __post_init__(self):
        """The command line's repeated flags as the library takes them: --task given once is one task name (its
        record keeps unprefixed subtask names), several a list; --method-param KEY=VALUE items a dict."""
        if isinstance(self.task, tuple):
            self.task = list(self.task) if len(self.task) > 1 else (self.task[0] if self.task else None)
        if isinstance(self.method_params, (tuple, list)):
            self.method_params = parse_method_params(self.method_params) or None

    def validate(self) -> None:
        problems: list[tuple[str, str]] = []
        check_choices(self, problems)
        if not self.task and not self.replay:
            problems.append(("task", "is required (see `lessdb tasks`)"))
        if self.count is not None and self.percentage is not None:
            problems.append((("percentage", "count"), "may be given, not both"))
        check_ranges(self, problems)
        check_names(self, problems, "name")   # one rule for every name users give (lessdb/names.py)
        if self.prefilter is not None:
            from ..featurize.folding import parse_prefilter

            try:
                parse_prefilter(self.prefilter)
            except ValueError as exc:
                problems.append(("prefilter", str(exc)))
        raise_problems(self, problems)


def _select_default(name: str):
    return field_named(SelectConfig, name).default


@dataclass(frozen=True)
class RunOptions:
    """How a selection runs, not what it selects (never recorded); the defaults are SelectConfig's."""
    batch_rows: int = _select_default("batch_rows")
    device: str = _select_default("device")
    progress: bool = _select_default("progress")
    engine: str = _select_default("engine")           # local | ray (ray_scoring.py): same scores either way
    ray_address: str = _select_default("ray_address")

    @classmethod
    def of(cls, cfg: SelectConfig) -> "RunOptions":
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})


def parse_method_params(items) -> dict[str, str]:
    """["k1=1.2", "b=0.5"] (the CLI's --method-param) -> {"k1": "1.2", "b": "0.5"}; typed by make_params."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise invalid([("method_params", f"{item!r}: expected KEY=VALUE, e.g. k1=1.2")])
        out[key.strip()] = value.strip()
    return out


def invalid(problems: list[tuple] | str) -> SettingError:
    """A SettingError about `select`'s settings (SelectConfig fields; the CLI shows them as flags). `problems` as
    for SettingError: [(field, what is wrong)] or one sentence naming fields with `ref`."""
    return SettingError(SelectConfig, problems)
