"""`lessdb verify [--repair]`: check a workspace the way fsck checks a disk.

Checks, each against what DuckDB recorded:
- the files: the DuckDB catalogue read through (checksums); every Lance table's manifests and data files at its
  newest version and every version the catalogue records (present, the size its manifest says);
- candidates: rows of ingests never recorded (a kill between the LanceDB write and the DuckDB record), rows
  per ingest as recorded, duplicate keys, the recorded version readable;
- features: every feature key exactly once; every candidate of a complete job stored or excluded; job counts
  equal to the stored rows; jobs marked running whose process is gone;
- runs: running runs whose process is gone, checkpoint files against their recorded sha256, temp checkpoint
  dirs, checkpoints renamed into place but never registered, checkpoint dirs of no run; model weights; each
  checkpoint's η̄ against its checkpoint.json;
- selections: the Lance versions each read still readable and tagged, its members present there, the η̄ it
  weighed checkpoints by, its members against the digest recorded when it was made;
- files: temp files of killed Lance writes, spill files of killed ingests.

`repair=True` fixes what is safe: deletes rows of unrecorded ingests, extra copies of duplicate candidate rows
(keeping the earliest; one recorded Lance delete, storage/candidate_repair.py) and of duplicate feature keys
(keeping the first, which readers use), temp files and dirs of dead writers; recounts job counts; marks dead
running jobs and runs `interrupted`; registers verified landed checkpoints; tags untagged selection versions;
sets η̄ back from checkpoint.json; drops a lost data file's fragment from a feature table's newest version.
It never deletes data anything refers to, and never touches what a live process owns.
"""
from __future__ import annotations

import os
import time
import traceback

from .. import faults
from .file_checks import check_ingest_spills, check_lance_temp_files, check_models, check_runs, check_selections
from .findings import ERROR, INFO, WARNING, Finding, VerifyReport
from .integrity_checks import check_lance_files, check_mean_lr, check_member_digests, check_metadata_file
from .table_checks import check_candidates, check_features

# in order: the files first (so later checks skip what cannot be read), candidates before features (so they read
# repaired tables)
CHECKS = (check_lance_files, check_candidates, check_lance_temp_files, check_ingest_spills, check_features,
          check_runs, check_mean_lr, check_models, check_selections, check_member_digests)

__all__ = ["verify_workspace", "VerifyReport", "Finding", "ERROR", "WARNING", "INFO"]


def verify_workspace(ws, repair: bool = False) -> VerifyReport:
    """Run every check. None of them crashes verify: whatever stops one is a finding of its own."""
    started = time.monotonic()
    report = VerifyReport(str(ws.root), repair)
    if _run(check_metadata_file, ws, report):
        for check in CHECKS:
            _run(check, ws, report)
            if repair:
                faults.point("verify.after_check")
    report.seconds = time.monotonic() - started
    return report


def _run(check, ws, report: VerifyReport):
    from ..storage.damage import damage_of

    try:
        return check(ws, report)
    except Exception as exc:  # noqa: BLE001 - verify reports, it never crashes
        if os.environ.get("LESSDB_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        name = check.__name__.removeprefix("check_").replace("_", " ")
        damaged = damage_of(exc)
        if damaged is not None:
            report.add(ERROR, "files", f"the {name} check stopped: {damaged.what}", ws.lance.location,
                       "see the findings about that table above; restore the file from a backup of the workspace")
        else:
            report.add(ERROR, "verify", f"the {name} check stopped on an unexpected error ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); the rest was checked", str(ws.root),
                       "this is damage verify does not know or a bug in lessdb: rerun with LESSDB_DEBUG=1 and "
                       "include the traceback in a report")
