"""`lessdb verify` checks of files and provenance: runs and their checkpoint files (sha256 as recorded, temp
dirs, landed-but-unregistered epochs, dirs of no run), model weights, the Lance versions selections read
(still readable, tagged), and temp files of killed Lance writes."""
from __future__ import annotations

import shutil
from pathlib import Path

from .. import owners
from ..storage import meta_runs, meta_selections
from ..storage.damage import describe
from ..storage.lance_tables import CANDIDATES
from .findings import ERROR, INFO, WARNING, VerifyReport

TINY_SOURCE = "config:tiny"    # built from code (lessdb.models.tiny), no weights file to hash


# -- runs and checkpoints ----------------------------------------------------------------------------------------
def check_runs(ws, report: VerifyReport) -> None:
    from ..runs.checkpoints import TMP_PREFIX

    runs = meta_runs.list_runs(ws)   # status already says `interrupted` where the owner is gone
    for run in runs:
        report.count("runs")
        run_id, kind = run["run_id"], run["kind"]
        alive = owners.is_alive(ws, owners.RUN, run_id)
        resume = f"`lessdb {kind} --resume --run-id {run_id}` continues it from its last checkpoint"
        if run["status"] == owners.INTERRUPTED:
            stored = _stored_status(ws, run_id)
            if stored == "running":
                finding = report.add(WARNING, "runs", f"{kind} run {run_id} is marked running, but no process runs "
                                     "it (killed)", f"runs {run_id}",
                                     resume + "; `lessdb verify --repair` marks it interrupted", repairable=True)
                if report.repair:
                    meta_runs.set_run_status(ws, run_id, owners.INTERRUPTED)
                    finding.repaired = "marked interrupted"
            else:
                report.add(INFO, "runs", f"{kind} run {run_id} was interrupted", f"runs {run_id}", resume)
        run_dir = ws.checkpoints_dir / run_id
        for ckpt in meta_runs.list_checkpoints(ws, run_id):
            report.count("checkpoints")
            _check_checkpoint_files(report, ckpt)
        if alive or not run_dir.is_dir():
            continue
        for tmp in sorted(run_dir.glob(TMP_PREFIX + "*")):
            finding = report.add(WARNING, "files", "temp checkpoint directory of a write that was killed", str(tmp),
                                 "`lessdb verify --repair` deletes it", repairable=True)
            if report.repair:
                shutil.rmtree(tmp, ignore_errors=True)
                finding.repaired = "deleted"
        _check_unregistered_epochs(ws, report, run, run_dir)
    known = {r["run_id"] for r in runs}
    if ws.checkpoints_dir.is_dir():
        for d in sorted(p for p in ws.checkpoints_dir.iterdir() if p.is_dir() and p.name not in known):
            report.add(WARNING, "files", "checkpoint directory of no recorded run", str(d),
                       f"nothing refers to it: delete it (`rm -r {d}`) if you do not need it")


def _stored_status(ws, run_id: str) -> str:
    return meta_runs.get_run(ws, run_id)["status"]


def _check_checkpoint_files(report: VerifyReport, ckpt) -> None:
    from ..models.loading import sha256_file

    path = Path(ckpt.path)
    if not path.is_dir():
        report.add(ERROR, "checkpoints", f"run {ckpt.run_id} epoch {ckpt.epoch}: the checkpoint directory is missing",
                   str(path), "restore it from a backup, or train a new run (features and selections made from this "
                   "checkpoint cannot be reproduced)")
        return
    for fname, want in (("adapter_model.safetensors", ckpt.adapter_sha256),
                        ("optimizer.safetensors", ckpt.optimizer_sha256)):
        target = path / fname
        if not target.exists():
            report.add(ERROR, "checkpoints", f"run {ckpt.run_id} epoch {ckpt.epoch}: {fname} is missing", str(target),
                       "restore it from a backup, or train a new run (features and selections made from this "
                       "checkpoint cannot be reproduced)")
        elif sha256_file(target) != want:
            report.add(ERROR, "checkpoints", f"run {ckpt.run_id} epoch {ckpt.epoch}: {fname} does not match the "
                       f"sha256 recorded when it was written ({want[:12]}…)", str(target),
                       "restore it from a backup, or train a new run; lessdb refuses to load it")


def _check_unregistered_epochs(ws, report: VerifyReport, run: dict, run_dir: Path) -> None:
    """A checkpoint renamed into place whose registration was killed: complete on disk, unknown to DuckDB."""
    from ..runs.checkpoints import read_checkpoint_meta

    registered = {c.epoch for c in meta_runs.list_checkpoints(ws, run["run_id"])}
    landed = sorted(int(p.name.split("-", 1)[1]) for p in run_dir.glob("epoch-*")
                    if p.name.split("-", 1)[1].isdigit())
    for epoch in (e for e in landed if e not in registered):
        path = run_dir / f"epoch-{epoch}"
        complete = read_checkpoint_meta(path) is not None
        finding = report.add(WARNING, "checkpoints",
                             f"run {run['run_id']} epoch {epoch}: checkpoint on disk but not registered"
                             + ("" if complete else " (and incomplete: its files do not match its checkpoint.json)"),
                             str(path), f"`lessdb {run['kind']} --resume --run-id {run['run_id']}` registers it"
                             if complete else f"delete it (`rm -r {path}`); a resume writes it again",
                             repairable=complete)
        if report.repair and complete:
            from ..runs.lifecycle import register_landed_checkpoints

            if epoch in range(1, register_landed_checkpoints(ws, run["run_id"], max(landed)) + 1):
                finding.repaired = "registered (files verified against their sha256)"


