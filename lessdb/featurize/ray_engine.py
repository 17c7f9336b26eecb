"""`lessdb featurize --engine ray`: the driver plans, Ray actors compute and write fragments, the driver commits.

Per checkpoint (epoch):
1. Reconcile: Lance commits of this job that a killed driver made but did not record in DuckDB are recorded
   now, from the Lance transaction files (uuid, units, rows, exclusions).
2. Plan: to-do = this shard's ids − stored (latest version) − excluded; the same rule as the local engine. Take
   the lease on the job row (one driver per feature set, role and checkpoint).
3. Cut the to-do list into work units of `unit_rows` ids (the local engine's read chunk, so both engines form
   exactly the same batches and store bit-identical vectors). The units of every checkpoint stream, in checkpoint
   order, to one actor pool (no barrier between checkpoints); an actor holds one checkpoint's model, Adam state
   and sketch at a time (swapping the adapter when its next unit is another checkpoint's), runs
   `compute_features` and writes Lance fragments only.
4. Every `commit_units` finished units (or `commit_seconds`), commit their fragments as ONE Lance Append with its
   own transaction uuid (looked up before any retry), then record commit, counters and exclusions in DuckDB.
5. Check that every key is stored once, then mark the job complete and release the lease.

A kill -9 of the driver loses at most the uncommitted batch (rerun recomputes it); a killed worker is restarted
by Ray, which retries its unit; fragments of attempts that never got committed are invisible to readers and are
removed by `lessdb vacuum` (only when no job holds a lease).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import time

from ..errors import LessdbError
from ..progress import Progress
from ..storage import meta_features, meta_leases, meta_scale
from ..storage import features as fstore
from ..storage.lance_tables import CANDIDATES
from ..scale import commits
from ..scale.cluster import import_ray, ray_session, remote_error
from ..scale.options import RayOptions
from ..scale.shipping import pack_checkpoint


def _driver_fault(n_commits: int) -> None:
    """LESSDB_FAULT=driver:K: kill -9 the driver right after its K-th Lance commit, before DuckDB hears of it."""
    fault = os.environ.get("LESSDB_FAULT", "")
    if fault.startswith("driver:") and n_commits == int(fault.split(":")[1]):
        os.kill(os.getpid(), signal.SIGKILL)


def reconcile(ws, info, job_id: str, owner: str) -> int:
    """Record commits of `job_id` that are in Lance but not in DuckDB (driver killed in between)."""
    recorded = meta_scale.recorded_commits(ws, job_id)
    rows = meta_scale.commit_rows(ws, job_id)
    after = max((r["lance_version"] for r in rows), default=0)
    found = commits.job_transactions(ws.lance.table_uri(info.lance_table), job_id, after, ws.lance.storage_options)
    n = 0
    for t in found:
        if t["txn_uuid"] in recorded:
            continue
        role, epoch = job_id.split("/")[1], int(job_id.split("/")[2])
        excl = [(info.feature_set_id, role, epoch, e, r) for e, r in t["exclusions"]]
        meta_scale.record_commit(ws, {**t, "job_id": job_id, "feature_set_id": info.feature_set_id, "role": role,
                                      "epoch": epoch, "engine": "ray", "n_excluded": len(excl), "recovered": True},
                                 owner, 0.0, 0, excl)
        n += 1
    return n


def _spec(ws, info, plan, cfg, opts: RayOptions, epoch: int, schema, shipment: dict, private: bool) -> dict:
    run = plan.run
    return {"run_id": cfg.run_id, "epoch": epoch, "model_name": run["model_name"], "model_sha256": run["model_sha256"],
            "checkpoint": shipment, "info": info,
            # a private cluster this driver started (so on this machine) may reuse the workspace's converted base
            # model; any other cluster's workers convert theirs from the model packages on their node (shipping.py)
            "models_dir": str(ws.models_dir) if private else None,
            "device": "cuda" if opts.gpus_per_worker > 0 else "cpu", "compute": plan.compute,
            "threads": max(1, int(opts.cpus_per_worker)), "max_len": plan.max_len, "batch_size": cfg.batch_size,
            "pool": plan.pool, "candidates_uri": ws.lance.table_uri(CANDIDATES), "candidates_version": plan.cand_version,
            "table_uri": ws.lance.table_uri(info.lance_table), "schema": schema,
            # non-secret options only (tables.json); credentials come from the workers' AWS_* environment
            "storage_options": ws.lance.storage_options,
            "fault": os.environ.get("LESSDB_FAULT"), "fault_marker": os.environ.get("LESSDB_FAULT_MARKER")}


class _Committer:
    """Buffers finished units and commits them (Lance first, then DuckDB)."""

    def __init__(self, ws, info, job_id: str, epoch: int, owner: str, opts: RayOptions):
        self.ws, self.info, self.job_id, self.epoch, self.owner, self.opts = ws, info, job_id, epoch, owner, opts
        self.pending: list[dict] = []
        self.last = time.monotonic()
        self.n_commits = self.written = self.excluded = self.bytes = 0
        self.version = None
        self.nodes: set[str] = set()   # Ray nodes whose actors wrote this job's rows
        # where the time went (bench/scale.py): worker compute and fragment writes, driver commits
        self.timing = {"worker_seconds": 0.0, "model_load_seconds": 0.0, "fragment_write_seconds": 0.0,
                       "commit_seconds": 0.0}

    def add(self, result: dict) -> None:
        self.pending.append(result)
        if result["n_rows"]:
            self.nodes.add(result["node_id"])
        self.timing["worker_seconds"] += result["seconds"]
        self.timing["fragment_write_seconds"] += result["write_seconds"]
        self.timing["model_load_seconds"] += result["load_seconds"]
        if len(self.pending) >= self.opts.commit_units or time.monotonic() - self.last >= self.opts.commit_seconds:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        t0 = time.monotonic()
        batch, self.pending = self.pending, []
        frags = [f for r in batch for f in r["fragments"]]
        excl = [tuple(e) for r in batch for e in r["exclusions"]]
        n_rows = sum(r["n_rows"] for r in batch)
        units = ",".join(r["unit_id"] for r in batch)
        commit = None
        if frags:
            props = {"lessdb.job": self.job_id, "lessdb.engine": "ray", "lessdb.units": units,
                     "lessdb.rows": n_rows, "lessdb.excluded": json.dumps(excl)}
            self.n_commits += 1
            n = self.n_commits
            commit = commits.commit_append(self.ws.lance.table_uri(self.info.lance_table), frags, props,
                                           self.ws.lance.storage_options, fault=lambda: _driver_fault(n))
            self.version = commit["lance_version"]
        now = time.monotonic()
        rows = [(self.info.feature_set_id, "candidate", self.epoch, e, r) for e, r in excl]
        nbytes = sum(r["bytes"] for r in batch)
        if commit is not None:
            meta_scale.record_commit(self.ws, {**commit, "job_id": self.job_id, "feature_set_id": self.info.feature_set_id,
                                               "role": "candidate", "epoch": self.epoch, "engine": "ray",
                                               "units": units, "n_rows": n_rows, "n_excluded": len(rows),
                                               "n_fragments": len(frags), "recovered": False},
                                     self.owner, now - self.last, nbytes, rows)
        else:   # only exclusions: nothing to commit to Lance
            meta_features.record_progress(self.ws, self.job_id, done=0, excluded=len(rows), seconds=now - self.last,
                                          bytes_written=0, lance_version=None, exclusions=rows)
        self.written += n_rows
        self.excluded += len(rows)
        self.bytes += nbytes
        self.last = now
        self.timing["commit_seconds"] += time.monotonic() - t0


def _check_unique(ws, info, epoch: int) -> None:
    keys = ws.lance.dataset(info.lance_table).to_table(
        columns=["key"], filter=f"epoch = {int(epoch)} AND role = 'candidate'").column("key")
    if len(keys) != len(set(keys.to_pylist())):
        raise LessdbError(f"feature table {info.lance_table} holds {len(keys) - len(set(keys.to_pylist()))} duplicate "
                          f"rows for checkpoint {epoch}; the job is left running (not marked complete)")


def _run_units(ray, actors, work: list[tuple], committers: list, progress: Progress) -> None:
    """Stream every (spec_ref, committer, unit_id, ids) of `work` to the actor pool, keeping each actor busy; a
    finished unit goes to its checkpoint's committer (one of `committers`, all flushed at the end or on an error)."""
    queue = list(work)
    in_flight = {}
    free = list(actors)
    while queue or in_flight:
        while queue and free:
            actor = free.pop()
            spec_ref, committer, unit_id, ids = queue.pop(0)
            in_flight[actor.run.remote(spec_ref, unit_id, ids)] = (actor, committer, len(ids))
        done, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in done:
            actor, committer, n = in_flight.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:   # an error in our code on the worker: commit what finished, then stop
                for c in committers:
                    c.flush()
                raise remote_error(exc) from None
            free.append(actor)
            committer.add(result)
            progress.update(n)
    for c in committers:
        c.flush()


