"""Token budgets (`lessdb select --max-tokens N [--budget-on completion|total]`).

A budget is spent on the token counts the training step would see: the run's tokenizer (chat template or
Tulu format) after truncation to the run's window — the `token_counts` table that `lessdb warmup` fills.
Candidates counted by no run yet (appended after the warmup, or a pool the run never saw) are counted here
once, with the run's own tokenizer, and stored, so the next selection and every replay read the same numbers.
"""
from __future__ import annotations

import numpy as np

from ..errors import LessdbError
from ..runs.config import run_max_seq_length
from ..settings import ref
from .config import BUDGET_ON, invalid


def budget_tokenizer(ws, plan) -> dict:
    """{tokenizer_id, max_seq_length, model} of the selection's run (feature set first: it is what was scored)."""
    from ..storage import meta_runs

    if plan.run_id is None:
        raise invalid([("max_tokens", "counts tokens with a warmup run's tokenizer, and there is none; run "
                                      f"`lessdb warmup` or pass {ref('run')}")])
    run = meta_runs.get_run(ws, plan.run_id)
    cfg = run.get("config") or {}
    tid = plan.fs.tokenizer_id if plan.fs is not None else cfg.get("tokenizer_id")
    msl = int(plan.fs.max_seq_length) if plan.fs is not None else run_max_seq_length(run)
    return {"tokenizer_id": tid, "max_seq_length": msl, "model": run["model_name"],
            "model_sha256": run["model_sha256"]}


def token_array(ws, plan, ids: list[str], budget_on: str, tokenizer: dict, count_missing: bool = True) -> np.ndarray:
    """Per filtered candidate: its completion (or total) tokens; NaN where it cannot be counted."""
    from ..storage import meta_runs

    if budget_on not in BUDGET_ON:
        raise invalid([("budget_on", f"{budget_on!r}: choose completion or total")])
    counts = meta_runs.token_counts(ws, tokenizer["tokenizer_id"], tokenizer["max_seq_length"], ids)
    missing = [i for i in ids if i not in counts]
    if missing and count_missing:
        _count(ws, plan, missing, tokenizer)
        counts = meta_runs.token_counts(ws, tokenizer["tokenizer_id"], tokenizer["max_seq_length"], ids)
    column = f"{budget_on}_tokens"
    return np.array([counts[i][column] if i in counts else np.nan for i in ids], dtype=np.float64)


def _count(ws, plan, ids: list[str], tokenizer: dict) -> None:
    from ..models.loading import load_base_model
    from ..storage.lance_tables import CANDIDATES
    from ..models.tokenization import tokenizer_id
    from ..models.token_counts import record_token_counts
    from ..storage.meta_runs import run_model

    model = run_model(ws, plan.run_id, tokenizer["model"], tokenizer.get("model_sha256"))
    loaded = load_base_model(ws, model, record=False)
    if tokenizer["tokenizer_id"] and tokenizer_id(loaded.tokenizer) != tokenizer["tokenizer_id"]:
        raise LessdbError(f"model {tokenizer['model']} now has another tokenizer than the run's "
                          f"({tokenizer['tokenizer_id']}); its token counts cannot be completed")
    tokenizer["tokenizer_id"] = tokenizer_id(loaded.tokenizer)
    record_token_counts(ws, loaded.tokenizer, plan.pool, tokenizer["max_seq_length"],
                        plan.versions[CANDIDATES], ids, progress=True)
