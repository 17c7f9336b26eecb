"""The featurize worker of the Ray engine: one checkpoint's model, Adam state and sketch per actor; runs the
local engine's unchanged `compute_features` on a work unit and writes Lance fragments. It never commits and never opens
the workspace (LESSDB_WORKER=1 makes `Workspace()` refuse), so the DuckDB catalogue has one writer: the driver.

A spec is a plain dict the driver builds (the checkpoint shipped through the object store with its sha256s,
see shipping.py; the feature set, table URIs and versions, the non-secret storage options); credentials come
from the worker's own AWS_* environment. Nothing in it names the driver's workspace, so workers on other nodes
need no shared filesystem (the tables' URI must reach them: S3, or a path every node mounts).
"""
from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np


_UNITS_DONE = 0   # units this worker process finished (fault injection counts them)


def kill_once(spec: dict, name: str = "worker") -> None:
    """Fault injection for the crash tests: spec["fault"] = "worker:N" (the driver's LESSDB_FAULT) kills this
    worker (kill -9) once, after the fragments of its N-th unit are written and before the driver hears of
    them ("select-worker:N": a `select --engine ray` task, after scoring its N-th fragment, before returning it);
    the marker file (LESSDB_FAULT_MARKER) makes it once per test, not once per restarted actor."""
    fault, marker = spec.get("fault") or "", spec.get("fault_marker")
    if not fault.startswith(f"{name}:") or not marker:
        return
    global _UNITS_DONE
    _UNITS_DONE += 1
    if _UNITS_DONE == int(fault.split(":")[1]) and not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


class FeaturizeWorker:
    """Plain class; the driver wraps it with `ray.remote(...)`. One actor serves every checkpoint of a featurize
    call, one at a time: each `run` carries its spec, and the actor (re)loads model, Adam state and sketch when the
    checkpoint changes, so an actor Ray restarted after a crash can never compute with the wrong checkpoint."""

    def __init__(self, threads: int = 1):
        os.environ["LESSDB_WORKER"] = "1"
        import torch

        torch.set_num_threads(int(threads))
        self.spec = None
        # the heavy imports now, while the driver still plans and loads its identity model (the actor pool is
        # created as soon as the cluster is checked), not at the first work unit
        import peft  # noqa: F401
        import transformers  # noqa: F401

        from . import compute  # noqa: F401  (torch and the compute modules)
        from ..runs.checkpoint_models import reuse_checkpoint_models

        # one base model per actor for the whole call: the next checkpoint swaps in its adapter weights only
        self._reuse = contextlib.ExitStack()
        self._reuse.enter_context(reuse_checkpoint_models())

    def _load(self, spec: dict) -> None:
        import ray

        from .compute import engine_for, load_checkpoint
        from ..models.loading import resolve_device
        from ..scale.commits import open_dataset
        from ..scale.shipping import materialize_checkpoint, models_dir

        device = resolve_device(spec["device"])
        shipment = spec["checkpoint"]   # files from the driver through the object store, never its paths
        ckpt = materialize_checkpoint(shipment, lambda: ray.get(shipment["files"]))
        facts = (spec["model_name"], spec["model_sha256"], ckpt)
        loaded = load_checkpoint(SimpleNamespace(models_dir=models_dir(spec)), spec["run_id"], spec["epoch"], device,
                       spec["compute"], facts=facts)
        self.tokenizer = loaded.base.tokenizer
        self.engine = engine_for(spec["info"], loaded, ckpt, device)
        self.node_id = ray.get_runtime_context().get_node_id()
        self.candidates = open_dataset(spec["candidates_uri"], spec["storage_options"], spec["candidates_version"])
        self.spec = dict(spec)

    def _current(self, spec: dict) -> dict:
        keys = ("table_uri", "epoch", "candidates_version")
        if self.spec is None or any(self.spec[k] != spec[k] for k in keys):
            self._load(spec)
        return self.spec

    def pid(self) -> int:
        return os.getpid()

    def run(self, spec: dict, unit_id: str, ids: list[str]) -> dict:
        """Compute one unit of `spec`'s checkpoint and write its rows as fragments: {unit_id, fragments, n_rows,
        exclusions, bytes, seconds, write_seconds, load_seconds}."""
        from lance.fragment import write_fragments

        from .compute import RowBuffer, compute_features
        from ..storage.candidates import read_candidates_from
        from ..storage.features import feature_rows

        t0 = time.monotonic()
        spec = self._current(spec)
        load_seconds = time.monotonic() - t0     # a checkpoint (re)load: once per actor and checkpoint
        table = read_candidates_from(self.candidates, ids, pool=spec["pool"], columns=["id", "messages"])
        items = list(zip(table.column("id").to_pylist(), table.column("messages").to_pylist()))
        out = RowBuffer()   # the whole unit stays in memory until its fragments are written
        compute_features(self.engine, self.tokenizer, items, spec["max_len"], spec["batch_size"], out, None)
        fragments, nbytes = [], 0
        t_write = time.monotonic()
        if out.ids:
            info = spec["info"]
            rows, nbytes = feature_rows(info.dim, info.dtype, spec["schema"], spec["epoch"], "candidate", out.ids,
                                        np.concatenate(out.vecs), np.concatenate(out.norms))
            fragments = write_fragments(rows, spec["table_uri"], schema=spec["schema"],
                                        storage_options=spec["storage_options"])
        write_seconds = time.monotonic() - t_write
        kill_once(self.spec)
        return {"unit_id": unit_id, "fragments": fragments, "n_rows": len(out.ids), "node_id": self.node_id,
                "exclusions": [list(e) for e in out.exclusions], "bytes": nbytes,
                "seconds": time.monotonic() - t0, "write_seconds": write_seconds, "load_seconds": load_seconds}
