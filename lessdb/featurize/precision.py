"""Which precision a featurize pass runs at, per device — one rule for every engine (local, Ray) and for
bench/gpu_check.py, which measures exactly what featurize does.

- CUDA: the model's weights in bfloat16 (or float32), no autocast. peft keeps the LoRA matrices in float32
  (`autocast_adapter_dtype`), so the LoRA branch, its inputs and its output gradients are float32 already.
- CPU: float32 weights; bfloat16 GEMMs through autocast (CPUs without bf16 units would only slow down on bf16
  weights), LoRA weights and gradients stay float32.
Either way the per-example gradients, the Adam direction, the sketch and the norms are float32: the gradient
hook computes them with an explicit fp32 output buffer (autocast never rewrites an `out=` op).
"""
from __future__ import annotations

import torch


def resolve_compute_dtype(compute_dtype: str, device: str) -> str:
    """The forward/backward precision of `--precision auto`: bfloat16 on CUDA, float32 elsewhere; otherwise the named precision."""
    if compute_dtype == "auto":
        return "bfloat16" if str(device).startswith("cuda") else "float32"
    return compute_dtype


def weights_and_autocast(device: str, compute: str) -> tuple[torch.dtype, torch.dtype | None]:
    """(dtype of the base model's weights, autocast dtype or None) for a featurize pass at `compute`."""
    bf16 = compute == "bfloat16"
    if str(device).startswith("cuda"):
        return (torch.bfloat16 if bf16 else torch.float32), None
    return torch.float32, (torch.bfloat16 if bf16 else None)
