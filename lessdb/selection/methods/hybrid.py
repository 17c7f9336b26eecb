"""hybrid: LESS's gradient score and BM25's lexical score of the same candidates, fused per subtask before the
max over subtasks (the math, and why its constants are what they are: selection/hybrid.py).

Parameters (`--method-param KEY=VALUE`, recorded with the selection, read back by a replay):
fusion = rrf (reciprocal-rank fusion, K = rrf_k = 60) | zscore (standardised scores, weight gradient_weight on
the gradient side and 1 − gradient_weight on BM25; 0.5). The gradient side is LESS with its own options
(--checkpoints, --val-aggregation, validation window); the lexical side is BM25 with its defaults.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from .. import fusion as hybrid
from . import Scores, register_method
from .gradient import gradient_scores, prepare
from .text import Bm25Params, bm25_scores


@dataclass(frozen=True)
class HybridParams:
    fusion: str = "rrf"            # rrf | zscore
    rrf_k: int = hybrid.RRF_K      # rrf: the constant K of 1/(K + rank) (Cormack et al. 2009)
    gradient_weight: float = 0.5   # zscore: weight of the gradient side (BM25 gets 1 − it)

    def problems(self) -> list[str]:
        out = []
        if self.fusion not in hybrid.FUSIONS:
            out.append(f"fusion={self.fusion!r}: choose one of {', '.join(hybrid.FUSIONS)}")
        if self.rrf_k < 0:
            out.append(f"rrf_k={self.rrf_k}: must be >= 0")
        if not 0 <= self.gradient_weight <= 1:
            out.append(f"gradient_weight={self.gradient_weight}: must be in [0, 1]")
        return out


def prepare_hybrid(ws, plan, cfg, run) -> None:
    prepare(ws, plan, cfg, run)                                   # checkpoints, weights, validation window
    plan.params.setdefault("bm25", asdict(Bm25Params()))          # the lexical side's parameters, recorded


@register_method("hybrid", params=HybridParams, needs_run=True, feature_kind="adam", feature_required=True,
                 prepare=prepare_hybrid, help="LESS and BM25 fused per subtask (reciprocal-rank fusion by default)")
def hybrid_scores(ws, plan, ids: list[str]) -> Scores:
    grad = gradient_scores(ws, plan, ids)
    known = {f.name for f in fields(Bm25Params)}
    bm25 = Bm25Params(**{k: v for k, v in plan.params["bm25"].items() if k in known})
    lex = bm25_scores(ws, replace(plan, method="bm25", method_params=bm25), ids)   # shares plan.params
    columns = [lex.subtasks.index(s) for s in grad.subtasks]    # the subtasks the gradient side kept
    valid = grad.valid & lex.valid
    p = plan.method_params
    fused = hybrid.fuse(grad.per_subtask, lex.per_subtask[:, columns], valid,
                        hybrid.fusion_rule(p.fusion, p.rrf_k, p.gradient_weight))
    unscorable = dict(grad.unscorable)
    unscorable["no_completion_text"] = lex.unscorable.get("no_completion_text", 0)
    return Scores(fused, valid & np.isfinite(fused).all(axis=1), grad.subtasks, unscorable)
