"""`lessdb verify` checks of the files themselves (issue 23): the DuckDB catalogue read through (every block checked
against its checksum), every Lance table's manifests and data files against what its manifests say (present,
the recorded size), at its newest version and at every version the catalogue records; η̄ of each checkpoint
against its `checkpoint.json`, and the weights selections used against those η̄.

A table found damaged here is named in `report.damaged` so the later checks, which read rows, skip it instead of
failing on it. `--repair` fixes the one damage that loses nothing that cannot be recomputed: a feature table whose
newest version lists a data file that is gone or cut short gets a new version without that fragment, and
`lessdb featurize` recomputes its vectors. Everything else names the file and what restores it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..storage import meta_integrity, meta_runs, meta_selections
from ..storage.damage import damage_of, describe
from ..storage.lance_tables import CANDIDATES
from .findings import ERROR, INFO, WARNING, VerifyReport

FEATURES_PREFIX = "features_"
BACKUP = "restore it from a backup of the workspace"


# -- the DuckDB catalogue ---------------------------------------------------------------------------------------
def check_metadata_file(ws, report: VerifyReport) -> bool:
    """Read every row of every table once. False (and one finding) when the file cannot be read: every other
    check reads it, so they are skipped."""
    from ..errors import WorkspaceDamaged, WorkspaceError

    try:
        counts = meta_integrity.read_every_table(ws)
    except WorkspaceError as exc:   # damage (storage/damage.py), or no DuckDB file at all
        damaged = exc if isinstance(exc, WorkspaceDamaged) else damage_of(exc)
        why = damaged.what if damaged is not None else str(exc).splitlines()[0]
        report.add(ERROR, "metadata", f"{why}; every other check reads this file, so they were skipped",
                   str(ws.duck.path), f"{BACKUP} (lessdb.duckdb holds the pools, runs, feature sets and selections; "
                   "the Lance tables and checkpoints beside it are not affected); without one, start a new workspace "
                   "and ingest the pools again")
        return False
    report.count("metadata rows", sum(counts.values()))
    return True


# -- Lance tables: manifests and data files ----------------------------------------------------------------------
@dataclass
class _TableFiles:
    """The files a table's checked versions list: path -> (size the manifest records, versions listing it)."""
    files: dict[str, tuple[int | None, set[int]]] = field(default_factory=dict)
    fragments: dict[str, set[int]] = field(default_factory=dict)   # path -> fragment ids (newest version)

    def add(self, path: str, size: int | None, version: int) -> None:
        known = self.files.setdefault(path, (size, set()))
        known[1].add(version)


def check_lance_files(ws, report: VerifyReport) -> None:
    recorded, newest_known = meta_integrity.recorded_versions(ws)
    for table in ws.lance.table_names():
        report.count("tables")
        _check_table(ws, report, table, recorded.get(table, {}), newest_known.get(table))


