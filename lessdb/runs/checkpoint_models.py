"""Keep one loaded checkpoint model for the next load of another checkpoint of the same run, within a block.

`lessdb quickstart` runs featurize (checkpoints 1, 2) and then select (validation gradients at checkpoints 1, 2)
in one process: four loads of the same base model, each wrapped by peft with the same LoRA layout. Inside
`reuse_checkpoint_models()`, `models.load_checkpoint_model` keeps the model it built and, asked for another
checkpoint with the same base weights, device, dtype and adapter config, copies that checkpoint's adapter weights
into the kept model instead of loading the base model again (the values are the same either way: the adapter
file holds every LoRA matrix). Outside such a block nothing is kept, so a caller that holds two checkpoint models
at once (or trains one) never sees it change under it. One model is kept at a time.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager

_stack: list[dict] = []


@contextmanager
def reuse_checkpoint_models():
    slot: dict = {}
    _stack.append(slot)
    try:
        yield
    finally:
        _stack.remove(slot)
        slot.clear()
        gc.collect()


def kept(key: tuple):
    """The kept value for `key` inside a reuse block, else None (a different key drops the kept model)."""
    if not _stack:
        return None
    slot = _stack[-1]
    if slot.get("key") != key:
        slot.clear()
        return None
    return slot.get("value")


def keep(key: tuple, value) -> None:
    if _stack:
        _stack[-1].clear()
        _stack[-1].update(key=key, value=value)
