"""Benchmark: ingest the full bundled ShareGPT pool into a fresh workspace.

Prints records read, candidates added, wall seconds, conversations/s and peak RSS of the process.
Run: python -m bench.ingest [--repeat 2]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from bench.common import loadavg, machine, peak_rss_gb


def run_once() -> dict:
    from lessdb import Workspace
    from lessdb.ingest import ingest_builtin

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.init(os.path.join(tmp, "ws"))
        start = time.perf_counter()
        report = ingest_builtin(ws, "sharegpt", progress=False)
        seconds = time.perf_counter() - start
    return {"records": report.total("n_records"), "added": report.total("n_added"),
            "invalid_skipped": report.total("n_invalid"),
            "duplicates": report.total("n_dup_within") + report.total("n_dup_in_pool"),
            "truncated_tail_chars": report.total("n_truncated_tail"), "seconds": round(seconds, 2),
            "records_per_s": round(report.total("n_records") / seconds, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    runs = [run_once() for _ in range(args.repeat)]
    result = {"machine": machine(), "load_average": loadavg(), "runs": runs,
              "peak_rss_mb": round(peak_rss_gb() * 1024, 1)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
