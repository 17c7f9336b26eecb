"""The settings of `featurize` (light: no torch), declared once — the CLI's options are generated from them."""
from __future__ import annotations

from dataclasses import dataclass

from ..models.batching import CPU_BATCH_TOKENS
from ..choices import DEFAULT_SKETCH, GRAD_KINDS, SKETCH_KINDS, STORED_DTYPE_NAMES
from ..scale.options import ENGINES
from ..settings import check_choices, check_ranges, raise_problems, setting

COMPUTE_DTYPES = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class FeaturizeConfig:
    run_id: str = setting(help="Warmup run whose checkpoints give the gradients.", flag="--run")
    checkpoints: tuple[int, ...] | None = setting(
        None, "Epochs to featurize: all, or e.g. 1,2.", show="all")
    dim: int = setting(8192, "Sketch dimension d.", min=1)
    sketch: str = setting(DEFAULT_SKETCH, "Random projection; dense-rademacher is the paper's (slow on CPU at LESS "
                          "sizes).", choices=SKETCH_KINDS)
    sketch_nnz: int | None = setting(None, "Nonzeros per coordinate of the sparse-sign sketch.", show="4", min=1)
    seed: int = setting(0, "Sketch seed.")
    dtype: str | None = setting(None, "Stored vector dtype: float16 (as the paper: half the disk and scan time of "
                                "float32) unless a run's existing float32 feature set with the same settings keeps "
                                "float32.", choices=STORED_DTYPE_NAMES, show="float16")
    grad_kind: str = setting("adam", "adam: LESS's Adam direction; sgd: plain gradient; sign: SignGD.",
                             flag="--grad", choices=GRAD_KINDS)
    bias_correction: bool = setting(True, "Adam bias correction is the paper's; --no-bias-correction drops it (the "
                                    "reference implementation's variant).", flag="--no-bias-correction")
    shard: tuple[int, int] = setting((0, 1), "i/n: do only the examples whose id hashes to shard i (0-based).",
                                     show="0/1")
    batch_size: int = setting(8, "Examples per forward+backward (on a CPU also at most "
                                 f"{CPU_BATCH_TOKENS} padded tokens).", min=1)
    device: str = setting("auto", "auto, cpu or cuda.")
    where: str | None = setting(None, "SQL boolean expression over `candidates` selecting a subset.")
    max_seq_length: int | None = setting(None, "Token limit.", show="the run's", min=2)
    compute_dtype: str = setting("auto", "Forward/backward precision (auto: bfloat16 on CUDA, float32 on CPU).",
                                 flag="--precision", choices=COMPUTE_DTYPES)
    engine: str = setting("local", "local: this process; ray: Ray actors compute, this process commits (see "
                          "README, Scale out). Not recorded: both store bit-identical vectors.", choices=ENGINES)
    commit_rows: int = setting(64, "Vectors per commit.", cli=False)
    commit_seconds: float = setting(60.0, "Commit at least this often.", cli=False)
    progress: bool = setting(True, "Progress on stderr.", cli=False)

    def validate(self) -> None:
        problems: list[tuple[str, str]] = []
        check_choices(self, problems)
        check_ranges(self, problems)
        check_shard(self.shard, problems)
        if not self.run_id:
            problems.append(("run_id", "is required: the warmup run whose checkpoints give the gradients (see "
                                       "`lessdb runs`)"))
        raise_problems(self, problems)


def check_shard(shard: tuple[int, int], problems: list) -> None:
    """`i/n` names one of n shards: featurize's and embed's `--shard`."""
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        problems.append(("shard", f"{i}/{n}: need 0 <= i < n"))


@dataclass(frozen=True)
class EmbedConfig:
    """The settings of `lessdb embed`: RDS / RDS+ embeddings of a run's pool, stored once per (model, pooling,
    token window) as a feature set that every later `select --method rds|rds+` reads."""
    run_id: str = setting(help="Warmup run: its base model, tokenizer and pool.", flag="--run")
    pooling: str = setting("mean", "last: the final hidden state at the last token (RDS); mean: mean-pooled (RDS+).",
                           choices=("last", "mean"))   # featurize/embeddings.py's POOLINGS (a test keeps them equal)
    max_seq_length: int | None = setting(None, "Token window.", show="the run's", min=2)
    shard: tuple[int, int] = setting((0, 1), "i/n: embed only this shard (run n processes for a big pool).",
                                     show="0/1")
    where: str | None = setting(None, "SQL condition on candidate metadata.")
    device: str = setting("cpu", "cpu or cuda.")
    batch_size: int = setting(16, "Examples per forward pass.", min=1)
    progress: bool = setting(True, "Progress on stderr.", cli=False)

    def validate(self) -> None:
        problems: list[tuple[str, str]] = []
        check_choices(self, problems)
        check_ranges(self, problems)
        check_shard(self.shard, problems)
        raise_problems(self, problems)


def featurize_command(fs, epochs=None, shard: tuple[int, int] | None = None, where: str | None = None) -> str:
    """The `lessdb featurize` (or, for an RDS embedding set, `lessdb embed`) command that fills feature set `fs`
    (a FeatureSetInfo or a `feature_sets` row as a dict): every setting that is part of its identity is spelled
    out, so the command extends this set and not a new one with today's defaults (on another device, say)."""
    import shlex

    from ..settings import flag_of

    get = fs.get if isinstance(fs, dict) else (lambda key: getattr(fs, key))
    kind = str(get("grad_kind"))
    embed = kind.startswith("hidden-")   # an RDS embedding set: `lessdb embed`'s settings

    def flag(name: str) -> str:
        return flag_of(EmbedConfig if embed else FeaturizeConfig, name)

    scope = ((f" {flag('shard')} {shard[0]}/{shard[1]}" if shard and shard != (0, 1) else "")
             + (f" {flag('where')} {shlex.quote(where)}" if where else ""))
    if embed:
        return (f"lessdb embed {flag('run_id')} {get('run_id')} {flag('pooling')} {kind.split('-', 1)[1]} "
                f"{flag('max_seq_length')} {get('max_seq_length')}" + scope)
    parts = [f"lessdb featurize {flag('run_id')} {get('run_id')}", f"{flag('dim')} {get('dim')}",
             f"{flag('sketch')} {get('sketch_kind')}", f"{flag('seed')} {get('sketch_seed')}",
             f"{flag('dtype')} {get('dtype')}", f"{flag('grad_kind')} {kind}",
             f"{flag('compute_dtype')} {get('compute_dtype')}", f"{flag('max_seq_length')} {get('max_seq_length')}"]
    if kind == "adam" and not get("bias_correction"):
        parts.append(flag("bias_correction"))
    if get("sketch_kind") == "sparse-sign" and get("sketch_nnz"):
        parts.append(f"{flag('sketch_nnz')} {get('sketch_nnz')}")
    if epochs:
        parts.append(f"{flag('checkpoints')} {','.join(str(int(e)) for e in sorted(epochs))}")
    return " ".join(parts) + scope
