"""The settings of `eval` (light: no torch), declared once — the CLI's options are generated from them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..choices import DEFAULT_SAMPLE_SEED, METRIC_SETS, MODEL_HELP, TRUNCATION_SIDES
from ..settings import DEFAULT_MAX_SEQ_LENGTH, SettingError, check_choices, check_ranges, raise_problems, setting


@dataclass
class EvalConfig:
    task: str = setting(help="bbh, mmlu, tydiqa or a custom task name (custom: target loss only).")
    run_id: str | None = setting(None, "Training run to evaluate (base model + LoRA of a checkpoint).",
                                 flag="--run")
    model: str | None = setting(None, "Evaluate a base model without LoRA instead: " + MODEL_HELP + ".")
    epoch: int | None = setting(None, "Checkpoint epoch.", show="the run's last")
    split: str = setting("test", "Test split of the task metric.")
    limit: int | None = setting(None, "At most N test items per subtask (seeded sample, recorded).", min=1)
    sample_seed: int = setting(DEFAULT_SAMPLE_SEED, "Seed of the --limit sample.", flag="--seed")
    data_dir: Path | None = setting(None, "Folder with the test items (a LESS data/eval folder; TyDiQA: its dev file "
                                    "or folder). BBH and MMLU test items ship with lessdb: leave it out for those.")
    metrics: str = setting("all", "all: target loss and task metric; loss: target loss only; task: task metric only.",
                           choices=METRIC_SETS)
    batch_size: int = setting(8, "Examples per forward pass.", min=1)
    max_new_tokens: int | None = setting(None, "Generation budget.", show="BBH 512, TyDiQA 50")
    max_seq_length: int = setting(DEFAULT_MAX_SEQ_LENGTH, "Truncation for the target loss.")
    loss_truncation: str = setting("right", "left keeps the last max-seq-length tokens of each validation example "
                                   "(its completion and question), as `select --val-truncation left`: a short "
                                   "window for long few-shot prompts on a CPU.", choices=TRUNCATION_SIDES)
    n_shot: int = setting(5, "MMLU demonstrations.", cli=False)
    # MMLU drops demonstrations until the prompt fits (as LESS)
    max_prompt_tokens: int = setting(DEFAULT_MAX_SEQ_LENGTH, "MMLU prompt token budget.", cli=False)
    # TyDiQA passages are clipped to this many tokens (as LESS)
    max_context_tokens: int = setting(512, "TyDiQA passage token budget.", cli=False)
    device: str | None = setting(None, "cpu or cuda.", show="cuda when available")

    def validate(self) -> None:
        if (self.run_id is None) == (self.model is None):
            raise SettingError(type(self), [(("run_id", "model"), "must be given, exactly one of them (a "
                                                                  "trained run's checkpoint, or a base model)")])
        problems: list[tuple[str, str]] = []
        check_choices(self, problems)
        check_ranges(self, problems)
        raise_problems(self, problems)
