"""One loaded checkpoint model reused across checkpoints within `reuse_checkpoint_models()` (the quickstart's
featurize + select): the same vectors as loading each checkpoint afresh, and nothing kept outside the block."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from lessdb import Workspace
from lessdb.featurize import featurize_run, validation_features
from lessdb.runs.checkpoint_models import load_checkpoint_model, reuse_checkpoint_models
from lessdb.storage.features import iter_feature_batches
from test_featurize_jobs import _config, _records, template, ws_run  # noqa: F401  (tiny warmup run, 2 checkpoints)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _vectors(ws, fsid, epoch, role="candidate"):
    return {i: v for ids, vs in iter_feature_batches(ws, fsid, epoch, role) for i, v in zip(ids, vs)}


def test_reuse_gives_the_same_vectors_as_fresh_loads(ws_run):
    ws, run_id = ws_run
    shutil.copytree(ws.root, ws.root.parent / "ws-reuse")
    ws_b = Workspace.open(ws.root.parent / "ws-reuse")
    val = [(f"v{k}", r["messages"]) for k, r in enumerate(_records(7, 3))]
    fresh = featurize_run(ws, _config(run_id))
    fresh_val = {e: validation_features(ws, fresh.feature_set_id, e, val) for e in (1, 2)}
    with reuse_checkpoint_models():
        reused = featurize_run(ws_b, _config(run_id))
        reused_val = {e: validation_features(ws_b, reused.feature_set_id, e, val) for e in (1, 2)}
    assert reused.feature_set_id == fresh.feature_set_id
    for epoch in (1, 2):
        a, b = _vectors(ws, fresh.feature_set_id, epoch), _vectors(ws_b, reused.feature_set_id, epoch)
        assert a.keys() == b.keys() and len(a) > 0
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
        for k in fresh_val[epoch]:
            np.testing.assert_array_equal(fresh_val[epoch][k], reused_val[epoch][k])


def test_loads_inside_a_block_share_one_model_with_each_checkpoints_weights(ws_run):
    ws, run_id = ws_run
    m1, _ = load_checkpoint_model(ws, run_id, 1)
    m2, _ = load_checkpoint_model(ws, run_id, 2)
    assert m1 is not m2   # outside a block: nothing kept
    want = {n: p.detach().clone() for n, p in m2.named_parameters() if ".lora_" in n}
    with reuse_checkpoint_models():
        a, _ = load_checkpoint_model(ws, run_id, 1)
        b, _ = load_checkpoint_model(ws, run_id, 2)
        assert a is b and not a.training
        got = {n: p for n, p in b.named_parameters() if ".lora_" in n}
        assert got.keys() == want.keys()
        assert all(torch.equal(got[n], want[n]) and got[n].requires_grad for n in want)
        assert not any(p.requires_grad for n, p in b.named_parameters() if ".lora_" not in n)
    c, _ = load_checkpoint_model(ws, run_id, 2)
    assert c is not b
