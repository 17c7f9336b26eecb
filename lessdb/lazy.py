"""Package attributes that load their module on first use (PEP 562), so that `lessdb --help` and the
listing commands do not import what only computing commands need (torch, lancedb, transformers)."""
from __future__ import annotations

import importlib
import sys


def lazy_exports(package: str, exports: dict[str, str]):
    """A module-level `__getattr__` for `package`: `exports` maps a name to the (relative) module holding it."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
