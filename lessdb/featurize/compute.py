"""Computing features, the part every featurize path shares: the local engine (`job.featurize_run`), the Ray
workers (`ray_worker`), validation features (`validation`) and stored embeddings (`embeddings`).

- `load_checkpoint`: a run's checkpoint as a model with its LoRA parameters, in the compute precision;
- `engine_for`: that checkpoint's feature engine (its Adam state for grad_kind adam, the feature set's sketch);
- `compute_features`: encode examples, exclude those without completion tokens, batch by length, compute, and
  hand ids, vectors, raw norms and exclusions to a `RowBuffer` (kept in memory) or a `FeatureWriter` (commits).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import faults
from ..errors import LessdbError
from ..models.batching import batches_by_length, token_budget
from ..progress import Progress
from .adam import AdamState, GradTransform
from .engine import FeatureEngine
from .per_example_grads import lora_params
from .precision import weights_and_autocast
from .sketch import make_sketch

if TYPE_CHECKING:   # storage (pyarrow, LanceDB, DuckDB) only where rows are written: a GPU box may lack them
    from ..storage import features as fstore


EXCLUDED_NO_COMPLETION = "no completion token after truncation to {n} tokens"
EXCLUDED_ZERO = "zero or non-finite gradient"


@dataclass
class CheckpointModel:
    """A checkpoint loaded for features: the peft model (eval mode), its base model, its LoRA parameters in
    module order and the autocast dtype of a CPU bf16 computation (None: none)."""
    model: torch.nn.Module
    base: object           # models.loading.LoadedModel
    params: list
    autocast: torch.dtype | None


def load_checkpoint(ws, run_id: str, epoch: int, device: str, compute: str,
                    facts: tuple | None = None) -> CheckpointModel:
    """`facts` = (model name, model sha256, CheckpointInfo): load without reading the catalogue (`ws` then
    only needs `models_dir`; distributed workers)."""
    from ..runs.checkpoint_models import load_checkpoint_model, load_checkpoint_model_from

    dtype, autocast = weights_and_autocast(device, compute)   # one rule per device (precision.py)
    if facts is None:
        peft_model, base = load_checkpoint_model(ws, run_id, epoch, device=device, dtype=dtype)
    else:
        peft_model, base = load_checkpoint_model_from(ws, run_id, *facts, device=device, dtype=dtype)
    peft_model.eval()
    return CheckpointModel(peft_model, base, lora_params(peft_model), autocast)


def check_same_model(info: fstore.FeatureSetInfo, loaded: CheckpointModel) -> None:
    order = [[p.name, list(p.shape)] for p in loaded.params]
    if order != info.module_order or loaded.base.sha256 != info.model_sha256:
        raise LessdbError(f"feature set {info.feature_set_id}: the checkpoint's model or LoRA layout differs from "
                          "the one the feature set was made with")


def sketch_for(info: fstore.FeatureSetInfo, loaded: CheckpointModel, device: str):
    return make_sketch(info.sketch_kind, [p.numel for p in loaded.params], info.dim, info.sketch_seed, device,
                       info.sketch_nnz)


def _optimizer_state(ckpt) -> AdamState:
    from ..runs.checkpoints import load_optimizer_state

    return AdamState.from_dict(load_optimizer_state(ckpt.path))


def engine_for(info: fstore.FeatureSetInfo, loaded: CheckpointModel, ckpt, device: str,
               sketch=None) -> FeatureEngine:
    """The feature engine of one checkpoint: its Adam state (for grad_kind adam), the set's sketch."""
    check_same_model(info, loaded)
    sketch = sketch or sketch_for(info, loaded, device)
    state = _optimizer_state(ckpt) if info.grad_kind == "adam" else None
    transform = GradTransform(info.grad_kind, loaded.params, state, info.bias_correction, device)
    return FeatureEngine(loaded.model, loaded.params, transform, sketch, loaded.autocast)


