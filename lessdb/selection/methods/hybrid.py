"""hybrid: LESS's gradient score and BM25's lexical score of the same candidates, fused per subtask before the
max over subtasks (the math, and why its constants are what they are: selection/hybrid.py).

Parameters (`--method-param KEY=VALUE`, recorded with the selection, read back by a replay):
fusion = zscore (the default: standardised scores, weight gradient_weight on the gradient side and 1 −
gradient_weight on BM25; 0.5) | rrf (reciprocal-rank fusion, K = rrf_k = 60); signals = less,bm25 (default) or
less,bm25,rds+ (RDS+ as a third signal, from the run's base model as `--method rds+`). Hybrid selections recorded
before zscore became the default carry fusion=rrf in their parameters and replay with it. The gradient side is LESS with its own options
(--checkpoints, --val-aggregation, validation window); the lexical side is BM25 with its defaults.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from .. import fusion as hybrid
from ..config import invalid
from . import Scores, register_method
from .gradient import gradient_scores, prepare
from .text import Bm25Params, bm25_scores


@dataclass(frozen=True)
class HybridParams:
    fusion: str = "zscore"         # zscore | rrf (the default was rrf before round 3; see selection/fusion.py)
    rrf_k: int = hybrid.RRF_K      # rrf: the constant K of 1/(K + rank) (Cormack et al. 2009)
    gradient_weight: float = 0.5   # zscore: weight of the gradient side (BM25 gets 1 − it)
    signals: str = "less,bm25"     # or less,bm25,rds+

    @property
    def signal_names(self) -> tuple[str, ...]:
        return tuple(x.strip().lower() for x in self.signals.split(",") if x.strip())

    def problems(self) -> list[str]:
        out = []
        if self.fusion not in hybrid.FUSIONS:
            out.append(f"fusion={self.fusion!r}: choose one of {', '.join(hybrid.FUSIONS)}")
        if self.rrf_k < 0:
            out.append(f"rrf_k={self.rrf_k}: must be >= 0")
        if not 0 <= self.gradient_weight <= 1:
            out.append(f"gradient_weight={self.gradient_weight}: must be in [0, 1]")
        if not out:
            try:
                hybrid.fusion_rule(self.fusion, self.rrf_k, self.gradient_weight, self.signal_names)
            except ValueError as e:
                out.append(str(e))
        return out


def prepare_hybrid(ws, plan, cfg, run) -> None:
    p = plan.method_params
    prepare(ws, plan, cfg, run)                                   # checkpoints, weights, validation window
    plan.params.setdefault("bm25", asdict(Bm25Params()))          # the lexical side's parameters, recorded
    if "rds+" in p.signal_names:
        from .hidden import RdsPlusParams, prepare as prepare_hidden

        plan.params.setdefault("rds", asdict(RdsPlusParams()))   # what `--method rds+` records there
        prepare_hidden(ws, plan, cfg, run)                        # the RDS+ side's model and window, recorded


@register_method("hybrid", params=HybridParams, needs_run=True, feature_kind="adam", feature_required=True,
                 prepare=prepare_hybrid, help="LESS and BM25 (optionally RDS+) fused per subtask (z-scores by default)")
def hybrid_scores(ws, plan, ids: list[str]) -> Scores:
    grad = gradient_scores(ws, plan, ids)
    known = {f.name for f in fields(Bm25Params)}
    bm25 = Bm25Params(**{k: v for k, v in plan.params["bm25"].items() if k in known})
    lex = bm25_scores(ws, replace(plan, method="bm25", method_params=bm25), ids)   # shares plan.params
    columns = [lex.subtasks.index(s) for s in grad.subtasks]    # the subtasks the gradient side kept
    valid = grad.valid & lex.valid
    p = plan.method_params
    more = []
    if "rds+" in p.signal_names:
        from .hidden import RdsPlusParams, hidden_scores

        emb = hidden_scores(ws, replace(plan, method="rds+", method_params=RdsPlusParams()), ids)
        missing = [s for s in grad.subtasks if s not in emb.subtasks]
        if missing:
            raise invalid([("method_params", f"signals: RDS+ has no validation embedding for subtasks {missing}")])
        more.append(emb.per_subtask[:, [emb.subtasks.index(s) for s in grad.subtasks]])
        valid = valid & emb.valid
    fused = hybrid.fuse(grad.per_subtask, lex.per_subtask[:, columns], valid,
                        hybrid.fusion_rule(p.fusion, p.rrf_k, p.gradient_weight, p.signal_names), *more)
    unscorable = dict(grad.unscorable)
    unscorable["no_completion_text"] = lex.unscorable.get("no_completion_text", 0)
    return Scores(fused, valid & np.isfinite(fused).all(axis=1), grad.subtasks, unscorable)
