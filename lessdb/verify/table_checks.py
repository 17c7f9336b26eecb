"""`lessdb verify` checks of the LanceDB tables against what DuckDB recorded: candidates vs ingests, feature
tables vs feature jobs and exclusions. Each check reports into a VerifyReport and, with `repair`, fixes what
is safe: rows of unrecorded ingests, duplicate candidate rows and feature keys, job counts and dead `running`
jobs."""
from __future__ import annotations

import fcntl
import shlex
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from .. import owners
from ..storage import candidate_repair
from ..storage import candidates as cstore
from ..storage import meta_features, meta_pools, meta_runs
from ..storage.lance_tables import CANDIDATES
from .findings import ERROR, INFO, WARNING, VerifyReport

_DELETE_CHUNK = 1000


# -- candidates -----------------------------------------------------------------------------------------------
def check_candidates(ws, report: VerifyReport) -> None:
    where = f"{ws.lance.location}/{CANDIDATES}.lance"
    if not ws.lance.has_table(CANDIDATES):
        report.add(ERROR, "candidates", "the candidates table is missing", where, "`lessdb init` creates it")
        return
    version = cstore.candidates_version(ws)
    if CANDIDATES in report.damaged or (CANDIDATES, version) in report.damaged_versions:
        report.add(INFO, "candidates", "rows not checked: the table cannot be read (see above)", where)
        return
    _check_unrecorded_rows(ws, report, where)
    try:
        table = ws.lance.dataset(CANDIDATES, version).to_table(columns=["key", "ingest_id"])
    except Exception as exc:  # noqa: BLE001 - any failure to read the recorded version is the finding
        report.add(ERROR, "candidates", f"version {version} (the last recorded ingest's) cannot be read: {exc}",
                   where, "restore the workspace from a backup")
        return
    table, version = _check_duplicate_candidates(ws, report, table, version, where)
    report.count("candidate rows", table.num_rows)
    stored = Counter(table.column("ingest_id").to_pylist())
    removed = candidate_repair.removed_per_ingest(ws)   # rows a duplicate repair took from an ingest
    recorded = {r["ingest_id"]: r for r in meta_pools.ingest_rows(ws)}
    report.count("ingests", len(recorded))
    for ingest_id, n in sorted(stored.items()):
        if ingest_id not in recorded:
            report.add(ERROR, "candidates", f"{n} rows of ingest {ingest_id} are in the recorded version {version} "
                       "but no ingest with that id is recorded", where, "re-ingest the file into a new workspace")
    for ingest_id, row in recorded.items():
        want = row["n_added"] - removed.get(ingest_id, 0)
        if row["lance_table"] == CANDIDATES and stored.get(ingest_id, 0) != want:
            severity, fix = _count_fix(ws, row, stored.get(ingest_id, 0), want)
            report.add(severity, "candidates", f"ingest {ingest_id} (pool {row['pool']}) recorded {row['n_added']} new "
                       f"rows" + (f" ({removed[ingest_id]} removed since as duplicates)" if ingest_id in removed
                                  else "") + f"; version {version} holds {stored.get(ingest_id, 0)}", where, fix)


def _check_duplicate_candidates(ws, report: VerifyReport, table: pa.Table, version: int,
                                where: str) -> tuple[pa.Table, int]:
    """Each (pool, id) stored once. Older versions could store a record twice; --repair removes the extra rows
    (keeping the earliest, the one readers use) as one recorded Lance delete. Returns the rows and version to
    check from here on (the repaired ones after a repair)."""
    dup = _duplicate_keys(table)
    if not dup:
        return table, version
    n_extra = table.num_rows - (len(set(table.column("key").to_pylist())))
    finding = report.add(ERROR, "candidates", f"{len(dup)} candidate keys (pool/id) are stored more than once "
                         f"({n_extra} extra rows, e.g. {dup[0]}); readers and the audit views use the earliest "
                         "row of each", where, "`lessdb verify --repair` deletes the extra rows, keeping the "
                         "earliest of each (one recorded Lance delete)", repairable=True)
    if not report.repair:
        return table, version
    done = cstore.repair_duplicates(ws)
    if done is None:      # another process repaired it meanwhile
        finding.repaired = "repaired meanwhile by another process"
    else:
        finding.repaired = (f"deleted {done.n_removed} duplicate rows (repair {done.repair_id}); readers now read "
                            f"candidates version {done.lance_version}")
    version = cstore.candidates_version(ws)
    return ws.lance.dataset(CANDIDATES, version).to_table(columns=["key", "ingest_id"]), version