# -- computing and handing on -------------------------------------------------------------------------------
class RowBuffer:
    """What `compute_features` hands on: computed ids, vectors, raw norms and exclusions, kept until taken. A
    `FeatureWriter` commits it every few rows; a Ray worker keeps a whole work unit in it (ray_worker.py)."""

    def __init__(self):
        self.ids: list[str] = []
        self.vecs: list[np.ndarray] = []
        self.norms: list[np.ndarray] = []
        self.exclusions: list[tuple[str, str]] = []

    def add(self, ids, vecs, norms, exclusions) -> None:
        self.ids.extend(ids)
        if len(ids):
            self.vecs.append(vecs)
            self.norms.append(norms)
        self.exclusions.extend(exclusions)


class FeatureWriter(RowBuffer):
    """Buffers computed vectors and their raw norms and commits them (Lance insert-if-absent, then DuckDB
    progress)."""

    def __init__(self, ws, info, epoch: int, role: str, job_id: str, commit_rows: int, commit_seconds: float):
        super().__init__()
        self.ws, self.info, self.epoch, self.role, self.job_id = ws, info, epoch, role, job_id
        self.commit_rows, self.commit_seconds = commit_rows, commit_seconds
        self.last = time.monotonic()
        self.t0 = self.last
        self.written = self.excluded = self.bytes = 0
        self.version = None

    def add(self, ids, vecs, norms, exclusions) -> None:
        super().add(ids, vecs, norms, exclusions)
        if len(self.ids) + len(self.exclusions) >= self.commit_rows or \
                time.monotonic() - self.last >= self.commit_seconds:
            self.flush()

    def flush(self) -> None:
        if not self.ids and not self.exclusions:
            return
        from ..storage import features as fstore
        from ..storage import meta_features

        nbytes = 0
        if self.ids:
            self.version, _, nbytes = fstore.write_features(self.ws, self.info, self.epoch, self.role, self.ids,
                                                            np.concatenate(self.vecs), np.concatenate(self.norms))
            faults.point(f"{self.role if self.role == 'validation' else 'featurize'}.after_lance_write")
        now = time.monotonic()
        excl = [(self.info.feature_set_id, self.role, self.epoch, e, r) for e, r in self.exclusions]
        meta_features.record_progress(self.ws, self.job_id, done=len(self.ids), excluded=len(excl),
                                      seconds=now - self.last, bytes_written=nbytes, lance_version=self.version,
                                      exclusions=excl)
        self.written += len(self.ids)
        self.excluded += len(excl)
        self.bytes += nbytes
        self.ids, self.vecs, self.norms, self.exclusions, self.last = [], [], [], [], now


def compute_features(engine: FeatureEngine, tokenizer, items: list[tuple[str, list[dict]]], max_len: int,
                     batch_size: int, writer: RowBuffer, progress: Progress | None, truncation: str = "right") -> None:
    """Encode, exclude the examples without completion tokens, batch by length, compute, hand to writer."""
    from ..models.tokenization import collate, encode_window, pad_token_id

    pad = pad_token_id(tokenizer)
    encoded, excluded = [], []
    for example_id, messages in items:
        enc = encode_window(tokenizer, messages, max_len, truncation)
        if sum(1 for x in enc.labels[1:] if x != -100) == 0:
            excluded.append((example_id, EXCLUDED_NO_COMPLETION.format(n=max_len)))
        else:
            encoded.append((example_id, enc))
    if excluded:
        writer.add([], None, None, excluded)
        if progress:
            progress.update(len(excluded))
    # length-sorted batches waste little on padding; results do not depend on the grouping
    encoded.sort(key=lambda pair: (len(pair[1].input_ids), pair[0]))
    for chunk in batches_by_length(encoded, [len(e.input_ids) for _, e in encoded], batch_size,
                                   token_budget(engine.sketch.device)):
        ok, vecs, norms = engine.features(collate([e for _, e in chunk], pad)).to_host()
        ids = [eid for (eid, _), good in zip(chunk, ok) if good]
        bad = [(eid, EXCLUDED_ZERO) for (eid, _), good in zip(chunk, ok) if not good]
        writer.add(ids, vecs[ok], norms[ok], bad)
        if progress:
            progress.update(len(chunk))
