"""Importing this module makes the storage and cluster packages look uninstalled for the rest of the process, as on a
GPU machine that has torch, transformers, peft and numpy and nothing else: `import lancedb` raises
ModuleNotFoundError and `importlib.util.find_spec("lancedb")` is None (every finder on sys.meta_path is wrapped,
so no later finder can find them either). Used by tests/test_gpu_paths.py in subprocesses."""
from __future__ import annotations

import sys

BLOCKED = frozenset({"lancedb", "lance", "duckdb", "pyarrow", "rank_bm25", "ray", "pandas", "click", "datasketch"})


class _Hide:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        find = getattr(self.finder, "find_spec", None)
        return find(name, path, target) if find is not None else None

    def __getattr__(self, attr):
        return getattr(self.finder, attr)


already = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
if already:
    raise RuntimeError(f"already imported before the block: {already}")
sys.meta_path[:] = [f if isinstance(f, _Hide) else _Hide(f) for f in sys.meta_path]