def _count_fix(ws, row: dict, stored: int, want: int) -> tuple[str, str]:
    """(severity, fix) of an ingest holding `stored` rows where `want` (its recorded rows less those a duplicate
    repair removed) were expected. Re-ingesting its file adds back rows that are gone (their keys are absent) and
    nothing else: offered only while it would add some."""
    if stored > want:
        return ERROR, ("the extra rows repeat candidates already stored (see the duplicate-key finding: `lessdb "
                       "verify --repair` removes them); a re-ingest would add nothing")
    again = meta_pools.later_ingest_of_same_file(ws, row["ingest_id"])
    if again is not None:   # the same content ingested again: every record of the file is in the pool now
        return INFO, (f"nothing to do: the same file was ingested into pool {row['pool']} again as ingest {again}, "
                      "which added back the rows that were missing")
    source = row.get("source") or "FILE"
    pool = shlex.quote(row["pool"])
    if source.startswith("python:"):    # records handed to ws.ingest: lessdb has no file to name
        again = f"ws.ingest(<the same records>, pool={row['pool']!r})"
    elif source.startswith("builtin:"):
        again = f"lessdb ingest --builtin {source.split(':', 1)[1]} --pool {pool}"
    else:   # the input file itself (absolute, or s3://), else the argument as it was given
        again = f"lessdb ingest {shlex.quote(row.get('input_uri') or source)} --pool {pool}"
    return ERROR, (f"{want - stored} of its rows were deleted after it was recorded: ingest the same input "
                   f"into the pool again (`{again}` adds back exactly the missing ones), or restore the workspace "
                   "from a backup")