def _actors(ray, opts: RayOptions, n_units: int, stack) -> list:
    """The actor pool of one featurize call (each actor loads one checkpoint at a time); killed at the end."""
    from .ray_worker import FeaturizeWorker

    cls = ray.remote(FeaturizeWorker)
    threads = max(1, int(opts.cpus_per_worker))
    actors = [cls.options(num_cpus=opts.cpus_per_worker, num_gpus=opts.gpus_per_worker, max_restarts=-1,
                          max_task_retries=-1).remote(threads) for _ in range(max(1, min(opts.workers, n_units)))]
    stack.callback(lambda: [ray.kill(a) for a in actors])
    return actors


def featurize_ray(ws, cfg, opts: RayOptions):
    """The Ray engine of `featurize_run` (same arguments plus RayOptions; same summary)."""
    from .compute import load_checkpoint
    from .job import FeaturizeSummary, ensure_feature_set
    from .planning import plan_run, unit_rows

    opts.validate()
    t_start = time.monotonic()
    device = "cuda" if opts.gpus_per_worker > 0 else "cpu"
    plan = plan_run(ws, cfg, device=device)
    size = opts.unit_rows or unit_rows(cfg)
    with contextlib.ExitStack() as stack:
        # the cluster first: one that cannot run the job is refused in seconds, before any row is written
        ray, connect_s, private = _connect_checked(ws, opts, plan, stack) if plan.mine else (None, 0.0, False)
        # the actors start now: their imports overlap the driver's identity load and planning
        actors = _actors(ray, opts, -(-len(plan.mine) // size), stack) if ray is not None else None
        # the driver loads the model only for the feature set's identity (module order, sha256, tokenizer): on CPU
        loaded = load_checkpoint(ws, cfg.run_id, plan.epochs[0], "cpu", plan.compute)
        info = ensure_feature_set(ws, plan.run, loaded, cfg, plan.max_len, plan.compute, device)
        del loaded
        schema = fstore.feature_schema(info.dim, info.dtype, with_norm=fstore.has_norm_column(ws, info))
        i, n = cfg.shard
        summary = FeaturizeSummary(info.feature_set_id, cfg.run_id, info.lance_table, plan.epochs, f"{i}/{n}")
        owner = meta_leases.lease_owner()
        # workers' Lance temp files are in flight until the driver commits: no cleanup may take them meanwhile
        stack.enter_context(ws.lance.writing())
        _run_epochs(ws, cfg, opts, plan, info, schema, summary, owner, size, t_start, ray, actors, connect_s,
                    private)
    from .folding import refresh_folded_copies
    refresh_folded_copies(ws, info.feature_set_id, progress=cfg.progress)   # folded copies stay beside the vectors
    summary.seconds = time.monotonic() - t_start
    if summary.lance_version is None:
        summary.lance_version = ws.lance.version(info.lance_table)
    summary.engine = "ray"
    return summary


def _connect_checked(ws, opts: RayOptions, plan, stack) -> tuple:
    """(ray, seconds to connect and check, whether the cluster is this driver's private one): joined or started,
    then checked by lessdb.scale.preflight (resources for the workers asked for; every node opens the candidates
    table at the planned version)."""
    from ..scale.preflight import check_cluster

    private = opts.address == "local" and not import_ray().is_initialized()
    t_connect = time.monotonic()
    ray = stack.enter_context(ray_session(opts.address, opts.workers * opts.cpus_per_worker))
    check_cluster(ray, ws.lance.table_uri(CANDIDATES), ws.lance.storage_options, plan.cand_version,
                  workers=opts.workers, cpus_per_worker=opts.cpus_per_worker, gpus_per_worker=opts.gpus_per_worker,
                  address=opts.address)
    return ray, time.monotonic() - t_connect, private


def _run_epochs(ws, cfg, opts, plan, info, schema, summary, owner, size, t_start, ray, actors, connect_s,
                private) -> None:
    from .planning import job_row, todo_ids

    timing = {"plan_seconds": time.monotonic() - t_start - connect_s, "ray_connect_seconds": connect_s}
    # every checkpoint's units in one stream: an actor that finishes its last unit of one checkpoint takes a unit
    # of the next instead of idling at a barrier (2 actors, 6 units per checkpoint: Ray's wall time fell from 674 s
    # to 543 s without it; bench/RESULTS.md "Ray overhead"). Each checkpoint keeps its own job, lease and commits.
    jobs, work = [], []
    for epoch in plan.epochs:
        t_plan = time.monotonic()
        job = job_row(info, cfg, plan, epoch)
        # lease first, so that the plan (and the reconciliation) is never made beside another live driver
        meta_features.start_job(ws, job, owner=owner, engine="ray")
        recovered = reconcile(ws, info, job["job_id"], owner)
        todo = todo_ids(ws, info, epoch, plan.mine)
        summary.already_present += len(plan.mine) - len(todo)
        committer = _Committer(ws, info, job["job_id"], epoch, owner, opts)
        if todo:
            shipment, files = pack_checkpoint(plan.ckpts[epoch])
            shipment["files"] = ray.put(files)   # the nodes fetch it; no worker reads the workspace
            del files
            spec_ref = ray.put(_spec(ws, info, plan, cfg, opts, epoch, schema, shipment, private))
            work += [(spec_ref, committer, f"e{epoch}-u{start // size:05d}", todo[start:start + size])
                     for start in range(0, len(todo), size)]
        jobs.append((epoch, job, recovered, todo, committer))
        timing["plan_seconds"] += time.monotonic() - t_plan
    if work:
        progress = Progress(f"featurize (ray, {opts.workers} workers) checkpoints "
                            f"{','.join(str(e) for e, *_ in jobs)}", total=sum(len(w[3]) for w in work),
                            enabled=None if cfg.progress else False)
        _run_units(ray, actors, work, [committer for *_, committer in jobs], progress)
        progress.close()
    for epoch, job, recovered, todo, committer in jobs:
        _check_unique(ws, info, epoch)
        meta_features.finish_job(ws, job["job_id"])
        summary.examples += committer.written
        summary.excluded += committer.excluded
        summary.bytes_written += committer.bytes
        summary.lance_version = committer.version or summary.lance_version
        summary.jobs.append({"job_id": job["job_id"], "epoch": epoch, "todo": len(todo),
                             "shard_examples": len(plan.mine), "engine": "ray", "commits": committer.n_commits,
                             "recovered_commits": recovered, "nodes": sorted(committer.nodes),
                             "timing": committer.timing})
    summary.timing = {**timing, **{k: sum(j["timing"][k] for j in summary.jobs)
                                   for k in ("worker_seconds", "model_load_seconds", "fragment_write_seconds",
                                             "commit_seconds")}}
