"""Connecting the driver to Ray (an optional dependency: `pip install 'lessdb[scale]'`)."""
from __future__ import annotations

import contextlib
import os
import sys

from ..errors import LessdbError
from ..settings import SettingError


@contextlib.contextmanager
def ray_session(address: str = "local", num_cpus: float | None = None):
    """`connect`, then disconnect at the end. Meanwhile stdout goes to stderr: Ray's driver prints cluster events
    ("(raylet) A worker died …") on stdout, which must stay clean for `--json`."""
    with contextlib.redirect_stdout(sys.stderr):
        ray = import_ray()
        owned = not ray.is_initialized()   # a caller's own Ray connection (tests, notebooks) stays up
        connect(address, num_cpus)
        try:
            yield ray
        finally:
            if owned:
                ray.shutdown()


def import_ray():
    try:
        import ray
    except ImportError:
        raise SettingError(None, [("engine", "ray needs Ray: pip install 'ray==2.60.0' (or bash .ci/setup-venv, "
                                             "which installs it)")]) from None
    return ray


def connect(address: str = "local", num_cpus: float | None = None):
    """Start a private single-machine cluster (`local`), or join a running one (`auto`, `HOST:PORT`,
    `ray://HOST:PORT`). Joining never passes resources (Ray refuses them for an existing cluster)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        if address == "local":
            # never "connect to an existing cluster" by accident through a stale address file (Ray's default)
            cpus = max(1, int(num_cpus or 1), os.cpu_count() or 1)
            ray.init(address="local", num_cpus=cpus, object_store_memory=256 << 20, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise SettingError(None, [("ray_address", f"{address}: cannot start or join a Ray cluster ({exc})")]) from None
    return ray


def remote_error(exc: Exception) -> Exception:
    """The user's error behind a Ray task failure (a LessdbError raised on a worker keeps its message)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, LessdbError):
        return cause
    return LessdbError(f"a Ray worker failed: {cause or exc}")
