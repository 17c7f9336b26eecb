"""Crash-consistency campaign: the fault-injection suite (tests/test_faults.py) over several seeds and with more
random-delay kills per test, then the counts it tallied: kills (at injected points and at seeded random
moments), what `lessdb verify` found before repair, duplicate and missing feature keys after the reruns,
vectors and resumed runs compared with uninterrupted runs.

    python -m bench.reliability                          # seeds 12,13,14; 3 random kills per test and seed
    python -m bench.reliability --seeds 12 --rounds 1    # what CI runs (pytest -m faults)

Every kill is of the real CLI in a subprocess (tiny Llama, real LanceDB + DuckDB); a failure names its seed, and
`LESSDB_FAULT_SEED=<seed> LESSDB_FAULT_ROUNDS=<n> pytest -m faults tests/test_faults.py` reproduces it. Prints a
Markdown table for bench/RESULTS.md. The bad-input counts (tried / refused cleanly) come from the table-driven
bad-input test, which is not part of this campaign.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, loadavg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="12,13,14", help="comma-separated LESSDB_FAULT_SEED values")
    ap.add_argument("--rounds", type=int, default=3, help="random-delay kills per test and seed")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    report = Path(tempfile.mkdtemp(prefix="lessdb-reliability-")) / "tally.json"
    failed, started = [], time.monotonic()
    for seed in seeds:
        env = dict(os.environ, LESSDB_FAULT_SEED=str(seed), LESSDB_FAULT_ROUNDS=str(args.rounds),
                   LESSDB_FAULT_REPORT=str(report), OMP_NUM_THREADS="1")
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-m", "faults", "-p", "no:cacheprovider",
                               str(REPO / "tests" / "test_faults.py")], cwd=REPO, env=env, text=True,
                              capture_output=True)
        tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
        print(f"seed {seed}: {tail}", flush=True)
        if proc.returncode != 0:
            failed.append(seed)
            print(proc.stdout[-4000:], file=sys.stderr)
    tally = json.loads(report.read_text()) if report.exists() else {}
    load = loadavg()
    print(f"\nseeds {seeds}, {args.rounds} random kill(s) per test and seed, {time.monotonic() - started:.0f} s, "
          f"load average at the end {' '.join(map(str, load))}; failed seeds: {failed or 'none'}\n")
    print("| what | count |\n|---|---|")
    for what, n in sorted(tally.items()):
        print(f"| {what} | {n:,} |")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
