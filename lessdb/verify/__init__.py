"""`lessdb verify [--repair]`: check a workspace the way fsck checks a disk.

Checks, each against what DuckDB recorded:
- candidates: rows of ingests never recorded (a kill between the LanceDB write and the DuckDB record), rows
  per ingest as recorded, duplicate keys, the recorded version readable;
- features: every feature key exactly once; every candidate of a complete job stored or excluded; job counts
  equal to the stored rows; jobs marked running whose process is gone;
- runs: running runs whose process is gone, checkpoint files against their recorded sha256, temp checkpoint
  dirs, checkpoints renamed into place but never registered, checkpoint dirs of no run; model weights;
- selections: the Lance versions each read still readable and tagged, its members present there;
- files: temp files of killed Lance writes, spill files of killed ingests.

`repair=True` fixes what is safe: deletes rows of unrecorded ingests, extra copies of duplicate candidate rows
(keeping the earliest; one recorded Lance delete, storage/candidate_repair.py) and of duplicate feature keys
(keeping the first, which readers use), temp files and dirs of dead writers; recounts job counts; marks dead
running jobs and runs `interrupted`; registers verified landed checkpoints; tags untagged selection versions.
It never deletes data anything refers to, and never touches what a live process owns.
"""
from __future__ import annotations

import time

from .file_checks import check_ingest_spills, check_lance_temp_files, check_models, check_runs, check_selections
from .findings import ERROR, INFO, WARNING, Finding, VerifyReport
from .table_checks import check_candidates, check_features

CHECKS = (check_candidates, check_lance_temp_files, check_ingest_spills, check_features, check_runs, check_models,
          check_selections)

__all__ = ["verify_workspace", "VerifyReport", "Finding", "ERROR", "WARNING", "INFO"]


def verify_workspace(ws, repair: bool = False) -> VerifyReport:
    """Run every check (in order: candidates first, so later checks read repaired tables)."""
    started = time.monotonic()
    report = VerifyReport(str(ws.root), repair)
    for check in CHECKS:
        check(ws, report)
    report.seconds = time.monotonic() - started
    return report
