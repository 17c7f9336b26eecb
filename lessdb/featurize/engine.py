"""One batch of encoded examples → L2-normalised sketched gradient features, in one forward+backward pass.

Per LoRA matrix, inside the backward pass: per-example gradient (bmm over tokens) → transform (Adam Γ, SGD
or sign) → sketch, accumulated into a [B, d] buffer; then each row is L2-normalised. The [B, P] gradient is
never materialised, so memory is bounded by the batch's activations plus one module's [B, n] gradient.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .adam import GradTransform
from .per_example_grads import LoraParam, Scratch, capture, completion_token_counts, forward_backward
from ..models.tokenization import to_device
from .sketch import Sketch


@dataclass
class BatchFeatures:
    vectors: torch.Tensor      # [B, d] float32, rows L2-normalised (rows with ok=False are zeros)
    ok: torch.Tensor           # [B] bool: finite, nonzero norm and at least one completion token
    losses: torch.Tensor       # [B] mean completion-token loss
    norms: torch.Tensor        # [B] norm of the sketched vector before normalisation (stored with the vector:
                               # vectors × norms is the raw sketch the unnormalised ablation scores)

    def to_host(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ok [B] bool, vectors [B, d] float32, norms [B] float32) as numpy, in ONE device→host copy: a GPU
        waits for the batch once, not once per tensor."""
        packed = torch.cat([self.vectors, self.norms.float()[:, None], self.ok.float()[:, None]], dim=1)
        host = packed.cpu().numpy()
        return host[:, -1] > 0.5, np.ascontiguousarray(host[:, :-2]), np.ascontiguousarray(host[:, -2])


class FeatureEngine:
    def __init__(self, model, params: list[LoraParam], transform: GradTransform, sketch: Sketch,
                 autocast_dtype: torch.dtype | None = None):
        self.model, self.params, self.transform, self.sketch = model, params, transform, sketch
        self.autocast_dtype = autocast_dtype
        self._out: torch.Tensor | None = None
        self.scratch = Scratch()

    def _on_grad(self, index: int, g: torch.Tensor) -> None:
        x = g.reshape(g.shape[0], -1)
        den = self.scratch.get("den", tuple(x.shape), x.device) if self.transform.kind == "adam" else None
        x = self.transform(index, x, den)
        self.sketch.add(self._out, index, x)

    def features(self, batch: dict[str, torch.Tensor]) -> BatchFeatures:
        batch = to_device(batch, self.sketch.device)
        n = batch["input_ids"].shape[0]
        self._out = self.sketch.new_output(n)
        with capture(self.model, self.params, self._on_grad, self.scratch) as emb_box:
            losses = forward_backward(self.model, batch, emb_box, self.autocast_dtype)
        out, self._out = self._out, None
        norms = out.norm(dim=1)
        ok = (completion_token_counts(batch["labels"]) > 0) & torch.isfinite(norms) & (norms > 0)
        out = torch.where(ok[:, None], out / norms.clamp(min=1e-30)[:, None], torch.zeros_like(out))
        return BatchFeatures(out, ok, losses, norms)