def _check_table(ws, report: VerifyReport, table: str, recorded: dict[int, list[str]], newest_known) -> None:
    where = f"{ws.lance.location}/{table}.lance"
    try:
        newest = ws.lance.dataset(table)
    except Exception as exc:  # noqa: BLE001 - an unreadable newest manifest is the finding
        report.damaged.add(table)
        report.add(ERROR, "tables", f"table {table}: its newest manifest cannot be read ({_why(exc)}); nothing "
                   "that reads the table's latest version works", _newest_manifest(ws, table) or where,
                   f"{BACKUP}; deleting that manifest goes back to the version before it, losing what it added")
        newest = None
    latest = newest.version if newest is not None else None
    unreadable_newest = _manifest_version(Path(_newest_manifest(ws, table))) if newest is None and \
        _newest_manifest(ws, table) else None
    if latest is not None and newest_known is not None and newest_known > latest and newest_known not in recorded:
        report.add(ERROR, "tables", f"table {table}: the catalogue records writes up to version {newest_known}, but "
                   f"the newest version is {latest}: the manifests of the versions after it were deleted, and what "
                   "they added is gone", f"{where}/_versions",
                   f"{BACKUP}; otherwise the jobs' findings below say what recomputes the lost rows")
    files = _TableFiles()
    versions = sorted(set(recorded) | ({latest} if latest is not None else set()))
    for version in versions:
        who = ", ".join(recorded.get(version, [])[:3]) or "the newest version"
        if latest is not None and version > latest:
            report.damaged_versions.add((table, version))
            report.add(ERROR, "tables", f"table {table}: version {version} (read or written by {who}) is missing: "
                       f"the newest version is {latest}; its manifest was deleted", where,
                       f"{BACKUP} ({table}.lance/_versions); what read that version can no longer be replayed")
            continue
        if version == unreadable_newest:   # the newest manifest, reported above
            report.damaged_versions.add((table, version))
            continue
        try:
            ds = newest if version == latest else ws.lance.dataset(table, version)
        except Exception as exc:  # noqa: BLE001
            report.damaged_versions.add((table, version))
            report.add(ERROR, "tables", f"table {table}: version {version} (read or written by {who}) cannot be "
                       f"opened ({_why(exc)})", where, f"{BACKUP} ({table}.lance/_versions)")
            continue
        for fragment in ds.get_fragments():
            meta = fragment.metadata
            for data in meta.files:
                files.add(f"data/{data.path}", getattr(data, "file_size_bytes", None), version)
                if version == latest:
                    files.fragments.setdefault(f"data/{data.path}", set()).add(meta.id)
            if meta.deletion_file is not None:
                files.add(meta.deletion_file.path(meta.id), None, version)
    report.count("table files", len(files.files))
    _check_files(ws, report, table, files, latest, recorded)


def _check_files(ws, report: VerifyReport, table: str, files: _TableFiles, latest, recorded) -> None:
    if ws.lance.remote:   # no local file to stat: read each version instead (a missing or cut file fails)
        return _read_remote(ws, report, table, files, latest)
    root = Path(ws.lance.uri(table))
    bad = []
    for rel, (size, versions) in sorted(files.files.items()):
        path = root / rel
        if not path.is_file():
            bad.append((rel, "is missing", versions))
        elif size and path.stat().st_size != size:
            bad.append((rel, f"holds {path.stat().st_size:,} bytes, its manifest says {size:,} (cut short or "
                             "overwritten)", versions))
    unrepaired_newest = 0
    for rel, what, versions in bad:
        report.damaged_versions.update((table, v) for v in versions)
        in_newest = latest in versions
        users = sorted({w for v in versions for w in recorded.get(v, [])}, key=lambda w: (not w.startswith("sel"), w))
        said = (f"table {table}: {rel} {what}; it is part of version(s) {_ranges(sorted(versions))}"
                + (" (the newest)" if in_newest else "") + (f", read by {', '.join(users[:3])}"
                                                            + (" …" if len(users) > 3 else "") if users else ""))
        repairable = in_newest and table.startswith(FEATURES_PREFIX) and rel.startswith("data/")
        fix = (f"`lessdb verify --repair` writes a version of {table} without that fragment (its vectors are "
               "lost); then the featurize command this report gives for the job recomputes them. Selections that "
               f"read the old versions cannot be replayed; {BACKUP} to keep them" if repairable else
               f"{BACKUP} ({table}.lance/{rel})" + ("; without one, make those selections again: they can no "
                                                    "longer be replayed" if any(u.startswith("selection") for u in users)
                                                    else ""))
        finding = report.add(ERROR, "tables", said, str(root / rel), fix, repairable=repairable)
        if repairable and report.repair:
            fragments = sorted(files.fragments.get(rel, set()))
            version = _drop_fragments(ws, table, set(fragments))
            finding.repaired = f"wrote version {version} of {table} without fragment(s) {fragments}"
        elif in_newest:
            unrepaired_newest += 1
    if unrepaired_newest:
        report.damaged.add(table)   # the later checks, which read rows of the newest version, skip it


