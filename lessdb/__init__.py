"""lessdb: LESS data selection (Xia et al., ICML 2024) as a versioned LanceDB + DuckDB toolkit.

Pipeline: ingest -> warmup -> featurize -> select (-> train/eval). Storage lives in `lessdb.storage`,
the command line in `lessdb.cli`; everything a command does is a function here first.
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("lessdb")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+src"

from .errors import InputError, LessdbError  # noqa: E402
from .lazy import lazy_exports  # noqa: E402

_exports = lazy_exports(__name__, {"Workspace": ".workspace"})   # DuckDB and pyarrow load on first use


def __getattr__(name: str):
    if name == "config":   # every command's settings, `help(lessdb.config.SelectConfig)` after a plain `import lessdb`
        from importlib import import_module

        return import_module(".config", __name__)
    return _exports(name)


__all__ = ["Workspace", "LessdbError", "InputError", "config", "__version__"]
