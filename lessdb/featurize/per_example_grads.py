"""Exact per-example gradients of every LoRA matrix from ONE batched forward+backward pass.

A peft LoRA linear computes `base(x) + lora_B(lora_A(dropout(x))) * scaling`. For a linear layer y = W u
(u: [B, T, in], y: [B, T, out]) the gradient of example b's loss with respect to W is
    ∂ℓ_b/∂W = Σ_t (∂ℓ_b/∂y[b, t]) u[b, t]ᵀ,
and because every example's loss depends only on its own row of the batch (right padding, causal attention,
per-example loss), ∂(Σ_b ℓ_b)/∂y[b] = ∂ℓ_b/∂y[b]. So a forward hook on each `lora_A`/`lora_B` nn.Linear
keeps its input u and registers a tensor hook on its output y; when the backward pass reaches y, one bmm over
the tokens gives the [B, out, in] per-example gradient. The LoRA scaling α/r is already inside ∂ℓ/∂y of
`lora_B` (it multiplies lora_B's output), and dropout must be off (eval mode), which `capture` checks.

The LoRA weights themselves are frozen while capturing (their batch-summed .grad would duplicate the work);
the backward pass is driven to the embedding output instead, which lies upstream of every LoRA branch.
Each per-example gradient is handed to a callback as soon as it exists, so Adam and the sketch run per
module while the gradient is cache-hot and the full P-vector is never materialised.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from ..models.completion_loss import completion_token_losses
from ..errors import LessdbError

IGNORE_INDEX = -100

GradCallback = Callable[[int, torch.Tensor], None]   # (parameter index in module order, [B, *shape] fp32)


@dataclass(frozen=True)
class LoraParam:
    index: int              # position in the flattened gradient (module order)
    name: str               # exactly as peft_model.named_parameters() spells it
    shape: tuple[int, ...]
    offset: int             # first coordinate of this matrix in the flattened gradient

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


def lora_params(model: nn.Module) -> list[LoraParam]:
    """The trainable LoRA matrices in `named_parameters()` order: the order of the flattened gradient.

    Only plain LoRA (lora_A / lora_B weights of nn.Linear) is supported; any other trainable parameter
    (biases, modules_to_save, DoRA magnitudes, embeddings) is refused rather than silently dropped."""
    params, offset = [], 0
    modules = dict(model.named_modules())
    for name, p in model.named_parameters():
        is_lora = ".lora_A." in name or ".lora_B." in name
        if not is_lora:
            if p.requires_grad:
                raise LessdbError(f"featurize supports plain LoRA adapters only; unsupported trainable parameter {name}")
            continue
        owner = modules.get(name.rsplit(".", 1)[0])
        if not (name.endswith(".weight") and isinstance(owner, nn.Linear) and owner.bias is None):
            raise LessdbError(f"featurize supports plain LoRA adapters only; unsupported trainable parameter {name}")
        params.append(LoraParam(len(params), name, tuple(p.shape), offset))
        offset += p.numel()
    if not params:
        raise LessdbError("the model has no LoRA parameters to take gradients of")
    return params


def completion_token_counts(labels: torch.Tensor) -> torch.Tensor:
    """Tokens that carry a loss per example: label positions 1.. (position 0 is never predicted)."""
    return (labels[:, 1:] != IGNORE_INDEX).sum(dim=1)


def per_example_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B] mean cross-entropy over each example's own completion tokens (next-token shift, -100 masked), from
    full logits. The reference the label-position path (`completion_token_losses`) is checked against."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    ce = nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                                     ignore_index=IGNORE_INDEX, reduction="none").view(shift_labels.shape)
    counts = (shift_labels != IGNORE_INDEX).sum(dim=1)
    return ce.sum(dim=1) / counts.clamp(min=1)


class Scratch:
    """Reusable buffers by (name, shape): the hot path allocates nothing per module, because fresh large
    allocations page-fault on every first touch (measured: 10-50x slower per module on this VM)."""

    def __init__(self):
        self._buffers: dict[tuple, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], device, dtype=torch.float32) -> torch.Tensor:
        key = (name, tuple(shape), str(device), dtype)
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._buffers[key] = torch.empty(shape, device=device, dtype=dtype)
        return buf


@contextmanager
def capture(model: nn.Module, params: list[LoraParam], on_grad: GradCallback,
            scratch: Scratch | None = None) -> Iterator[list]:
    """Within the block, a forward + `backward_to_inputs` calls `on_grad(index, g)` once per LoRA matrix
    with g = [B, *shape] fp32 per-example gradients. Yields a one-element list that receives the embedding
    output (the tensor the backward pass is driven to)."""
    if model.training:
        raise LessdbError("per-example LoRA gradients need eval mode (LoRA dropout must be off)")
    modules = dict(model.named_modules())
    handles, frozen, emb_box = [], [], []
    for p in params:
        module = modules[p.name.rsplit(".", 1)[0]]
        handles.append(module.register_forward_hook(_make_hook(p.index, on_grad, scratch)))
    for name, w in model.named_parameters():
        if w.requires_grad:
            frozen.append(w)
            w.requires_grad_(False)

    def embed_hook(_module, _inputs, output):
        output = output.detach().requires_grad_(True)
        emb_box.append(output)
        return output

    handles.append(model.get_input_embeddings().register_forward_hook(embed_hook))
    try:
        yield emb_box
    finally:
        for h in handles:
            h.remove()
        for w in frozen:
            w.requires_grad_(True)


def _make_hook(index: int, on_grad: GradCallback, scratch: Scratch | None):
    def forward_hook(_module, inputs, output):
        u = inputs[0].detach()

        def grad_hook(grad_out):
            # [B, out, T] @ [B, T, in] -> [B, out, in]; padded tokens have zero output gradient.
            a, b = grad_out.float().transpose(1, 2), u.float()
            if scratch is None:
                g = torch.bmm(a, b)
            else:
                g = torch.bmm(a, b, out=scratch.get("grad", (a.shape[0], a.shape[1], b.shape[2]), a.device))
            on_grad(index, g)

        output.register_hook(grad_hook)
    return forward_hook


def forward_backward(model: nn.Module, batch: dict[str, torch.Tensor], emb_box: list,
                     autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Run the batch through a model inside `capture`; returns the [B] per-example losses (detached)."""
    device = batch["input_ids"].device
    emb_box.clear()
    ctx = (torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else _nullcontext())
    with torch.enable_grad(), ctx:
        losses = completion_token_losses(model, batch["input_ids"], batch["attention_mask"],
                                         batch["labels"]).per_example_mean()
        torch.autograd.grad(losses.sum(), emb_box[0])
    return losses.detach()


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