def _drop_fragments(ws, table: str, fragment_ids: set[int]) -> int:
    with ws.write_lock("features"):
        return meta_integrity.drop_fragments(ws, table, fragment_ids, "verify --repair: data file lost")


def _read_remote(ws, report: VerifyReport, table: str, files: _TableFiles, latest) -> None:
    versions = sorted({v for _, vs in files.files.values() for v in vs})
    for version in versions:
        try:
            ds = ws.lance.dataset(table, version)
            ds.to_table(columns=[ds.schema.names[0]])
        except Exception as exc:  # noqa: BLE001
            report.damaged_versions.add((table, version))
            if version == latest:
                report.damaged.add(table)
            report.add(ERROR, "tables", f"table {table}: version {version} cannot be read ({_why(exc)})",
                       f"{ws.lance.location}/{table}.lance", BACKUP)


def _newest_manifest(ws, table: str) -> str | None:
    if ws.lance.remote:
        return None
    manifests = sorted((Path(ws.lance.uri(table)) / "_versions").glob("*.manifest"), key=_manifest_version)
    return str(manifests[-1]) if manifests else None


def _manifest_version(path: Path) -> int:
    n = int(path.stem) if path.stem.isdigit() else 0
    return (2 ** 64 - 1) - n if n > 2 ** 63 else n   # lance's v2 names count down from u64::MAX


def _ranges(values: list[int]) -> str:
    return ", ".join(map(str, values)) if len(values) <= 6 else f"{values[0]}–{values[-1]} ({len(values)})"


def _why(exc: BaseException) -> str:
    return describe(exc) if damage_of(exc) is not None else f"{type(exc).__name__}: {describe(exc)}"


# -- η̄ of each checkpoint, and the weights selections used ------------------------------------------------------
def check_mean_lr(ws, report: VerifyReport) -> None:
    """Each checkpoint's η̄ in the catalogue against its checkpoint.json (written with the checkpoint, with the
    learning rate of every step: its own mean is checked too); then each selection's weights against them."""
    from ..runs.checkpoints import CHECKPOINT_FILE, read_checkpoint_meta

    true_lr: dict[tuple[str, int], float] = {}
    for run in meta_runs.list_runs(ws):
        for ckpt in meta_runs.list_checkpoints(ws, run["run_id"]):
            path = Path(ckpt.path) / CHECKPOINT_FILE
            where = f"checkpoints {ckpt.run_id} epoch {ckpt.epoch}"
            if not path.parent.is_dir():
                continue   # the directory is missing: check_runs says so
            meta = read_checkpoint_meta(Path(ckpt.path), verify=False) if path.is_file() else None
            if meta is None:
                report.add(WARNING, "checkpoints", f"run {ckpt.run_id} epoch {ckpt.epoch}: {CHECKPOINT_FILE} is "
                           f"{'missing' if not path.exists() else 'not readable JSON'}, so its η̄ "
                           f"({ckpt.mean_lr:.6g}) cannot be checked", str(path),
                           f"{BACKUP}; the checkpoint itself is still used as recorded")
                continue
            json_lr, lrs = meta.get("mean_lr"), meta.get("lrs") or []
            consistent = (isinstance(json_lr, (int, float)) and (not lrs or _same(sum(lrs) / len(lrs), json_lr))
                          and (meta.get("sha256") or {}).get("adapter_model.safetensors") == ckpt.adapter_sha256)
            if not consistent:
                report.add(ERROR, "checkpoints", f"run {ckpt.run_id} epoch {ckpt.epoch}: {CHECKPOINT_FILE} "
                           "disagrees with itself or with the checkpoint it describes (η̄ not the mean of its "
                           "learning rates, or another adapter's hash)", str(path), BACKUP)
                continue
            true_lr[(ckpt.run_id, ckpt.epoch)] = float(json_lr)
            if not _same(ckpt.mean_lr, json_lr):
                finding = report.add(ERROR, "checkpoints", f"run {ckpt.run_id} epoch {ckpt.epoch}: η̄ is "
                                     f"{ckpt.mean_lr!r} in the catalogue but {json_lr!r} in {CHECKPOINT_FILE} (the "
                                     "mean learning rate of its steps): selections made now weigh this checkpoint "
                                     "wrongly", where, f"`lessdb verify --repair` sets it back to {json_lr!r}",
                                     repairable=True)
                if report.repair:
                    meta_integrity.set_checkpoint_mean_lr(ws, ckpt.run_id, ckpt.epoch, float(json_lr))
                    finding.repaired = f"set η̄ to {json_lr!r} from {CHECKPOINT_FILE}"
    _check_selection_weights(ws, report, true_lr)


