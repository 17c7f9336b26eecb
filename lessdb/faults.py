"""Fault injection for the crash-consistency tests: `LESSDB_FAULT=<point>:<n>` makes the process die, as
abruptly as `kill -9` (os._exit: no finally blocks, no atexit, no flushing), the n-th time (1-based) it
passes the named point. Several specs may be given, comma-separated. Unset (always, outside tests), each
point costs one environment lookup.

Points (where a kill is most likely to leave something half-done):
  ingest.after_lance_write      rows appended to LanceDB, ingest not yet recorded in DuckDB
  featurize.after_lance_write   a batch of vectors stored, its progress not yet recorded
  validation.after_lance_write  validation vectors stored, the job row not yet updated
  train.after_checkpoint        a checkpoint directory renamed into place, not yet registered
  select.before_record          scores computed, the selection not yet recorded
  select.before_tag             the selection recorded, its Lance versions not yet tagged
  fold.after_append             a commit of folded rows stored, the folded copy not yet recorded
  init.after_migration          one schema migration committed, the next ones not yet applied
  init.before_tables            the catalogue migrated, the `candidates` table not yet created
  export.mid_write              half of an export's rows in its temporary file
  export.before_record          the export renamed into place, not yet recorded in `exports`
  verify.after_check            `verify --repair` finished one check's repairs, the next checks not yet run
  repair.before_lance_delete    a duplicate-candidates repair recorded as started, Lance not yet touched
  repair.after_lance_delete     the duplicate rows deleted in Lance, the repair not yet recorded complete
"""
from __future__ import annotations

import os
import sys

ENV = "LESSDB_FAULT"
EXIT_CODE = 137   # what a shell reports for a process killed by SIGKILL
_hits: dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    _hits[name] = _hits.get(name, 0) + 1
    for item in spec.split(","):
        where, _, nth = item.strip().partition(":")
        if where == name and _hits[name] == int(nth or 1):
            sys.stderr.write(f"lessdb: injected fault at {name} (hit {_hits[name]})\n")
            sys.stderr.flush()
            os._exit(EXIT_CODE)