def _check_unrecorded_rows(ws, report: VerifyReport, where: str) -> None:
    """Rows of ingests DuckDB never recorded. Checked under the `candidates` write lock: an ingest holds it from
    before its Lance write until its record, so what is unrecorded under the lock is an orphan."""
    lock = ws.root / "locks" / "candidates.lock"
    lock.parent.mkdir(exist_ok=True)
    with open(lock, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report.add(INFO, "candidates", "an ingest is running now: rows it has not recorded yet are not orphans; "
                       "the unrecorded-rows check was skipped", where, "run `lessdb verify` again when it finishes")
            return
        orphans = cstore.unrecorded_ingest_ids(ws)
        if not orphans:
            return
        ids = ",".join(str(int(i)) for i in sorted(orphans))
        n_rows = ws.lance.dataset(CANDIDATES).count_rows(filter=f"ingest_id IN ({ids})")
        finding = report.add(ERROR, "candidates", f"{n_rows} rows of ingest(s) {ids} that DuckDB never recorded (an "
                             "ingest killed between its LanceDB write and its record); no reader sees them", where,
                             "`lessdb verify --repair` (or the next write command) deletes them; ingest the file again",
                             repairable=True)
        if report.repair:
            cstore.delete_ingests(ws, orphans)
            finding.repaired = f"deleted {n_rows} rows of ingest(s) {ids}"


def _duplicate_keys(table: pa.Table) -> list[str]:
    counts = table.group_by("key").aggregate([([], "count_all")])
    return counts.filter(pc.greater(counts.column("count_all"), 1)).column("key").to_pylist()


# -- features -------------------------------------------------------------------------------------------------
def check_features(ws, report: VerifyReport) -> None:
    for fs in meta_features.feature_set_rows(ws):
        report.count("feature sets")
        where = f"{ws.lance.location}/{fs['lance_table']}.lance"
        if fs["lance_table"] in report.damaged:
            report.add(INFO, "features", f"feature set {fs['feature_set_id']}: vectors and jobs not checked: its "
                       "table cannot be read (see above)", where)
            continue
        jobs = meta_features.job_rows(ws, fs["feature_set_id"])
        if not ws.lance.has_table(fs["lance_table"]):
            if any(j["n_done"] for j in jobs):
                report.add(ERROR, "features", f"feature set {fs['feature_set_id']} has jobs with vectors done, but "
                           "its table is missing", where, f"`lessdb featurize --run {fs['run_id']}` recomputes them")
            continue
        table = ws.lance.dataset(fs["lance_table"]).to_table(columns=["key", "role", "epoch", "example_id"],
                                                             with_row_id=True)
        report.count("feature vectors", table.num_rows)
        table = _check_duplicate_features(ws, report, fs, table, where)
        present: dict[tuple[str, int], set[str]] = {}
        for role, epoch, eid in zip(table.column("role").to_pylist(), table.column("epoch").to_pylist(),
                                    table.column("example_id").to_pylist()):
            present.setdefault((role, int(epoch)), set()).add(eid)
        _check_jobs(ws, report, fs, jobs, present)


def _check_duplicate_features(ws, report, fs, table: pa.Table, where: str) -> pa.Table:
    """Every feature key exactly once; --repair deletes the later copies (by row id, in one commit per chunk),
    keeping the first in table order, the one every reader already uses."""
    dup = set(_duplicate_keys(table))
    if not dup:
        return table
    keys, rowids = table.column("key").to_pylist(), table.column("_rowid").to_pylist()
    first: dict[str, int] = {}
    extra = []
    for key, rowid in sorted(zip(keys, rowids), key=lambda kr: kr[1]):
        if key in dup:
            if key in first:
                extra.append(rowid)
            else:
                first[key] = rowid
    finding = report.add(ERROR, "features", f"feature set {fs['feature_set_id']}: {len(dup)} keys stored more than "
                         f"once ({len(extra)} extra rows), e.g. {sorted(dup)[0]}", where,
                         "`lessdb verify --repair` deletes the extra copies, keeping the first", repairable=True)
    if not report.repair:
        return table
    with ws.write_lock("features"):
        for start in range(0, len(extra), _DELETE_CHUNK):
            chunk = extra[start:start + _DELETE_CHUNK]
            ws.lance.delete(fs["lance_table"], "_rowid IN (" + ",".join(str(r) for r in chunk) + ")")
    finding.repaired = f"deleted {len(extra)} duplicate rows, kept one per key"
    drop = set(extra)
    keep = [i for i, r in enumerate(rowids) if r not in drop]
    return table.take(pa.array(keep, pa.int64()))


def _check_jobs(ws, report, fs, jobs: list[dict], present: dict[tuple[str, int], set[str]]) -> None:
    fsid = fs["feature_set_id"]
    shard_cache: dict[tuple, list[str]] = {}
    for job in jobs:
        report.count("feature jobs")
        role, epoch = job["role"], int(job["epoch"])
        kind, ident = ((owners.FEATURE_JOB, job["job_id"]) if role == "candidate"
                       else (owners.VALIDATION, f"{fsid}-{epoch}"))
        where = f"feature_jobs {job['job_id']}"
        if owners.is_alive(ws, kind, ident):
            report.add(INFO, "jobs", f"job {job['job_id']} is running now; its counts were not checked", where)
            continue
        if role == "candidate" and (CANDIDATES in report.damaged or
                                    (CANDIDATES, job["candidates_version"]) in report.damaged_versions):
            report.add(INFO, "jobs", f"job {job['job_id']}: counts not checked: the candidates it lists cannot be "
                       "read (see above)", where)
            continue
        status = job["status"]
        if status == "running":
            finding = report.add(WARNING, "jobs", f"job {job['job_id']} is marked running, but no process runs it "
                                 "(killed)", where, _rerun_hint(fs, job) + "; `lessdb verify --repair` marks it interrupted",
                                 repairable=True)
            if report.repair:
                meta_features.finish_job(ws, job["job_id"], status=owners.INTERRUPTED)
                finding.repaired = "marked interrupted"
                status = owners.INTERRUPTED
        stored = present.get((role, epoch), set())
        excluded = set(meta_features.excluded_ids(ws, fsid, role, epoch))
        if role == "candidate":
            mine = _shard_ids(ws, fs, job, shard_cache)
            want = {"n_total": len(mine), "n_done": sum(1 for e in mine if e in stored),
                    "n_excluded": sum(1 for e in mine if e in excluded)}
            missing = [e for e in mine if e not in stored and e not in excluded]
            if status == "complete" and missing:
                report.add(ERROR, "features", f"job {job['job_id']} is complete, but {len(missing)} of its "
                           f"{len(mine)} candidates have neither a vector nor an exclusion at checkpoint {epoch} "
                           f"(e.g. {missing[0]})", where, _rerun_hint(fs, job))
        else:
            want = {"n_total": len(stored) + len(excluded), "n_done": len(stored), "n_excluded": len(excluded)}
        have = {k: job[k] for k in want}
        if have != want:
            finding = report.add(WARNING, "jobs", f"job {job['job_id']} counts {have['n_done']} done, "
                                 f"{have['n_excluded']} excluded of {have['n_total']}; the stored rows say "
                                 f"{want['n_done']}, {want['n_excluded']} of {want['n_total']}", where,
                                 "`lessdb verify --repair` recounts them", repairable=True)
            if report.repair:
                meta_features.finish_job(ws, job["job_id"], status=status, counts=want)
                finding.repaired = "recounted from the stored rows"


def _shard_ids(ws, fs, job: dict, cache: dict) -> list[str]:
    """The job's examples: the run's pool at the job's candidates version, its filter, its hash shard."""
    from ..featurize.planning import shard_of

    key = (job["where_sql"], job["candidates_version"], job["shard_index"], job["shard_count"])
    if key not in cache:
        pool = meta_runs.get_run(ws, fs["run_id"]).get("pool")
        ids = cstore.select_candidate_ids(ws, pool, job["where_sql"], version=job["candidates_version"])
        cache[key] = [e for e in ids if shard_of(e, job["shard_count"]) == job["shard_index"]]
    return cache[key]


def _rerun_hint(fs, job: dict) -> str:
    if job["role"] != "candidate":
        return "the next `lessdb select` on this feature set computes what is missing"
    from ..featurize.config import featurize_command

    command = featurize_command(fs, epochs=[job["epoch"]], shard=(job["shard_index"], job["shard_count"]),
                                where=job["where_sql"])
    return f"`{command}` finishes it"