def _check_selection_weights(ws, report: VerifyReport, true_lr: dict[tuple[str, int], float]) -> None:
    for sel in meta_selections.list_selections(ws):
        epochs, weights = sel.get("checkpoints") or [], sel.get("weights") or []
        if not sel.get("run_id") or len(epochs) != len(weights):
            continue
        wrong = [(e, w, true_lr[(sel["run_id"], e)]) for e, w in zip(epochs, weights)
                 if (sel["run_id"], e) in true_lr and not _same(w, true_lr[(sel["run_id"], e)])]
        if wrong:
            e, w, t = wrong[0]
            report.add(ERROR, "selections", f"selection {sel['selection_id']} weighed checkpoint {e} of run "
                       f"{sel['run_id']} by {w!r}, but its η̄ is {t!r} ({len(wrong)} checkpoint(s) off): it was made "
                       "while the catalogue's η̄ was wrong, so its scores and members are off, and its replays repeat "
                       "the same weights", f"selections {sel['selection_id']}",
                       "make the selection again with the same settings (`lessdb show` lists them) once "
                       "`lessdb verify` reports no η̄ error")


def _same(a, b) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)


# -- selection members against the digest recorded at selection time --------------------------------------------
def check_member_digests(ws, report: VerifyReport) -> None:
    """A selection's members, recomputed into their digest, against the digest recorded when it was made (`lessdb
    export` refuses a selection whose members changed). Selections recorded before digests existed have none:
    `--repair` records one for their members as they are now (storage/member_digest.backfill_digest), so a later
    change to them is found."""
    from ..storage.member_digest import backfill_digest, digest_status

    undigested = []
    for sel in meta_selections.list_selections(ws):
        report.count("selection digests")
        status = digest_status(ws, sel["selection_id"])
        if status.state == "mismatch":
            report.add(ERROR, "selections", f"selection {sel['selection_id']}: its members (selection_members) no "
                       f"longer match the digest recorded when it was made ({status.recorded[:12]}…, now "
                       f"{status.actual[:12]}…): rows were changed, added or deleted; `lessdb export` refuses it",
                       f"selection_members {sel['selection_id']}",
                       f"do not use it: `lessdb select --replay {sel['selection_id']}` computes its true members "
                       "again and records them as a new selection")
        elif status.state == "none":
            undigested.append(sel["selection_id"])
    if not undigested:
        return
    finding = report.add(INFO, "selections", f"{len(undigested)} selections recorded before member digests existed "
                         f"(e.g. {undigested[0]}): a later change to their members could not be noticed",
                         "selection_digests", "`lessdb verify --repair` records a digest of their members as they "
                         f"are now (`lessdb select --replay {undigested[0]}` first, to check them)", repairable=True)
    if report.repair:
        n = sum(backfill_digest(ws, sid) is not None for sid in undigested)
        finding.repaired = f"recorded the digest of {n} selections' members (origin 'backfilled')"


__all__ = ["check_metadata_file", "check_lance_files", "check_mean_lr", "check_member_digests", "INFO"]
