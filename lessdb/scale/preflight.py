"""Before a Ray job writes anything: can the cluster run it at all? Fails in seconds, naming what is missing.

Without this, `featurize --gpus-per-worker 1` on a cluster without GPUs waited forever for actors Ray could never
place (and a Ctrl-C then left "interrupted" jobs beside an empty feature set), and a node whose `ray start` ran
without the bucket's AWS_* variables failed deep inside a worker. The checks, in order:
1. resources: the cluster's totals cover `workers` × (CPUs, GPUs) per worker, and at least one live node can
   hold one worker (`ray.cluster_resources()`, `ray.nodes()`);
2. every live node opens the table the job reads (a Lance dataset at the pinned version) with its own environment
   and runs the same lessdb version as the driver: one tiny task pinned to each node, answered within a timeout.
"""
from __future__ import annotations

import math

from ..errors import LessdbError

PROBE_TIMEOUT_S = 120.0   # a node that starts a worker process on a loaded machine takes seconds, not minutes


def resource_problems(workers: int, cpus_per_worker: float, gpus_per_worker: float, total: dict,
                      nodes: list[dict]) -> list[str]:
    """What the cluster lacks for `workers` actors of (cpus, gpus) each. `total`: ray.cluster_resources();
    `nodes`: each live node's resources (ray.nodes()[i]["Resources"])."""
    problems = []
    for kind, per in (("GPU", gpus_per_worker), ("CPU", cpus_per_worker)):
        need, have = workers * per, float(total.get(kind, 0.0))
        if per > 0 and have + 1e-9 < need:
            flag = "--gpus-per-worker" if kind == "GPU" else "CPUs per worker"
            fit = math.floor(have / per + 1e-9)
            fixes = ([f"lower --workers to {fit}"] if fit else []) + \
                (["use --gpus-per-worker 0 for CPU workers"] if kind == "GPU" else []) + \
                [f"add nodes with {kind}s (" + ("ray start --num-gpus N)" if kind == "GPU" else "ray start --num-cpus N)")]
            problems.append(f"the cluster has {have:g} {kind}s; --workers {workers} with {per:g} {flag} needs "
                            f"{need:g} ({', or '.join(fixes)})")
    if not problems and not any(float(n.get("GPU", 0.0)) + 1e-9 >= gpus_per_worker and
                                float(n.get("CPU", 0.0)) + 1e-9 >= cpus_per_worker for n in nodes):
        problems.append(f"no single node has the {cpus_per_worker:g} CPUs and {gpus_per_worker:g} GPUs one worker needs "
                        f"(nodes: {', '.join(_node_text(n) for n in nodes) or 'none alive'})")
    return problems


def _node_text(resources: dict) -> str:
    return f"{resources.get('CPU', 0):g} CPU / {resources.get('GPU', 0):g} GPU"


def probe_table(uri: str, storage_options: dict | None, version: int | None) -> dict:
    """Runs ON a node: open the Lance table at `version` with this node's environment; never raises."""
    import os
    import socket

    os.environ["LESSDB_WORKER"] = "1"
    from .. import __version__

    try:
        from .commits import open_dataset

        ds = open_dataset(uri, storage_options, version)
        return {"host": socket.gethostname(), "lessdb": __version__, "version": ds.version, "error": None}
    except Exception as exc:   # noqa: BLE001  (any failure to open is what the driver must report)
        return {"host": socket.gethostname(), "lessdb": __version__, "version": None,
                "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}


def check_cluster(ray, uri: str, storage_options: dict | None, version: int | None, *, workers: int = 0,
                  cpus_per_worker: float = 0.0, gpus_per_worker: float = 0.0, address: str = "",
                  timeout_s: float = PROBE_TIMEOUT_S) -> dict:
    """Raise a LessdbError naming every problem, or return {nodes, resources} of the cluster as checked."""
    from .. import __version__

    live = [n for n in ray.nodes() if n.get("Alive")]
    total = ray.cluster_resources()
    where = f"the Ray cluster at {address}" if address and address != "local" else "the Ray cluster"
    problems = resource_problems(workers, cpus_per_worker, gpus_per_worker, total,
                                 [n.get("Resources", {}) for n in live]) if workers else []
    if problems:
        raise LessdbError(f"{where} cannot run this job; nothing was written: " + "; ".join(problems))
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(probe_table)
    refs = {task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(uri, storage_options, version): n for n in live}
    done, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    for ref in pending:
        n = refs[ref]
        problems.append(f"node {n.get('NodeManagerAddress')} ({n['NodeID'][:8]}) did not answer within "
                        f"{timeout_s:.0f} s")
        ray.cancel(ref, force=True)
    for ref in done:
        n, got = refs[ref], ray.get(ref)
        name = f"node {n.get('NodeManagerAddress')} ({n['NodeID'][:8]}, host {got['host']})"
        if got["error"]:
            problems.append(f"{name} cannot open {uri} at version {version}: {got['error']} (are the tables' "
                            "credentials, e.g. AWS_*, exported in the environment `ray start` ran in on that node? "
                            "Ray's workers inherit it)")
        elif got["lessdb"] != __version__:
            problems.append(f"{name} runs lessdb {got['lessdb']}, the driver {__version__}: install the same "
                            "version on every node")
    if problems:
        raise LessdbError(f"{where} cannot run this job; nothing was written: " + "; ".join(problems))
    return {"nodes": len(live), "resources": {k: total[k] for k in ("CPU", "GPU") if k in total}}
