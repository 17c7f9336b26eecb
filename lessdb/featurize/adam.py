"""Gradient transforms applied before the sketch: Adam's update direction Γ (LESS §3.1), SGD, SignGD.

    m' = β1·m + (1−β1)·g,   v' = β2·v + (1−β2)·g²,   Γ = m̂' / √(v̂' + ε)
with m̂' = m'/(1−β1ᵗ), v̂' = v'/(1−β2ᵗ) and t the checkpoint's optimizer step (the paper). The reference
implementation omits the bias correction (`bias_correction=False`). ε sits inside the root in both.

For speed the per-module constants are folded once per checkpoint (`AdamSlice`):
    Γ = (M + a·g) · rsqrt(V + c·g²),  M = β1·m/(1−β1ᵗ), a = (1−β1)/(1−β1ᵗ), V = β2·v/(1−β2ᵗ) + ε, c = (1−β2)/(1−β2ᵗ)
which is algebraically the formula above; `adam_direction` is the direct, unfolded formula (the test oracle).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import LessdbError

from ..choices import GRAD_KINDS  # noqa: E402  (one source for --help)


@dataclass(frozen=True)
class AdamState:
    """An AdamW checkpoint's moments keyed by parameter name (as `runs.checkpoints.load_optimizer_state` returns)."""
    exp_avg: dict[str, torch.Tensor]
    exp_avg_sq: dict[str, torch.Tensor]
    step: int
    beta1: float
    beta2: float
    eps: float

    @classmethod
    def from_dict(cls, state: dict) -> "AdamState":
        b1, b2 = state["betas"]
        return cls(state["exp_avg"], state["exp_avg_sq"], int(state["step"]), float(b1), float(b2),
                   float(state["eps"]))


def adam_direction(g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, step: int, beta1: float, beta2: float,
                   eps: float, bias_correction: bool = True) -> torch.Tensor:
    """Γ = m̂'/√(v̂'+ε), written exactly as the paper does (reference for tests; not the fast path)."""
    m_new = beta1 * m + (1 - beta1) * g
    v_new = beta2 * v + (1 - beta2) * g * g
    if bias_correction:
        m_new = m_new / (1 - beta1 ** step)
        v_new = v_new / (1 - beta2 ** step)
    return m_new / torch.sqrt(v_new + eps)


@dataclass
class AdamSlice:
    """Folded constants of one parameter: Γ = (M + a·g) · rsqrt(V + c·g²)."""
    M: torch.Tensor
    V: torch.Tensor
    a: float
    c: float

    @classmethod
    def build(cls, m: torch.Tensor, v: torch.Tensor, step: int, beta1: float, beta2: float, eps: float,
              bias_correction: bool, device) -> "AdamSlice":
        if bias_correction:
            if step < 1:
                raise LessdbError(f"Adam bias correction needs a checkpoint step >= 1, got {step}")
            k1, k2 = 1.0 / (1.0 - beta1 ** step), 1.0 / (1.0 - beta2 ** step)
        else:
            k1 = k2 = 1.0
        m = m.to(device=device, dtype=torch.float64)
        v = v.to(device=device, dtype=torch.float64)
        M = (beta1 * k1 * m).float().reshape(-1)
        V = (beta2 * k2 * v + eps).float().reshape(-1)
        return cls(M, V, (1 - beta1) * k1, (1 - beta2) * k2)

    def apply(self, g: torch.Tensor, den: torch.Tensor | None = None) -> torch.Tensor:
        """g: [B, n] fp32 → Γ [B, n] (g is overwritten; it is scratch of the caller). `den`: optional
        preallocated [B, n] buffer."""
        den = torch.mul(g, g) if den is None else torch.mul(g, g, out=den)
        den.mul_(self.c).add_(self.V).rsqrt_()
        g.mul_(self.a).add_(self.M)
        g.mul_(den)
        return g


class GradTransform:
    """Maps each parameter's per-example gradient [B, n] to the vector that is sketched."""

    def __init__(self, kind: str, params, state: AdamState | None = None, bias_correction: bool = True,
                 device="cpu"):
        if kind not in GRAD_KINDS:
            raise LessdbError(f"unknown gradient kind {kind!r}; choose one of {', '.join(GRAD_KINDS)}")
        self.kind = kind
        self.slices: list[AdamSlice] = []
        if kind == "adam":
            if state is None:
                raise LessdbError("gradient kind 'adam' needs the checkpoint's optimizer state")
            for p in params:
                if p.name not in state.exp_avg or p.name not in state.exp_avg_sq:
                    raise LessdbError(f"optimizer state has no moments for parameter {p.name}")
                m, v = state.exp_avg[p.name], state.exp_avg_sq[p.name]
                if tuple(m.shape) != p.shape or tuple(v.shape) != p.shape:
                    raise LessdbError(f"optimizer moments of {p.name} have shape {tuple(m.shape)}, "
                                      f"the parameter {p.shape}")
                self.slices.append(AdamSlice.build(m, v, state.step, state.beta1, state.beta2, state.eps,
                                                   bias_correction, device))

    def __call__(self, index: int, g: torch.Tensor, den: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "sgd":
            return g
        if self.kind == "sign":
            return g.sign_()
        return self.slices[index].apply(g, den)