def check_models(ws, report: VerifyReport) -> None:
    from ..models.loading import _dir_weights_sha256

    for model in meta_runs.list_models(ws):
        report.count("models")
        if model["source"] == TINY_SOURCE:
            continue
        path = Path(model["path"])
        try:
            actual = _dir_weights_sha256(path)
        except Exception as exc:  # noqa: BLE001 - missing dir or weights
            report.add(ERROR, "models", f"model {model['name']}: weights cannot be read ({exc})", str(path),
                       "reinstall or restore the model; runs trained on it cannot be resumed or featurized")
            continue
        if actual != model["model_sha256"]:
            report.add(ERROR, "models", f"model {model['name']}: weights hash to {actual[:12]}…, recorded "
                       f"{model['model_sha256'][:12]}…", str(path),
                       "restore the recorded weights; lessdb refuses runs on changed weights")


# -- selections ---------------------------------------------------------------------------------------------------
def check_selections(ws, report: VerifyReport) -> None:
    tags_of: dict[str, dict] = {}
    for sel in meta_selections.list_selections(ws):
        report.count("selections")
        sid = sel["selection_id"]
        readable = {}
        for table, version in (sel["table_versions"] or {}).items():
            where = f"{ws.lance.location}/{table}.lance@{version}"
            if (table, int(version)) in report.damaged_versions:
                continue   # its files' finding names this selection
            try:
                readable[table] = ws.lance.dataset(table, int(version))
            except Exception as exc:  # noqa: BLE001 - a version cleaned up or a table dropped
                report.add(ERROR, "selections", f"selection {sid} read {table} version {version}, which cannot be "
                           f"read any more ({describe(exc)}); it can no longer be replayed", where,
                           "none: re-run the selection to record a new one")
                continue
            if table not in tags_of:
                tags_of[table] = _tags(ws, table)
            if tags_of[table].get(sid) != int(version):
                finding = report.add(WARNING, "selections", f"selection {sid}: {table} version {version} is not "
                                     "tagged, so a cleanup of old versions could delete it", where,
                                     "`lessdb verify --repair` tags it", repairable=True)
                if report.repair:
                    meta_selections.tag_versions(ws, {table: int(version)}, sid)
                    finding.repaired = f"tagged {table} version {version} as {sid}"
        pinned = (CANDIDATES, int((sel["table_versions"] or {}).get(CANDIDATES, -1)))
        if CANDIDATES in readable and pinned not in report.damaged_versions:
            _check_members(ws, report, sel, readable[CANDIDATES])


def _tags(ws, table: str) -> dict[str, int]:
    tags = ws.lance.open(table).tags.list()
    return {name: (info["version"] if isinstance(info, dict) else int(info)) for name, info in tags.items()}


def _check_members(ws, report: VerifyReport, sel: dict, dataset) -> None:
    members = meta_selections.selection_members(ws, sel["selection_id"])
    wanted = set(zip(members.column("pool").to_pylist(), members.column("candidate_id").to_pylist()))
    pools = sorted({p for p, _ in wanted})
    if not pools:
        return
    filt = "pool IN (" + ",".join("'" + p.replace("'", "''") + "'" for p in pools) + ")"
    have = dataset.to_table(columns=["pool", "id"], filter=filt)
    missing = wanted - set(zip(have.column("pool").to_pylist(), have.column("id").to_pylist()))
    if missing:
        report.add(ERROR, "selections", f"selection {sel['selection_id']}: {len(missing)} members are not in the "
                   "candidates version it recorded", f"selection_members {sel['selection_id']}",
                   "none: re-run the selection")


# -- temp files of killed Lance writes --------------------------------------------------------------------------------
def check_lance_temp_files(ws, report: VerifyReport) -> None:
    with ws.lance.temp_files_quiesced() as quiet:
        files = ws.lance.temp_files()
        if not files:
            return
        if not quiet:
            report.add(INFO, "files", f"{len(files)} Lance temp files, but a write is in flight now, so they may be "
                       "its own; not checked", ws.lance.location, "run `lessdb verify` again when writers finish")
            return
        empty = sum(1 for f in files if f.stat().st_size == 0)
        finding = report.add(WARNING, "files", f"{len(files)} temp files of Lance writes that were killed "
                             f"({empty} empty), e.g. {files[0].relative_to(ws.lance.root)}", ws.lance.location,
                             "`lessdb verify --repair` (or the next write command) deletes them", repairable=True)
        if report.repair:
            for f in files:   # still holding the writers' lock: no write can start meanwhile
                f.unlink(missing_ok=True)
            finding.repaired = f"deleted {len(files)} files"


def check_ingest_spills(ws, report: VerifyReport) -> None:
    """Spill files (`tmp/ingest-*.arrow`) of ingests killed while reading: invisible to every reader, but disk
    space. Checked under the `candidates` write lock (an ingest holds it while its spill file exists)."""
    from ..ingest.spill import remove_stale, spill_folder

    folder = spill_folder(ws)
    files = sorted(folder.glob("ingest-*.arrow")) if folder.is_dir() else []
    if not files:
        return
    with ws.try_write_lock("candidates") as held:
        if not held:
            report.add(INFO, "files", f"{len(files)} ingest spill files, but an ingest is running now (they are "
                       "its own); not checked", str(folder), "run `lessdb verify` again when it finishes")
            return
        size = sum(f.stat().st_size for f in files)
        finding = report.add(WARNING, "files", f"{len(files)} spill files of ingests that were killed while reading "
                             f"({size:,} bytes), e.g. {files[0].name}; no reader sees them", str(folder),
                             "`lessdb verify --repair` (or the next ingest) deletes them")
        if report.repair:
            finding.repaired = f"deleted {len(remove_stale(ws))} files"
